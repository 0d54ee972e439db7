//! Local git operations with git2: merge a change set into a staging revision, tree diffs.
//! No work tree is touched; every object lands in the cache repository.

pub mod ancestry;
pub mod export;
pub mod files;
mod local_refs;
pub mod memo;
pub mod merge;
pub mod remote;
pub mod scratch;
pub mod stage;
pub mod treediff;

use std::collections::BTreeSet;

use git2::{Oid, Repository};

pub use ancestry::{Ancestry, Relation};
pub use export::export_tree;
pub use merge::merge_change;

/// Identity of the merge commits kcideploy makes.
pub const MERGER_NAME: &str = "kcideploy";
pub const MERGER_EMAIL: &str = "kcideploy@kernelci.org";

/// What merging one change onto the current staging tip gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeStep {
    /// A new merge commit: the new staging tip.
    Merged(Oid),
    /// The change conflicts with what is merged so far, in these paths.
    Conflict(Vec<String>),
    /// The change brings nothing the tip does not already have.
    Empty,
    /// The change shares no history with the base.
    Unrelated,
}

/// Turn off libgit2's checks, when writing an object, that every object it names exists
/// (one object database lookup per entry: with the index of a merge written as trees, every
/// file of the repo at every merge, 26% of a staging plan's time in perf), for the whole
/// process. Staging writes only trees and commits made of objects it has just read or
/// written in the cache.
pub fn skip_object_checks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| git2::opts::strict_object_creation(false));
}

/// Paths that differ between two commits' trees (both sides of renames), sorted.
pub fn diff_paths(repo: &Repository, old: Oid, new: Oid) -> Result<BTreeSet<String>, git2::Error> {
    let old_tree = repo.find_commit(old)?.tree()?;
    let new_tree = repo.find_commit(new)?.tree()?;
    let mut paths = BTreeSet::new();
    treediff::diff_trees(repo, Some(&old_tree), Some(&new_tree), "", &mut paths)?;
    Ok(paths)
}

/// Paths a change touches: its head against its merge base with `base`.
pub fn change_paths(
    repo: &Repository,
    base: Oid,
    head: Oid,
) -> Result<BTreeSet<String>, git2::Error> {
    let fork = repo.merge_base(base, head)?;
    diff_paths(repo, fork, head)
}

/// Every path of a commit's tree (files, symlinks and submodules), sorted.
pub fn tree_paths(repo: &Repository, sha: &str) -> Result<Vec<String>, git2::Error> {
    let commit = repo.find_commit(Oid::from_str(sha)?)?;
    let mut paths = Vec::new();
    commit
        .tree()?
        .walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() != Some(git2::ObjectType::Tree) {
                let name = String::from_utf8_lossy(entry.name_bytes());
                paths.push(format!("{dir}{name}"));
            }
            git2::TreeWalkResult::Ok
        })?;
    paths.sort();
    Ok(paths)
}

/// Whether the object database has this commit.
pub fn has_commit(repo: &Repository, sha: &str) -> bool {
    Oid::from_str(sha).is_ok_and(|oid| repo.find_commit(oid).is_ok())
}

/// Exclusive use of a cache repository, released when dropped (or when the process dies).
pub struct CacheGuard {
    _file: std::fs::File,
}

/// Open (or make) the bare cache repository at `path` for exclusive use. Under the OS lock on
/// `<path>.kcideploy-lock` no other kcideploy uses it, so `*.lock` files left inside by a
/// killed process are stale and removed; a cache that does not open is made anew.
pub fn open_cache(path: &std::path::Path) -> Result<(Repository, CacheGuard), String> {
    let mut lock_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    lock_name.push(".kcideploy-lock");
    let lock_path = path.with_file_name(lock_name);
    if let Some(parent) = lock_path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    file.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    remove_stale_locks(path);
    let repo = match Repository::open_bare(path) {
        Ok(r) => r,
        Err(_) => {
            if path.exists() {
                std::fs::remove_dir_all(path).map_err(|e| {
                    format!("cannot clear the broken cache {}: {e}", path.display())
                })?;
            }
            std::fs::create_dir_all(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            Repository::init_bare(path)
                .map_err(|e| format!("cannot make the cache {}: {e}", path.display()))?
        }
    };
    Ok((repo, CacheGuard { _file: file }))
}

fn remove_stale_locks(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "objects") {
                continue;
            }
            remove_stale_locks(&p);
        } else if p.extension().is_some_and(|x| x == "lock") {
            let _ = std::fs::remove_file(&p);
        }
    }
}
