//! Staging: merge a repo's change set onto its base into a staging revision, and diff it
//! against the deployed revision. Every commit kcideploy makes while planning is made here;
//! what to merge is decided before (the planner's screening), what it means after (the
//! planner). The result is plain data.

use std::collections::BTreeSet;
use std::path::PathBuf;

use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use super::memo::Memo;
use super::{Ancestry, MergeStep, diff_paths, has_commit};

/// One change to merge, in merge order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToMerge {
    pub id: String,
    pub head: String,
    /// The first line of the merge commit's message body (the PR title).
    pub title: String,
    /// The forge's list of the change's files (github); `None`: diff head against its fork point.
    pub files: Option<Vec<String>>,
}

/// What merging one change gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Merge {
    /// Merged; these are the paths the change touches (against its fork point).
    Merged { paths: Vec<String> },
    /// Conflicts in these paths: with the base itself (`with_base`), or else with what is
    /// merged before it.
    Conflict { paths: Vec<String>, with_base: bool },
    /// Brings nothing the tip does not already have.
    Empty,
    /// Shares no history with the base.
    Unrelated,
}

/// The staging revision against what is deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "basis")]
pub enum DeployedDiff {
    /// Nothing deployed yet.
    Initial,
    /// The deployed revision is not in the cache (force-pushed away).
    Unknown,
    /// Paths that differ between deployed and staging revisions, and those the base moved
    /// since the deployed revision forked from it.
    Deployed {
        changed: BTreeSet<String>,
        base_paths: BTreeSet<String>,
    },
}

/// One repo, staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedRepo {
    /// The staging revision: the base with every merged change.
    pub staging: String,
    /// Each change asked for, in merge order, with what merging it gave.
    pub merges: Vec<(String, Merge)>,
    pub diff: DeployedDiff,
}

/// What to stage in one repo.
#[derive(Debug, Clone)]
pub struct StageRequest<'a> {
    /// The bare cache repository holding base, heads and the deployed revision.
    pub cache: PathBuf,
    pub base: &'a str,
    pub base_branch: &'a str,
    pub changes: Vec<ToMerge>,
    /// The deployed revision from state.
    pub deployed: Option<&'a str>,
}

/// A staging failure: which operation, on what.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct StageError {
    pub context: String,
    #[source]
    pub source: git2::Error,
}

fn ctx(context: impl Into<String>) -> impl FnOnce(git2::Error) -> StageError {
    let context = context.into();
    move |source| StageError { context, source }
}

/// Merge the changes one by one onto the base (a change that does not merge is left out and
/// the next one goes on), then diff the result against the deployed revision. Merge commits
/// are deterministic, so staging the same inputs twice gives the same SHA; the results are
/// remembered in the cache ([`Memo`]), so staging them again reuses them.
pub fn stage(req: &StageRequest<'_>) -> Result<StagedRepo, StageError> {
    super::skip_object_checks();
    let repo = Repository::open_bare(&req.cache)
        .map_err(ctx(format!("cannot open cache {}", req.cache.display())))?;
    let mut memo = Memo::load(&req.cache);
    let base = Oid::from_str(req.base).map_err(ctx("bad base SHA"))?;
    let mut tip = base;
    let mut ancestry = Ancestry::new(base);
    let mut merges = Vec::with_capacity(req.changes.len());
    for change in &req.changes {
        let head =
            Oid::from_str(&change.head).map_err(ctx(format!("bad head SHA of {}", change.id)))?;
        let message = format!(
            "kcideploy: merge {} ({}) into {}\n\n{}\n",
            change.id,
            crate::support::text::short(&change.head),
            req.base_branch,
            change.title
        );
        let merge = match memo
            .merge(&repo, &mut ancestry, tip, head, &message)
            .map_err(ctx(format!("cannot merge {}", change.id)))?
        {
            MergeStep::Merged(commit) => {
                let paths = match &change.files {
                    Some(files) => files.iter().cloned().collect::<BTreeSet<String>>(),
                    None => memo
                        .change_paths(&repo, base, head)
                        .map_err(ctx(format!("cannot diff {}", change.id)))?,
                };
                tip = commit;
                ancestry.merged(head, commit);
                Merge::Merged {
                    paths: paths.into_iter().collect(),
                }
            }
            MergeStep::Conflict(paths) => {
                let with_base = tip != base
                    && memo
                        .conflicts(&repo, &mut ancestry, head)
                        .map_err(ctx(format!("cannot merge {} onto the base", change.id)))?;
                Merge::Conflict {
                    paths,
                    with_base: with_base || tip == base,
                }
            }
            MergeStep::Empty => Merge::Empty,
            MergeStep::Unrelated => Merge::Unrelated,
        };
        merges.push((change.id.clone(), merge));
    }
    memo.save();
    let diff = match req.deployed {
        None => DeployedDiff::Initial,
        Some(sha) if !has_commit(&repo, sha) => DeployedDiff::Unknown,
        Some(sha) => {
            let old = Oid::from_str(sha).map_err(ctx("bad deployed SHA in state"))?;
            let changed = diff_paths(&repo, old, tip)
                .map_err(ctx("cannot diff deployed and staging revisions"))?;
            let base_paths = match repo.merge_base(old, base) {
                Ok(fork) => diff_paths(&repo, fork, base).map_err(ctx("cannot diff the base"))?,
                Err(_) => BTreeSet::new(),
            };
            DeployedDiff::Deployed {
                changed,
                base_paths,
            }
        }
    };
    Ok(StagedRepo {
        staging: tip.to_string(),
        merges,
        diff,
    })
}
