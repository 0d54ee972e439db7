//! What the staging tip holds beyond its base, kept up as changes are merged onto it.
//!
//! Merging a change needs the merge base of the tip and the change's head. Asked of git, that
//! walks back through every merge made before (the tip's history is the chain of them), so
//! staging n changes read O(n²) commits. But a change that shares none of its own commits
//! (those not in the base) with what the tip holds beyond the base has the same common
//! ancestors with the tip as with the base: its merge base is found against the base, and
//! the tip's history is not walked. Only changes stacked on other pending changes (or on a
//! staging commit) take git's walk.

use std::collections::HashSet;

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
}

impl Ancestry {
    /// The tip is the base itself.
    pub fn new(base: Oid) -> Ancestry {
        Ancestry {
            base,
            beyond: HashSet::new(),
            unwalked: Vec::new(),
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
                if index.has_conflicts() {
                    "conflict"
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
        let base_sha = base.to_string();
        let staged = stage(&StageRequest {
            cache: dir.path().to_path_buf(),
            base: &base_sha,
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
        let got: Vec<&str> = staged
            .merges
            .iter()
            .map(|(_, m)| match m {
                Merge::Merged { .. } => "merged",
                Merge::Conflict { .. } => "conflict",
                Merge::Empty => "empty",
                Merge::Unrelated => "unrelated",
            })
            .collect();
        assert_eq!(got, outcomes);
        let staging = Oid::from_str(&staged.staging).expect("sha");
        assert_eq!(repo.find_commit(staging).expect("staging").tree_id(), tree);
    }
}
