//! Trusted files: GitHub logins, one per line, or in one key of an INI file read the way
//! Python's configparser reads it (kernelci-deploy's `data/staging.ini`: section `[DEFAULT]`,
//! key `users`, one login per indented continuation line).

use std::path::Path;

use crate::config::{TrustedFile, TrustedFormat};

/// The logins of `file` (its path relative to `dir`), each once, in file order. A line that
/// is not a GitHub login is an error naming `path:line`, so a file in the wrong format is
/// never read as a list of words to trust.
pub fn read_trusted_file(dir: &Path, file: &TrustedFile) -> Result<Vec<String>, String> {
    let path = dir.join(&file.path);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read pending.trusted_file {}: {e}", path.display()))?;
    let lines = match file.format {
        TrustedFormat::Lines => plain_lines(&text),
        TrustedFormat::Ini => ini_value(&text, &file.section, &file.key)
            .map_err(|e| format!("pending.trusted_file {}: {e}", path.display()))?,
    };
    let mut logins: Vec<String> = Vec::new();
    for (line, login) in lines {
        if !is_login(&login) {
            let hint = match file.format {
                TrustedFormat::Lines => {
                    "; an INI file needs `trusted_file: { path: ..., format: ini, section: ..., key: ... }`"
                }
                TrustedFormat::Ini => "",
            };
            return Err(format!(
                "{}:{line}: {login:?} is not a GitHub login{hint}",
                path.display()
            ));
        }
        if !logins.iter().any(|l| l.eq_ignore_ascii_case(&login)) {
            logins.push(login);
        }
    }
    Ok(logins)
}

/// A GitHub login: letters, digits and `-` (an app's bot account ends in `[bot]`).
fn is_login(s: &str) -> bool {
    let name = s.strip_suffix("[bot]").unwrap_or(s);
    !name.is_empty()
        && name.len() <= 39
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn is_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with('#') || t.starts_with(';')
}

/// Non-blank, non-comment lines with their 1-based numbers.
fn plain_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !is_comment(l))
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .collect()
}

/// One key's value in an INI file.
struct Entry {
    section: String,
    /// Lower-cased, as configparser's `optionxform` does.
    key: String,
    indent: usize,
    /// The value's lines (the first one after the delimiter, then continuation lines).
    lines: Vec<(usize, String)>,
}

/// The lines of `key`'s value in `section` (or in `DEFAULT` when `section` lacks it), with
/// configparser's rules: `[section]` headers, `key = value` or `key: value` (the first
/// delimiter), keys case-insensitive, full-line `#`/`;` comments, and continuation lines
/// indented deeper than their key. Blank lines are left out.
fn ini_value(text: &str, section: &str, key: &str) -> Result<Vec<(usize, String)>, String> {
    let entries = ini_entries(text)?;
    let key = key.to_ascii_lowercase();
    let find = |s: &str| {
        entries
            .iter()
            .rev()
            .find(|e| e.section == s && e.key == key)
    };
    let entry = find(section)
        .or_else(|| find("DEFAULT"))
        .ok_or_else(|| format!("no key `{key}` in section [{section}] (nor in [DEFAULT])"))?;
    Ok(entry
        .lines
        .iter()
        .filter(|(_, l)| !l.is_empty())
        .cloned()
        .collect())
}

fn ini_entries(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut section: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.trim().is_empty() || is_comment(raw) {
            continue;
        }
        let indent = raw.len() - raw.trim_start().len();
        let line = raw.trim();
        // A continuation line: deeper than the key it follows, in the same section.
        if let Some(last) = entries.last_mut()
            && Some(&last.section) == section.as_ref()
            && indent > last.indent
        {
            last.lines.push((n, line.to_string()));
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_string());
            continue;
        }
        let Some(current) = &section else {
            return Err(format!("line {n}: a key before any [section]"));
        };
        let Some(at) = line.find(['=', ':']) else {
            return Err(format!(
                "line {n}: {line:?} is neither a [section] nor key = value"
            ));
        };
        let value = line[at + 1..].trim();
        entries.push(Entry {
            section: current.clone(),
            key: line[..at].trim().to_ascii_lowercase(),
            indent,
            lines: vec![(n, value.to_string())],
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(format: TrustedFormat, section: &str, key: &str) -> TrustedFile {
        TrustedFile {
            path: "t".into(),
            format,
            section: section.into(),
            key: key.into(),
        }
    }

    fn read(text: &str, f: &TrustedFile) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("t"), text).expect("write");
        read_trusted_file(dir.path(), f)
    }

    const INI: &str = "[DEFAULT]\nbranch: staging.kernelci.org\nnamespace: kernelci\nusers:\n    alice\n    # a comment inside the value\n    Bob\n\n    carol-x\n    alice\n\n[kernelci-core]\n[other]\nUsers = dave\n    erin\n";

    #[test]
    fn ini_reads_the_key_and_its_continuation_lines_only() {
        let got = read(INI, &file(TrustedFormat::Ini, "DEFAULT", "users")).expect("reads");
        assert_eq!(
            got,
            ["alice", "Bob", "carol-x"],
            "no branch, namespace, users"
        );
        let core = read(INI, &file(TrustedFormat::Ini, "kernelci-core", "users")).expect("ok");
        assert_eq!(core, ["alice", "Bob", "carol-x"], "DEFAULT is the fallback");
        let other = read(INI, &file(TrustedFormat::Ini, "other", "USERS")).expect("ok");
        assert_eq!(
            other,
            ["dave", "erin"],
            "a section's own key wins; keys ignore case"
        );
    }

    #[test]
    fn ini_errors_name_what_is_wrong() {
        let missing = read(INI, &file(TrustedFormat::Ini, "DEFAULT", "owners")).unwrap_err();
        assert!(
            missing.contains("no key `owners` in section [DEFAULT]"),
            "{missing}"
        );
        let not_login = read(INI, &file(TrustedFormat::Ini, "DEFAULT", "branch")).unwrap_err();
        assert!(
            not_login.ends_with("t:2: \"staging.kernelci.org\" is not a GitHub login"),
            "{not_login}"
        );
        let orphan = read("users = a\n", &file(TrustedFormat::Ini, "DEFAULT", "users"));
        assert!(
            orphan
                .unwrap_err()
                .contains("line 1: a key before any [section]")
        );
    }

    #[test]
    fn lines_refuse_an_ini_file() {
        let lines = file(TrustedFormat::Lines, "DEFAULT", "users");
        assert_eq!(
            read("# who\nalice\n  bob  \n; old\nrenovate[bot]\n", &lines).expect("ok"),
            ["alice", "bob", "renovate[bot]"]
        );
        let e = read(INI, &lines).unwrap_err();
        assert!(
            e.contains("t:1: \"[DEFAULT]\" is not a GitHub login; an INI file needs"),
            "{e}"
        );
    }
}
