//! What the staging tip holds beyond its base, kept up as changes are merged onto it.
//!
//! Merging a change needs the merge base of the tip and the change's head. Asked of git, that
//! walks back through every merge made before (the tip's history is the chain of them), so
//! staging n changes read O(n²) commits. But a change that shares none of its own commits
//! (those not in the base) with what the tip holds beyond the base has the same common
//! ancestors with the tip as with the base: its merge base is found against the base, and
//! the tip's history is not walked. Only changes stacked on other pending changes (or on a
//! staging commit) take git's walk.
//!
//! It also keeps the paths where the tip may differ from the base, so that a change touching
//! none of them (nor any the base changed since the change forked) is merged by updating
//! the tip's tree at its own paths ([`super::merge`]).

use std::collections::{BTreeSet, HashMap, HashSet};

use git2::{Oid, Repository};

/// How a change's head stands to the staging tip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The tip already holds it (it is in the base, or merged before).
    Contained,
    /// None of its own commits is in the tip beyond the base: its merge bases with the tip
    /// are those with the base.
    Independent,
    /// It shares commits with what is merged before it: ask git.
    Entangled,
}

/// The commits of the staging tip that are not in its base.
pub struct Ancestry {
    base: Oid,
    beyond: HashSet<Oid>,
    /// Heads merged whose own commits are not in `beyond` yet: walked together when a
    /// relation is next asked, so a re-plan that reuses every merge walks nothing.
    unwalked: Vec<Oid>,
    /// Paths where `known` may differ from the base (a superset).
    touched: BTreeSet<String>,
    /// The tip `touched` is about; a tip made since is diffed against it when next asked.
    known: Oid,
    /// Per fork point other than the base: the paths the base changed since.
    forks: HashMap<Oid, BTreeSet<String>>,
}

impl Ancestry {
    /// The tip is the base itself.
    pub fn new(base: Oid) -> Ancestry {
        Ancestry {
            base,
            beyond: HashSet::new(),
            unwalked: Vec::new(),
            touched: BTreeSet::new(),
            known: base,
            forks: HashMap::new(),
        }
    }

    pub fn base(&self) -> Oid {
        self.base
    }

    /// The tip became `merge`, the merge of `head` onto it.
    pub fn merged(&mut self, head: Oid, merge: Oid) {
        self.beyond.insert(merge);
        self.unwalked.push(head);
    }

    /// `tip` is the last tip with `paths` changed: no diff needed to know what it touched.
    pub fn changed(&mut self, tip: Oid, paths: BTreeSet<String>) {
        self.touched.extend(paths);
        self.known = tip;
    }

    /// Whether none of `paths` (of a change forked from the base at `fork`), nor a directory
    /// above one or a path below one, is a path the tip or the base changed since `fork`.
    pub fn untouched(
        &mut self,
        repo: &Repository,
        fork: Oid,
        tip: Oid,
        paths: &BTreeSet<String>,
    ) -> Result<bool, git2::Error> {
        if self.known != tip {
            let since = super::diff_paths(repo, self.known, tip)?;
            self.changed(tip, since);
        }
        Ok(!paths.iter().any(|p| overlaps(&self.touched, p))
            && self.untouched_by_base(repo, fork, paths)?)
    }

    /// Whether none of `paths` (of a change forked from the base at `fork`), nor a directory
    /// above one or a path below one, is a path the base changed since `fork`: then the
    /// change merges onto the base alone without conflicts.
    pub fn untouched_by_base(
        &mut self,
        repo: &Repository,
        fork: Oid,
        paths: &BTreeSet<String>,
    ) -> Result<bool, git2::Error> {
        if fork == self.base {
            return Ok(true);
        }
        if !self.forks.contains_key(&fork) {
            let moved = super::diff_paths(repo, fork, self.base)?;
            self.forks.insert(fork, moved);
        }
        let moved = self.forks.get(&fork);
        Ok(!paths.iter().any(|p| moved.is_some_and(|m| overlaps(m, p))))
    }

    /// How `head` stands to the tip.
    pub fn relation(&mut self, repo: &Repository, head: Oid) -> Result<Relation, git2::Error> {
        if !self.unwalked.is_empty() {
            let heads = std::mem::take(&mut self.unwalked);
            let own = self.own(repo, &heads)?;
            self.beyond.extend(own);
        }
        if head == self.base || self.beyond.contains(&head) {
            return Ok(Relation::Contained);
        }
        let own = self.own(repo, &[head])?;
        Ok(if own.is_empty() {
            Relation::Contained
        } else if own.iter().any(|c| self.beyond.contains(c)) {
            Relation::Entangled
        } else {
            Relation::Independent
        })
    }

    /// The commits of `heads` not in the base (`git rev-list heads ^base`).
    fn own(&self, repo: &Repository, heads: &[Oid]) -> Result<Vec<Oid>, git2::Error> {
        let mut walk = repo.revwalk()?;
        for head in heads {
            walk.push(*head)?;
        }
        walk.hide(self.base)?;
        walk.collect()
    }
}

/// Whether `set` has `path`, a directory above it, or a path below it.
fn overlaps(set: &BTreeSet<String>, path: &str) -> bool {
    if set.contains(path) {
        return true;
    }
    let below = format!("{path}/");
    if set
        .range::<str, _>((
            std::ops::Bound::Included(below.as_str()),
            std::ops::Bound::Unbounded,
        ))
        .next()
        .is_some_and(|p| p.starts_with(&below))
    {
        return true;
    }
    path.match_indices('/')
        .any(|(i, _)| set.contains(&path[..i]))
}

#[cfg(test)]
mod tests {
    use super::super::scratch;
    use super::super::stage::{Merge, StageRequest, ToMerge, stage};
    use super::*;

    const WHO: (&str, &str) = ("A", "a@example.org");

    fn commit(repo: &Repository, parent: Oid, path: &str, text: &str) -> Oid {
        scratch::commit(repo, Some(parent), &[(path, Some(text))], WHO, 2000, "c").expect("commit")
    }

    /// A commit with two parents and the tree of the first, plus one edit.
    fn merge(repo: &Repository, one: Oid, two: Oid, path: &str) -> Oid {
        let m = commit(repo, one, path, "merged\n");
        let tree = repo.find_commit(m).and_then(|c| c.tree()).expect("tree");
        let sig = git2::Signature::new(WHO.0, WHO.1, &git2::Time::new(2000, 0)).expect("sig");
        let parents = [
            &repo.find_commit(one).expect("one"),
            &repo.find_commit(two).expect("two"),
        ];
        repo.commit(None, &sig, &sig, "m", &tree, &parents)
            .expect("merge")
    }

    /// Staging as git alone does it: each merge base found from the tip. The outcome of
    /// each head (merged, conflict, empty, unrelated) and the staging tree.
    fn by_git(repo: &Repository, base: Oid, heads: &[Oid]) -> (Vec<&'static str>, Oid) {
        let mut tip = base;
        let mut outcomes = Vec::new();
        for head in heads {
            let ours = repo.find_commit(tip).expect("tip");
            let theirs = repo.find_commit(*head).expect("head");
            let outcome = if tip == *head || repo.graph_descendant_of(tip, *head).expect("walk") {
                "empty"
            } else if repo.merge_base(tip, *head).is_err() {
                "unrelated"
            } else {
                let mut index = repo.merge_commits(&ours, &theirs, None).expect("merge");
                let onto_base = || {
                    let base = repo.find_commit(base).expect("base");
                    let index = repo.merge_commits(&base, &theirs, None).expect("merge");
                    tip == base.id() || index.has_conflicts()
                };
                if index.has_conflicts() {
                    if onto_base() {
                        "base conflict"
                    } else {
                        "conflict"
                    }
                } else {
                    let tree = index.write_tree_to(repo).expect("tree");
                    if tree == ours.tree_id() {
                        "empty"
                    } else {
                        let tree = repo.find_tree(tree).expect("tree");
                        let sig = ours.author();
                        tip = repo
                            .commit(None, &sig, &sig, "m", &tree, &[&ours, &theirs])
                            .expect("commit");
                        "merged"
                    }
                }
            };
            outcomes.push(outcome);
        }
        (outcomes, repo.find_commit(tip).expect("tip").tree_id())
    }

    /// What `stage` gives: each head's outcome and the staging commit.
    fn staged(dir: &std::path::Path, base: Oid, heads: &[Oid]) -> (Vec<&'static str>, Oid) {
        let base = base.to_string();
        let staged = stage(&StageRequest {
            cache: dir.to_path_buf(),
            base: &base,
            base_branch: "main",
            changes: heads
                .iter()
                .enumerate()
                .map(|(i, h)| ToMerge {
                    id: format!("#{i}"),
                    head: h.to_string(),
                    title: String::new(),
                    files: None,
                })
                .collect(),
            deployed: None,
        })
        .expect("stage");
        let outcomes = staged
            .merges
            .iter()
            .map(|(_, m)| match m {
                Merge::Merged { .. } => "merged",
                Merge::Conflict {
                    with_base: true, ..
                } => "base conflict",
                Merge::Conflict { .. } => "conflict",
                Merge::Empty => "empty",
                Merge::Unrelated => "unrelated",
            })
            .collect();
        (outcomes, Oid::from_str(&staged.staging).expect("sha"))
    }

    #[test]
    fn stacked_criss_crossed_and_unrelated_changes_stage_as_git_merges_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let edits = [("a", Some("orig\n")), ("b", Some("orig\n"))];
        let root = scratch::commit(&repo, None, &edits, WHO, 1000, "root").expect("root");
        let (p, q) = (
            commit(&repo, root, "p", "p\n"),
            commit(&repo, root, "q", "q\n"),
        );
        // The base merges p and q; x merges them the other way: two merge bases.
        let base = merge(&repo, p, q, "base");
        let x = commit(&repo, merge(&repo, q, p, "other"), "x", "x\n");
        let a = commit(&repo, base, "a", "A\n");
        // Stacked on a, and changing a's line again: merged onto a's merge, it merges; taken
        // against the base alone, a and s would conflict.
        let s = commit(&repo, a, "a", "S\n");
        let c = commit(&repo, root, "c", "c\n");
        let k = commit(&repo, base, "a", "K\n");
        let t = commit(&repo, k, "t", "t\n");
        let u = scratch::commit(&repo, None, &[("u", Some("u\n"))], WHO, 1000, "u").expect("u");
        let heads = [a, s, a, c, k, t, u, x, p, s];
        let (outcomes, tree) = by_git(&repo, base, &heads);
        assert_eq!(
            outcomes,
            [
                "merged",
                "merged",
                "empty",
                "merged",
                "conflict",
                "conflict",
                "unrelated",
                "merged",
                "empty",
                "empty"
            ]
        );
        let (got, staging) = staged(dir.path(), base, &heads);
        assert_eq!(got, outcomes);
        assert_eq!(repo.find_commit(staging).expect("staging").tree_id(), tree);
    }

    /// Changes merged by updating the tip's tree where they touch nothing merged before (nor
    /// what the base changed since they forked), and by git's merge where they do: the same
    /// trees and outcomes as git's merges of each.
    #[test]
    fn changes_on_paths_nothing_else_touched_merge_as_git_merges_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let long: String = (0..40).map(|i| format!("line {i}\n")).collect();
        let edits = [
            ("a", Some("orig\n")),
            ("d/x", Some("x\n")),
            ("d/y", Some("y\n")),
            ("e/z", Some("z\n")),
            ("m", Some("m\n")),
            ("run.sh", Some("true\n")),
            ("r1", Some(long.as_str())),
            ("k/x", Some("x\n")),
        ];
        let root = scratch::commit(&repo, None, &edits, WHO, 1000, "root").expect("root");
        let base = commit(&repo, root, "a", "base\n");
        let edit = |parent: Oid, edits: &[(&str, Option<&str>)]| {
            scratch::commit(&repo, Some(parent), edits, WHO, 2000, "c").expect("commit")
        };
        let renamed = long.replace("line 0", "line zero");
        let first = edit(base, &[("s", Some("s\n"))]);
        let heads = [
            // The last files of a directory deleted: the directory goes.
            edit(base, &[("d/x", None), ("d/y", None)]),
            edit(base, &[("d/x", Some("again\n"))]),
            // Forked before the base changed `a`: conflicts with the base.
            edit(root, &[("a", Some("old fork\n"))]),
            // Forked before too, elsewhere.
            edit(root, &[("e/z", Some("c4\n"))]),
            edit(base, &[("e/z", Some("c8\n"))]),
            edit(base, &[("f/g", Some("g\n"))]),
            // A file where the tip has a directory, and a file becoming a directory.
            edit(base, &[("f", Some("f\n"))]),
            edit(base, &[("m", None), ("m/n", Some("n\n"))]),
            edit(base, &[("run.sh", Some("false\n"))]),
            // Renamed, then changed at its old name: git follows the rename.
            edit(base, &[("r1", None), ("r2", Some(long.as_str()))]),
            edit(base, &[("r1", Some(renamed.as_str()))]),
            // A directory where the tip has a file; a directory becoming a file.
            edit(base, &[("h", Some("h\n"))]),
            edit(base, &[("h/i", Some("i\n"))]),
            edit(base, &[("k/x", None), ("k", Some("k\n"))]),
            // Stacked (git's merge), then a path the stacked change added.
            first,
            edit(first, &[("t", Some("t\n"))]),
            edit(base, &[("t", Some("other\n"))]),
        ];
        let (outcomes, tree) = by_git(&repo, base, &heads);
        assert_eq!(
            outcomes,
            [
                "merged",
                "conflict",
                "base conflict",
                "merged",
                "conflict",
                "merged",
                "conflict",
                "merged",
                "merged",
                "merged",
                "merged",
                "merged",
                "conflict",
                "merged",
                "merged",
                "merged",
                "conflict"
            ]
        );
        let (got, staging) = staged(dir.path(), base, &heads);
        assert_eq!(got, outcomes);
        assert_eq!(repo.find_commit(staging).expect("staging").tree_id(), tree);
        let file = |path: &str| {
            let tree = repo
                .find_commit(staging)
                .and_then(|c| c.tree())
                .expect("tree");
            let blob = tree.get_path(std::path::Path::new(path)).ok()?.id();
            let blob = repo.find_blob(blob).expect("blob");
            Some(String::from_utf8_lossy(blob.content()).into_owned())
        };
        assert_eq!(file("r2").as_deref(), Some(renamed.as_str()));
        assert_eq!(file("d/x"), None);
        assert_eq!(file("m/n").as_deref(), Some("n\n"));
        assert_eq!(file("k").as_deref(), Some("k\n"));
    }
}
