//! What staging computed, kept between plans in the cache repository
//! (`<cache>/kcideploy-staged`): merging a change onto a tip, the paths a change touches,
//! whether it conflicts with the base. All are functions of commit ids (and the merge
//! message), so a re-plan reuses the merges of the unchanged prefix of the change set and
//! costs about one merge per new or moved change. A merge is reused only while its commit is
//! in the repository with the same parents; a lost or damaged file only costs the merges again.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::MergeStep;

/// The file's name in the cache repository.
pub const FILE: &str = "kcideploy-staged";

/// Entries beyond what a plan used, past which the file is rewritten with only those.
const SLACK: usize = 2000;

/// One remembered result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Value {
    Merged(String),
    Conflict(Vec<String>),
    Empty,
    Unrelated,
    Paths(Vec<String>),
    ConflictsWithBase(bool),
}

/// One line of the file.
#[derive(Serialize, Deserialize)]
struct Line {
    k: String,
    v: Value,
}

/// The results known, those this plan used, and those it adds.
pub struct Memo {
    path: PathBuf,
    known: HashMap<String, Value>,
    used: HashMap<String, Value>,
    added: Vec<String>,
}

impl Memo {
    /// Read `<cache>/kcideploy-staged` (empty when missing or unreadable; bad lines skipped).
    pub fn load(cache: &Path) -> Memo {
        let path = cache.join(FILE);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let known = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Line>(l).ok())
            .map(|l| (l.k, l.v))
            .collect();
        Memo {
            path,
            known,
            used: HashMap::new(),
            added: Vec::new(),
        }
    }

    fn get(&mut self, key: &str) -> Option<Value> {
        let v = self.known.get(key)?.clone();
        self.used.insert(key.to_string(), v.clone());
        Some(v)
    }

    fn put(&mut self, key: String, value: Value) {
        self.known.insert(key.clone(), value.clone());
        self.used.insert(key.clone(), value);
        self.added.push(key);
    }

    /// [`super::merge_change`], remembered.
    pub fn merge(
        &mut self,
        repo: &Repository,
        ancestry: &mut super::Ancestry,
        tip: Oid,
        head: Oid,
        message: &str,
    ) -> Result<MergeStep, git2::Error> {
        let digest = hex::encode(&sha2::Sha256::digest(message.as_bytes())[..12]);
        let key = format!("merge {tip} {head} {digest}");
        let known = match self.get(&key) {
            Some(Value::Merged(id)) => Oid::from_str(&id)
                .ok()
                .filter(|oid| has_parents(repo, *oid, tip, head))
                .map(MergeStep::Merged),
            Some(Value::Conflict(paths)) => Some(MergeStep::Conflict(paths)),
            Some(Value::Empty) => Some(MergeStep::Empty),
            Some(Value::Unrelated) => Some(MergeStep::Unrelated),
            _ => None,
        };
        if let Some(step) = known {
            return Ok(step);
        }
        let base = ancestry.base();
        let step = super::merge_change(repo, ancestry, tip, head, message, &mut |head| {
            self.change_paths(repo, base, head)
        })?;
        let value = match &step {
            MergeStep::Merged(id) => Value::Merged(id.to_string()),
            MergeStep::Conflict(paths) => Value::Conflict(paths.clone()),
            MergeStep::Empty => Value::Empty,
            MergeStep::Unrelated => Value::Unrelated,
        };
        self.put(key, value);
        Ok(step)
    }

    /// [`super::change_paths`], remembered.
    pub fn change_paths(
        &mut self,
        repo: &Repository,
        base: Oid,
        head: Oid,
    ) -> Result<BTreeSet<String>, git2::Error> {
        let key = format!("paths {base} {head}");
        if let Some(Value::Paths(paths)) = self.get(&key) {
            return Ok(paths.into_iter().collect());
        }
        let paths = super::change_paths(repo, base, head)?;
        self.put(key, Value::Paths(paths.iter().cloned().collect()));
        Ok(paths)
    }

    /// Whether `head` conflicts with `base` alone, remembered. Not when its paths overlap
    /// none the base changed since it forked (with one merge base): no merge needed.
    pub fn conflicts(
        &mut self,
        repo: &Repository,
        ancestry: &mut super::Ancestry,
        head: Oid,
    ) -> Result<bool, git2::Error> {
        let base = ancestry.base();
        let key = format!("base {base} {head}");
        if let Some(Value::ConflictsWithBase(c)) = self.get(&key) {
            return Ok(c);
        }
        let clean = match repo.merge_bases(base, head) {
            Ok(forks) if forks.len() == 1 => {
                let paths = self.change_paths(repo, base, head)?;
                ancestry.untouched_by_base(repo, forks[0], &paths)?
            }
            _ => false,
        };
        let c = !clean && {
            let ours = repo.find_commit(base)?;
            let theirs = repo.find_commit(head)?;
            repo.merge_commits(&ours, &theirs, None)?.has_conflicts()
        };
        self.put(key, Value::ConflictsWithBase(c));
        Ok(c)
    }

    /// Append what this plan added; rewrite the file with only what it used once the rest
    /// outgrows it. Best effort: a file that cannot be written only costs merges later.
    pub fn save(self) {
        let line = |k: &String, v: &Value| {
            serde_json::to_string(&Line {
                k: k.clone(),
                v: v.clone(),
            })
            .ok()
        };
        if self.known.len() > self.used.len() + SLACK {
            let mut text = String::new();
            for (k, v) in &self.used {
                if let Some(l) = line(k, v) {
                    text.push_str(&l);
                    text.push('\n');
                }
            }
            let _ = crate::support::write_atomic(&self.path, text.as_bytes());
            return;
        }
        if self.added.is_empty() {
            return;
        }
        let mut text = String::new();
        for k in &self.added {
            if let Some(l) = self.known.get(k).and_then(|v| line(k, v)) {
                text.push_str(&l);
                text.push('\n');
            }
        }
        // One write in append mode: plans staging at the same time add whole lines.
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = file.write_all(text.as_bytes());
        }
    }
}

/// Whether `id` is a commit of `repo` whose parents are `tip` and `head`.
fn has_parents(repo: &Repository, id: Oid, tip: Oid, head: Oid) -> bool {
    repo.find_commit(id)
        .is_ok_and(|c| c.parent_ids().eq([tip, head]))
}

#[cfg(test)]
mod tests {
    use super::super::scratch;
    use super::super::stage::{StageRequest, StagedRepo, ToMerge, stage};
    use super::*;

    const WHO: (&str, &str) = ("A", "a@example.org");

    /// A base of two files and `n` changes, each editing its own file; change 2 and 3 edit the
    /// same line (3 conflicts with 2).
    fn repo(dir: &Path, n: usize) -> (Oid, Vec<ToMerge>) {
        let repo = Repository::init_bare(dir).expect("init");
        let base = scratch::commit(
            &repo,
            None,
            &[("a", Some("a\n")), ("same", Some("x\n"))],
            WHO,
            1000,
            "base",
        )
        .expect("base");
        let changes = (0..n)
            .map(|i| {
                let file = format!("f{i}");
                let edits: Vec<(&str, Option<String>)> = match i {
                    2 | 3 => vec![("same", Some(format!("{i}\n")))],
                    _ => vec![(file.as_str(), Some(format!("{i}\n")))],
                };
                let head =
                    scratch::commit(&repo, Some(base), &edits, WHO, 2000, "c").expect("commit");
                ToMerge {
                    id: format!("#{i}"),
                    head: head.to_string(),
                    title: format!("change {i}"),
                    files: None,
                }
            })
            .collect();
        (base, changes)
    }

    fn staged(cache: &Path, base: Oid, changes: &[ToMerge]) -> StagedRepo {
        let base = base.to_string();
        stage(&StageRequest {
            cache: cache.to_path_buf(),
            base: &base,
            base_branch: "main",
            changes: changes.to_vec(),
            deployed: None,
        })
        .expect("stage")
    }

    fn lines(cache: &Path) -> usize {
        std::fs::read_to_string(cache.join(FILE))
            .unwrap_or_default()
            .lines()
            .count()
    }

    #[test]
    fn a_replan_with_one_more_change_merges_only_that_one() {
        let dir = tempfile::tempdir().expect("tmp");
        let (base, changes) = repo(dir.path(), 6);
        let first = staged(dir.path(), base, &changes[..5]);
        // 5 merges (one a conflict, with its check against the base), 5 path lists (the
        // conflict's too: a merge reads the change's paths first).
        assert_eq!(lines(dir.path()), 5 + 1 + 5);
        let again = staged(dir.path(), base, &changes[..5]);
        assert_eq!(again, first);
        assert_eq!(lines(dir.path()), 11, "nothing new to remember");
        let more = staged(dir.path(), base, &changes);
        assert_eq!(lines(dir.path()), 13, "one merge and its paths");
        assert_eq!(more.merges[..5], first.merges[..]);
        // The same as staging without anything remembered.
        std::fs::remove_file(dir.path().join(FILE)).expect("rm");
        assert_eq!(staged(dir.path(), base, &changes), more);
    }

    #[test]
    fn a_remembered_merge_that_is_not_in_the_repository_is_merged_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let (base, changes) = repo(dir.path(), 2);
        let right = staged(dir.path(), base, &changes);
        // Every remembered merge now names a commit that does not exist, and a line is junk.
        let text = std::fs::read_to_string(dir.path().join(FILE)).expect("memo");
        let mut damaged = String::from("{not json\n");
        for line in text.lines() {
            let mut l: Line = serde_json::from_str(line).expect("line");
            if let Value::Merged(_) = l.v {
                l.v = Value::Merged("1".repeat(40));
            }
            damaged.push_str(&serde_json::to_string(&l).expect("json"));
            damaged.push('\n');
        }
        std::fs::write(dir.path().join(FILE), damaged).expect("write");
        assert_eq!(staged(dir.path(), base, &changes), right);
    }
}
