//! Coverage: is every file of a repo part of a component (so a change to it triggers what it
//! should) or left out on purpose by an `ignore:` glob with a reason? Pure: the workspace
//! lists the files of each repo's staging revision.
//!
//! A glob that matches every path (`**`, as in a component that pushes the staging branch
//! on any change) says nothing about any one file, so it does not count: otherwise one such
//! component would cover every file the plan has never heard of.

use std::fmt::Write;

use serde::Serialize;

use super::graph::globset;
use crate::config::{Config, quote};

/// One repo's files against the plan's components and `ignore:` globs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoCoverage {
    pub repo: String,
    /// The revision whose files were checked.
    pub revision: String,
    /// Changes merged into it; 0: the base revision (nothing pending).
    pub merged: usize,
    /// Files in the revision.
    pub files: usize,
    /// Files in at least one component.
    pub in_components: usize,
    /// Files in no component but matched by an `ignore:` glob.
    pub ignored: usize,
    /// Files in no component and matched by no `ignore:` glob.
    pub uncovered: Vec<String>,
    /// Globs that match no file of the revision (a typo, or a file that moved or went away).
    pub unused_globs: Vec<OwnedGlob>,
    /// Component globs that match every path (`**`), which coverage does not count.
    pub catch_all: Vec<OwnedGlob>,
}

/// A glob and what has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnedGlob {
    /// `component `x`` or `ignore`.
    pub owner: String,
    pub glob: String,
}

/// Whether a glob matches every path, saying nothing about any one file.
pub fn matches_everything(pattern: &str) -> bool {
    matches!(pattern, "**" | "**/*" | "**/**")
}

/// Match `files` (the repo's paths) against the components of `repo` and its `ignore:`;
/// globs that match everything do not count.
pub fn repo_coverage(
    config: &Config,
    repo: &str,
    revision: &str,
    merged: usize,
    files: &[String],
) -> RepoCoverage {
    let components: Vec<_> = config
        .file
        .components
        .iter()
        .filter(|(_, c)| c.repo.value == repo)
        .map(|(name, c)| {
            let counted: Vec<_> = c
                .paths
                .iter()
                .filter(|p| !matches_everything(&p.value))
                .cloned()
                .collect();
            let include = globset(&counted);
            (name, counted, include, globset(&c.exclude))
        })
        .collect();
    let ignore_globs: Vec<_> = config
        .file
        .repos
        .get(repo)
        .map(|r| r.ignore.iter().flat_map(|i| i.paths.clone()).collect())
        .unwrap_or_default();
    let ignore = globset(&ignore_globs);
    let mut used: Vec<Vec<bool>> = components
        .iter()
        .map(|(_, paths, _, _)| vec![false; paths.len()])
        .collect();
    let mut ignore_used = vec![false; ignore_globs.len()];
    let mut out = RepoCoverage {
        repo: repo.to_string(),
        revision: revision.to_string(),
        merged,
        files: files.len(),
        in_components: 0,
        ignored: 0,
        uncovered: Vec::new(),
        unused_globs: Vec::new(),
        catch_all: Vec::new(),
    };
    for file in files {
        let mut covered = false;
        for (i, (_, _, include, exclude)) in components.iter().enumerate() {
            let hits = include.matches(file);
            for &h in &hits {
                used[i][h] = true;
            }
            covered |= !hits.is_empty() && !exclude.is_match(file);
        }
        let ignored = ignore.matches(file);
        for &h in &ignored {
            ignore_used[h] = true;
        }
        if covered {
            out.in_components += 1;
        } else if !ignored.is_empty() {
            out.ignored += 1;
        } else {
            out.uncovered.push(file.clone());
        }
    }
    for ((name, paths, _, _), used) in components.iter().zip(&used) {
        for (glob, _) in paths.iter().zip(used).filter(|(_, u)| !**u) {
            out.unused_globs.push(OwnedGlob {
                owner: format!("component {}", quote(name)),
                glob: glob.value.clone(),
            });
        }
    }
    for (name, c) in config
        .file
        .components
        .iter()
        .filter(|(_, c)| c.repo.value == repo)
    {
        for glob in c.paths.iter().filter(|p| matches_everything(&p.value)) {
            out.catch_all.push(OwnedGlob {
                owner: format!("component {}", quote(name)),
                glob: glob.value.clone(),
            });
        }
    }
    for (glob, _) in ignore_globs.iter().zip(&ignore_used).filter(|(_, u)| !**u) {
        out.unused_globs.push(OwnedGlob {
            owner: "ignore".into(),
            glob: glob.value.clone(),
        });
    }
    out
}

/// The report `kcideploy coverage` prints: per repo, its counts and every file not covered;
/// then the globs that match nothing (warnings); then the verdict.
pub fn render(report: &[RepoCoverage]) -> String {
    let mut out = String::new();
    for r in report {
        let revision = if r.merged == 0 {
            "base revision, nothing pending".to_string()
        } else {
            format!("staging revision, {} change(s) merged", r.merged)
        };
        let _ = write!(
            out,
            "{} at {} ({revision}): {} file(s), {} in components, {} ignored",
            r.repo,
            crate::support::text::short(&r.revision),
            r.files,
            r.in_components,
            r.ignored
        );
        if r.uncovered.is_empty() {
            out.push_str(", all covered\n");
            continue;
        }
        let _ = writeln!(out, ", {} not covered:", r.uncovered.len());
        for file in &r.uncovered {
            let _ = writeln!(out, "  {}", crate::support::text::clean(file));
        }
    }
    for r in report {
        for c in &r.catch_all {
            let _ = writeln!(
                out,
                "note: {}: glob {} of {} matches every file, so it covers none",
                r.repo,
                quote(&c.glob),
                c.owner
            );
        }
    }
    for r in report {
        for u in &r.unused_globs {
            let _ = writeln!(
                out,
                "warning: {}: glob {} of {} matches no file",
                r.repo,
                quote(&u.glob),
                u.owner
            );
        }
    }
    let uncovered: usize = report.iter().map(|r| r.uncovered.len()).sum();
    if uncovered == 0 {
        out.push_str("\nEvery file is in a component or ignored with a reason.\n");
    } else {
        let _ = writeln!(
            out,
            "\n{uncovered} file(s) in no component and no `ignore:` glob: add them to a \
             component's `paths`, or to the repo's `ignore:` with a reason."
        );
    }
    out
}
