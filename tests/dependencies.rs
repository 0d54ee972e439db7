//! The dependency policy (issue #25): every declared crate is used, no OpenSSL, and every
//! crate present in two versions is an accepted, documented duplicate (deny.toml, in
//! cargo-deny's format), and every crate's licence is one deny.toml allows. Read from
//! Cargo.toml, Cargo.lock, the sources and `cargo metadata --offline`: no tool to install.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `name = ...` keys of a `[section]` of Cargo.toml.
fn section_keys(toml: &str, section: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut inside = false;
    for line in toml.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == section;
            continue;
        }
        if inside && let Some((key, _)) = line.split_once('=') {
            keys.push(key.trim().to_string());
        }
    }
    keys
}

/// Every `.rs` file's text under `dirs`.
fn sources(dirs: &[&str]) -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    let mut out = String::new();
    for d in dirs {
        walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join(d), &mut out);
    }
    out
}

fn used(crate_name: &str, code: &str) -> bool {
    let ident = crate_name.replace('-', "_");
    [
        format!("{ident}::"),
        format!("use {ident}"),
        format!("{ident}!"),
    ]
    .iter()
    .any(|p| code.contains(p.as_str()))
}

#[test]
fn every_declared_dependency_is_used() {
    let toml = read("Cargo.toml");
    let lib = sources(&["src"]);
    let all = sources(&["src", "tests", "benches"]);
    let mut unused: Vec<String> = section_keys(&toml, "[dependencies]")
        .into_iter()
        .filter(|d| !used(d, &lib))
        .collect();
    unused.extend(
        section_keys(&toml, "[dev-dependencies]")
            .into_iter()
            .filter(|d| !used(d, &all))
            .map(|d| format!("{d} (dev)")),
    );
    assert!(unused.is_empty(), "declared but unused: {unused:?}");
}

/// (name, version) of every package in Cargo.lock.
fn locked() -> Vec<(String, String)> {
    let lock = read("Cargo.lock");
    let mut out = Vec::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            out.push((n, v.trim_matches('"').to_string()));
        }
    }
    out
}

/// `{ name = "x", version = "y" ... }` entries of deny.toml's `skip` (or `deny`) list.
fn deny_entries(list: &str) -> BTreeSet<(String, Option<String>)> {
    let deny = read("deny.toml");
    let start = deny
        .find(&format!("{list} = ["))
        .unwrap_or_else(|| panic!("deny.toml has {list}"));
    let end = start + deny[start..].find("\n]").expect("list end");
    let field = |entry: &str, key: &str| {
        let i = entry.find(&format!("{key} = \""))? + key.len() + 4;
        Some(entry[i..].split('"').next()?.to_string())
    };
    deny[start..end]
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| Some((field(l, "name")?, field(l, "version"))))
        .collect()
}

#[test]
fn no_openssl_and_only_documented_duplicates() {
    let packages = locked();
    assert!(packages.len() > 100, "read Cargo.lock");
    let banned: Vec<&(String, String)> = packages
        .iter()
        .filter(|(n, _)| deny_entries("deny").iter().any(|(b, _)| b == n))
        .collect();
    assert!(banned.is_empty(), "banned crates in Cargo.lock: {banned:?}");
    let mut versions: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (n, v) in &packages {
        versions.entry(n).or_default().push(v);
    }
    let skip = deny_entries("skip");
    let mut undocumented = Vec::new();
    for (name, vs) in versions.iter().filter(|(_, vs)| vs.len() > 1) {
        // All but one version of a duplicated crate must be listed with its reason.
        let listed = vs
            .iter()
            .filter(|v| skip.contains(&(name.to_string(), Some(v.to_string()))))
            .count();
        if listed + 1 < vs.len() {
            undocumented.push(format!("{name} {vs:?}"));
        }
    }
    assert!(
        undocumented.is_empty(),
        "duplicate versions not documented in deny.toml: {undocumented:?}"
    );
    // And no stale entries: each skipped version is still in the lock file.
    let stale: Vec<_> = skip
        .iter()
        .filter(|(n, v)| {
            !packages
                .iter()
                .any(|(pn, pv)| pn == n && Some(pv) == v.as_ref())
        })
        .collect();
    assert!(
        stale.is_empty(),
        "deny.toml skips versions no longer locked: {stale:?}"
    );
}

/// The quoted strings of deny.toml's `[licenses] allow` list.
fn allowed_licences() -> BTreeSet<String> {
    let deny = read("deny.toml");
    let start = deny
        .find("\nallow = [")
        .expect("deny.toml has [licenses] allow");
    let end = start + deny[start..].find("\n]").expect("list end");
    deny[start..end]
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next())
        .map(str::to_string)
        .collect()
}

/// Whether an SPDX expression (`A OR (B AND C)`, `A WITH E`, old-style `A/B`) is satisfied
/// by the allowed licences: `OR` needs one side, `AND` both.
fn licence_ok(expr: &str, allowed: &BTreeSet<String>) -> bool {
    let spaced = expr
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace('/', " OR ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut pos = 0;
    let ok = or_expr(&tokens, &mut pos, allowed);
    ok && pos == tokens.len()
}

fn or_expr(t: &[&str], pos: &mut usize, allowed: &BTreeSet<String>) -> bool {
    let mut ok = and_expr(t, pos, allowed);
    while t.get(*pos) == Some(&"OR") {
        *pos += 1;
        ok |= and_expr(t, pos, allowed);
    }
    ok
}

fn and_expr(t: &[&str], pos: &mut usize, allowed: &BTreeSet<String>) -> bool {
    let mut ok = licence(t, pos, allowed);
    while t.get(*pos) == Some(&"AND") {
        *pos += 1;
        ok &= licence(t, pos, allowed);
    }
    ok
}

fn licence(t: &[&str], pos: &mut usize, allowed: &BTreeSet<String>) -> bool {
    let Some(first) = t.get(*pos) else {
        return false;
    };
    *pos += 1;
    if *first == "(" {
        let ok = or_expr(t, pos, allowed);
        *pos += usize::from(t.get(*pos) == Some(&")"));
        return ok;
    }
    let mut id = first.to_string();
    if t.get(*pos) == Some(&"WITH") {
        id = format!("{id} WITH {}", t.get(*pos + 1).unwrap_or(&""));
        *pos += 2;
    }
    allowed.contains(&id)
}

#[test]
fn the_licence_rule_reads_spdx_expressions() {
    let allowed: BTreeSet<String> = ["MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception"]
        .map(String::from)
        .into();
    for good in [
        "MIT",
        "MIT/Apache-2.0",
        "GPL-3.0 OR MIT",
        "(GPL-3.0 OR MIT) AND Apache-2.0",
        "Apache-2.0 WITH LLVM-exception OR GPL-2.0",
    ] {
        assert!(licence_ok(good, &allowed), "{good}");
    }
    for bad in [
        "GPL-3.0",
        "MIT AND GPL-3.0",
        "(MIT OR Apache-2.0) AND LGPL-2.1",
        "MIT (",
    ] {
        assert!(!licence_ok(bad, &allowed), "{bad}");
    }
}

#[test]
fn every_locked_crate_has_an_allowed_licence() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let allowed = allowed_licences();
    let mut refused = Vec::new();
    let mut checked = 0;
    for p in meta["packages"].as_array().expect("packages") {
        if p["source"].is_null() {
            continue; // this crate
        }
        checked += 1;
        let licence = p["license"].as_str().unwrap_or("");
        if !licence_ok(licence, &allowed) {
            refused.push(format!("{} {}: {licence:?}", p["name"], p["version"]));
        }
    }
    assert!(checked > 100, "read the dependency graph");
    assert!(
        refused.is_empty(),
        "crates whose licence deny.toml does not allow: {refused:?}"
    );
}
