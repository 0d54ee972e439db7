//! Merging one change onto the staging tip.
//!
//! Most changes touch paths that nothing merged before them touched (nor the base since the
//! change forked from it). Then the merge is the tip with the change's files: the tree is
//! updated at those paths only, and only the trees above them are written, where a
//! three-way merge of the whole trees and the index written back as trees cost two passes
//! over every file of the repo per change. Any overlap goes git's way: `merge_trees`
//! against the one merge base, or `merge_commits` (recursive) when the head is stacked on
//! other changes or has two merge bases.

use std::collections::BTreeSet;
use std::path::Path;

use git2::build::TreeUpdateBuilder;
use git2::{Commit, FileMode, Index, Oid, Repository, Signature, Time, Tree};

use super::{Ancestry, MERGER_EMAIL, MERGER_NAME, MergeStep, Relation};

/// The paths a change touches against its fork point with the base (`diff fork head`).
pub type PathsOf<'a> = &'a mut dyn FnMut(Oid) -> Result<BTreeSet<String>, git2::Error>;

/// Merge `head` onto `tip`, whose commits and paths beyond the base `ancestry` knows;
/// `paths_of(head)` gives the paths the change touches. The merge commit is deterministic:
/// fixed identity, time of the newer parent, so planning the same inputs twice gives the
/// same staging SHA.
pub fn merge_change(
    repo: &Repository,
    ancestry: &mut Ancestry,
    tip: Oid,
    head: Oid,
    message: &str,
    paths_of: PathsOf<'_>,
) -> Result<MergeStep, git2::Error> {
    if tip == head {
        return Ok(MergeStep::Empty);
    }
    let ours = repo.find_commit(tip)?;
    let theirs = repo.find_commit(head)?;
    let merged = match ancestry.relation(repo, head)? {
        Relation::Contained => return Ok(MergeStep::Empty),
        Relation::Independent => match repo.merge_bases(ancestry.base(), head) {
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(MergeStep::Unrelated),
            Err(e) => return Err(e),
            // One merge base, the base's with the head: what git would find from the tip.
            Ok(bases) if bases.len() == 1 => {
                let fork = bases[0];
                let paths = paths_of(head)?;
                let fast = if ancestry.untouched(repo, fork, tip, &paths)? {
                    updated(repo, &ours.tree()?, &theirs.tree()?, &paths)?
                } else {
                    None
                };
                match fast {
                    Some(tree) => {
                        let step = commit(repo, &ours, &theirs, tree, message)?;
                        if let MergeStep::Merged(id) = step {
                            ancestry.changed(id, paths);
                        }
                        return Ok(step);
                    }
                    None => {
                        let ancestor = repo.find_commit(fork)?.tree()?;
                        Some(repo.merge_trees(&ancestor, &ours.tree()?, &theirs.tree()?, None)?)
                    }
                }
            }
            // Criss-cross: git's recursive merge below.
            Ok(_) => None,
        },
        Relation::Entangled => None,
    };
    let index = match merged {
        Some(index) => index,
        None => {
            if repo.graph_descendant_of(tip, head)? {
                return Ok(MergeStep::Empty);
            }
            if repo.merge_base(tip, head).is_err() {
                return Ok(MergeStep::Unrelated);
            }
            repo.merge_commits(&ours, &theirs, None)?
        }
    };
    from_index(repo, index, &ours, &theirs, message)
}

/// The tip's tree with `theirs`' entries at `paths` (removed where `theirs` has none); only
/// the trees above them are written. `None` when a path is a directory of another (a file
/// becoming a directory or back) or an entry's mode is not one a tree update takes: git's
/// merge then.
fn updated(
    repo: &Repository,
    ours: &Tree<'_>,
    theirs: &Tree<'_>,
    paths: &BTreeSet<String>,
) -> Result<Option<Oid>, git2::Error> {
    let mut update = TreeUpdateBuilder::new();
    for path in paths {
        if paths
            .range(format!("{path}/")..)
            .next()
            .is_some_and(|p| p.starts_with(&format!("{path}/")))
        {
            return Ok(None);
        }
        match theirs.get_path(Path::new(path)) {
            Ok(entry) => {
                let mode = match entry.filemode() {
                    0o100644 => FileMode::Blob,
                    0o100755 => FileMode::BlobExecutable,
                    0o120000 => FileMode::Link,
                    0o160000 => FileMode::Commit,
                    _ => return Ok(None),
                };
                update.upsert(path, entry.id(), mode);
            }
            Err(e) if e.code() == git2::ErrorCode::NotFound => {
                update.remove(path);
            }
            Err(e) => return Err(e),
        }
    }
    update.create_updated(repo, ours).map(Some)
}

/// The merge commit of a merged index: its conflicts, or nothing new, or the commit.
fn from_index(
    repo: &Repository,
    mut index: Index,
    ours: &Commit<'_>,
    theirs: &Commit<'_>,
    message: &str,
) -> Result<MergeStep, git2::Error> {
    if index.has_conflicts() {
        let mut paths = BTreeSet::new();
        for conflict in index.conflicts()? {
            let conflict = conflict?;
            for entry in [conflict.ancestor, conflict.our, conflict.their]
                .into_iter()
                .flatten()
            {
                paths.insert(String::from_utf8_lossy(&entry.path).into_owned());
            }
        }
        return Ok(MergeStep::Conflict(paths.into_iter().collect()));
    }
    let tree = index.write_tree_to(repo)?;
    commit(repo, ours, theirs, tree, message)
}

/// The merge commit of `tree` (nothing when it is the tip's own tree).
fn commit(
    repo: &Repository,
    ours: &Commit<'_>,
    theirs: &Commit<'_>,
    tree: Oid,
    message: &str,
) -> Result<MergeStep, git2::Error> {
    if tree == ours.tree_id() {
        return Ok(MergeStep::Empty);
    }
    let tree = repo.find_tree(tree)?;
    let when = ours.time().seconds().max(theirs.time().seconds());
    let sig = Signature::new(MERGER_NAME, MERGER_EMAIL, &Time::new(when, 0))?;
    let commit = repo.commit(None, &sig, &sig, message, &tree, &[ours, theirs])?;
    Ok(MergeStep::Merged(commit))
}
