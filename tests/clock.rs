//! Guards against date bombs: a fixture date that the real clock judges (for example a PR's
//! `updated_at` against `pending.max_age`) turns a green suite red on the day it expires, or
//! makes a test pass without checking anything. Fixture dates are made relative to the test
//! clock (`common::NOW`) and binaries get that clock with `--at`; this test fails when an
//! absolute date in the test sources or fixtures would expire within a year.

use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};

/// Every text file under `dir` that tests read as input (snapshots are outputs, not inputs).
fn inputs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read tests/").flatten() {
        let path = entry.path();
        if path.is_dir() {
            // Snapshots are outputs; compat fixtures are only parsed, never planned against.
            if path
                .file_name()
                .is_some_and(|n| n != "snapshots" && n != "compat")
            {
                inputs(&path, out);
            }
        } else if path.extension().is_some_and(|e| {
            ["rs", "json", "yaml", "yml", "ini", "toml"]
                .iter()
                .any(|x| e == *x)
        }) {
            out.push(path);
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS` followed by `Z` or an offset, anywhere in `text`.
fn timestamps(text: &str) -> Vec<(usize, Timestamp)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let shape = b"dddd-dd-ddTdd:dd:dd";
    let mut i = 0;
    while i + shape.len() <= bytes.len() {
        let matches = shape.iter().enumerate().all(|(k, s)| {
            let b = bytes[i + k];
            if *s == b'd' {
                b.is_ascii_digit()
            } else {
                b == *s
            }
        });
        if matches {
            let end = text[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || ":-+.".contains(c)))
                .map_or(text.len(), |n| i + n);
            if let Ok(ts) = text[i..end].parse::<Timestamp>() {
                let line = text[..i].matches('\n').count() + 1;
                found.push((line, ts));
            }
            i = end;
        } else {
            i += 1;
        }
    }
    found
}

/// The longest `max_age:` any test plan declares (days), at least 30 days.
fn longest_max_age(files: &[(PathBuf, String)]) -> SignedDuration {
    let mut days = 30i64;
    for (_, text) in files {
        for rest in text.split("max_age:").skip(1) {
            let value: String = rest
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = value.parse::<i64>()
                && rest.trim_start()[value.len()..].starts_with('d')
            {
                days = days.max(n);
            }
        }
    }
    SignedDuration::from_hours(24 * days)
}

#[test]
fn no_fixture_date_expires_within_a_year() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut paths = Vec::new();
    inputs(&root, &mut paths);
    let files: Vec<(PathBuf, String)> = paths
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
        .collect();
    assert!(files.len() > 20, "found the test sources and fixtures");
    let max_age = longest_max_age(&files);
    let now = Timestamp::now();
    let horizon = now + SignedDuration::from_hours(24 * 365);
    let mut bombs = Vec::new();
    for (path, text) in &files {
        for (line, date) in timestamps(text) {
            // Fresh today and stale within a year: the suite changes its verdict on that day.
            let expires = date + max_age;
            if expires > now - max_age && expires <= horizon {
                bombs.push(format!(
                    "{}:{line}: {date} (judged with max_age up to {}d, expires {expires})",
                    path.strip_prefix(&root).unwrap_or(path).display(),
                    max_age.as_hours() / 24,
                ));
            }
        }
    }
    assert!(
        bombs.is_empty(),
        "absolute dates near expiry; make them relative to common::NOW and pass --at:\n{}",
        bombs.join("\n")
    );
}

#[test]
fn the_scanner_finds_dates_and_flags_a_bomb() {
    let now = Timestamp::now();
    let soon = now + SignedDuration::from_hours(24);
    let text = format!("a\nupdated_at: \"{soon}\",\nold: 2019-05-15T15:20:33Z\n");
    let found = timestamps(&text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, 2);
    assert_eq!(
        found[1].1,
        "2019-05-15T15:20:33Z".parse::<Timestamp>().expect("ts")
    );
}
