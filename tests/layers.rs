//! The shape of src/: each top-level module is one layer and imports only from layers below
//! it (read from every `crate::` path in its files), so there are no import cycles between
//! top-level modules. README "Architecture" explains the layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. A module may import from modules of a lower rank, never from a higher one;
/// modules of the same rank may not import each other.
const LAYERS: &[(&str, u32)] = &[
    ("support", 0),
    ("exit", 0),
    ("config", 1),
    ("state", 2),
    ("gitops", 2),
    ("kernelci", 2),
    ("forge", 3),
    ("policy", 4),
    ("planner", 5),
    ("workspace", 6),
    ("apply", 7),
    ("notify", 8),
    ("blame", 9),
    ("deploy", 10),
    ("server", 11),
    ("cli", 12),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/apply/kinds/x.rs` → `apply`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// Every `crate::NAME` in code (comments skipped).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().last();
            rest = &rest[i + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `kcideploy_crate::` and the like
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // module → imported module → files importing it
    let mut edges: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read");
        let entry = edges.entry(module.clone()).or_default();
        for target in crate_paths(&text) {
            if target != module {
                entry.entry(target).or_default().push(
                    file.strip_prefix(&src)
                        .unwrap_or(&file)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    edges
}

#[test]
fn every_module_imports_only_from_layers_below_it() {
    let ranks: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, targets) in graph() {
        let Some(&rank) = ranks.get(module.as_str()) else {
            wrong.push(format!(
                "src/{module}: not in a layer (add it to LAYERS and the README)"
            ));
            continue;
        };
        for (target, files) in targets {
            match ranks.get(target.as_str()) {
                Some(&t) if t < rank => {}
                Some(&t) => wrong.push(format!(
                    "{module} (layer {rank}) imports {target} (layer {t}) in {}",
                    files.join(", ")
                )),
                None => wrong.push(format!("{module} imports unknown crate::{target}")),
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_imports_and_skips_comments() {
    let text = "use crate::apply::x;\n// crate::server in a comment\nlet a = crate::forge::y(); let b = my_crate::z;\n";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["apply", "forge"]);
}

const MAX_FILE_LINES: usize = 600;

#[test]
fn no_source_file_is_over_600_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n > MAX_FILE_LINES).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn only_main_makes_a_tokio_runtime() {
    // One runtime for the process (support::rt); test modules may make their own.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut makers = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        if code.contains("runtime::Builder") && !f.ends_with("support/rt.rs") {
            makers.push(f.display().to_string());
        }
    }
    assert!(
        makers.is_empty(),
        "runtimes made outside support::rt: {makers:?}"
    );
}
