//! `state adopt` (Terraform's `import`): record what already runs as deployed, running no
//! step. Each repo is adopted at its staging branch's revision on the remote (or one given
//! with `-rev REPO=REVISION`); each step gets the record a successful run at those revisions
//! would have left: the same step digest and resolved settings the planner computes, and
//! the outputs its kind records, read back from the live system ([`live`]). What cannot be
//! read is marked `unknown` in the step's outputs, with the reason; `plan` lists those steps.

pub mod live;

use std::collections::BTreeMap;

use indexmap::IndexMap;
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::config::{Config, Cycle, StepKind};
use crate::forge::ForgeSnapshot;
use crate::planner::params::{self, Params, Vars};
use crate::planner::{DiffBasis, RepoPlan, digest};
use crate::state::{
    ChangeRef, RepoState, RunRecord, RunResult, RunStep, State, StepRecord, StepResult,
};
use crate::support::text::short;
pub use live::ReadBack;

/// The key of a step's outputs that says what of its outcome is unknown, and why.
pub const UNKNOWN: &str = "unknown";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum AdoptError {
    #[error("-rev `{0}`: expected REPO=REVISION (a commit SHA or a branch of the repo)")]
    BadRev(String),
    #[error("-rev names repo `{repo}` twice: {first} and {second}")]
    TwiceRev {
        repo: String,
        first: String,
        second: String,
    },
    #[error("-rev {given}: the plan file has no repo `{repo}`")]
    UnknownRepo { given: String, repo: String },
    #[error(
        "-rev {given}: `{revision}` is neither a commit nor a branch of `{repo}` as fetched into {cache}"
    )]
    #[diagnostic(help(
        "a commit must be on a branch of the repo's remote (adopt fetches them all)"
    ))]
    UnknownRevision {
        given: String,
        repo: String,
        revision: String,
        cache: String,
    },
    #[error("repo `{repo}` has no staging branch `{branch}` on its remote: which revision runs?")]
    #[diagnostic(help("give it: -rev {repo}=SHA (or -rev {repo}={base} when the base runs)"))]
    NoStagingBranch {
        repo: String,
        branch: String,
        base: String,
    },
    #[error("cannot read the cache of repo `{repo}`: {message}")]
    Cache { repo: String, message: String },
}

/// Where an adopted revision comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The staging branch on the remote (its name).
    StagingBranch(String),
    /// `-rev REPO=REVISION`, as given.
    Given(String),
}

/// One repo, adopted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedRepo {
    pub revision: String,
    pub source: Source,
    /// Where the revision forked from the base branch.
    pub base: Option<String>,
    /// The pending changes whose head is in the revision.
    pub included: Vec<ChangeRef>,
}

/// One step, adopted.
#[derive(Debug, Clone, PartialEq)]
pub struct AdoptedStep {
    pub name: String,
    pub kind: StepKind,
    /// The step digest the planner computes at the adopted revisions.
    pub digest: String,
    pub params: Params,
    pub read: ReadBack,
}

/// What `state adopt` records.
#[derive(Debug, Clone, PartialEq)]
pub struct Adoption {
    /// Its id in the history (`adopt-YYYYmmddTHHMMSSZ-xxxxxx`).
    pub id: String,
    pub at: Timestamp,
    pub repos: IndexMap<String, AdoptedRepo>,
    /// In step order.
    pub steps: Vec<AdoptedStep>,
    /// The plan file's digest (as saved plans name it).
    pub plan_file: String,
}

impl Adoption {
    /// Steps whose outcome could not be read back.
    pub fn unknown(&self) -> impl Iterator<Item = &AdoptedStep> {
        self.steps.iter().filter(|s| s.read.unknown.is_some())
    }
}

/// `-rev REPO=REVISION` options, by repo (one per repo).
pub fn parse_revs(given: &[String]) -> Result<BTreeMap<String, String>, AdoptError> {
    let mut out = BTreeMap::new();
    for g in given {
        match g.split_once('=') {
            Some((repo, rev)) if !repo.is_empty() && !rev.is_empty() => {
                if let Some(first) = out.insert(repo.to_string(), rev.to_string()) {
                    return Err(AdoptError::TwiceRev {
                        repo: repo.to_string(),
                        first,
                        second: rev.to_string(),
                    });
                }
            }
            _ => return Err(AdoptError::BadRev(g.clone())),
        }
    }
    Ok(out)
}

/// The revision each repo is adopted at: given, else its staging branch on the remote.
pub fn revisions(
    config: &Config,
    snapshot: &ForgeSnapshot,
    given: &BTreeMap<String, String>,
) -> Result<IndexMap<String, AdoptedRepo>, AdoptError> {
    for (repo, rev) in given {
        if !config.file.repos.contains_key(repo) {
            return Err(AdoptError::UnknownRepo {
                given: format!("{repo}={rev}"),
                repo: repo.clone(),
            });
        }
    }
    let mut out = IndexMap::new();
    for (name, repo_cfg) in &config.file.repos {
        let Some(snap) = snapshot.repos.get(name) else {
            continue;
        };
        let cache_err = |e: git2::Error| AdoptError::Cache {
            repo: name.clone(),
            message: e.message().to_string(),
        };
        let git = git2::Repository::open_bare(&snap.cache).map_err(cache_err)?;
        let (revision, source) = match given.get(name) {
            Some(rev) => (
                resolve(&git, rev).ok_or_else(|| AdoptError::UnknownRevision {
                    given: format!("{name}={rev}"),
                    repo: name.clone(),
                    revision: rev.clone(),
                    cache: snap.cache.display().to_string(),
                })?,
                Source::Given(rev.clone()),
            ),
            None => match &snap.remote_staging {
                Some(sha) => (
                    sha.clone(),
                    Source::StagingBranch(repo_cfg.staging_branch.clone()),
                ),
                None => {
                    return Err(AdoptError::NoStagingBranch {
                        repo: name.clone(),
                        branch: repo_cfg.staging_branch.clone(),
                        base: repo_cfg.base.clone(),
                    });
                }
            },
        };
        let oid = git2::Oid::from_str(&revision).map_err(cache_err)?;
        let contains = |head: &str| {
            git2::Oid::from_str(head)
                .is_ok_and(|h| h == oid || git.graph_descendant_of(oid, h).unwrap_or(false))
        };
        let included = snap
            .changes
            .iter()
            .filter(|c| contains(&c.head))
            .map(|c| ChangeRef {
                id: c.id.clone(),
                head: c.head.clone(),
            })
            .collect();
        let base = git2::Oid::from_str(&snap.base)
            .and_then(|b| git.merge_base(oid, b))
            .ok()
            .map(|o| o.to_string());
        out.insert(
            name.clone(),
            AdoptedRepo {
                revision,
                source,
                base,
                included,
            },
        );
    }
    Ok(out)
}

/// A full commit SHA, or a branch as fetched, in the cache.
fn resolve(git: &git2::Repository, rev: &str) -> Option<String> {
    let branch = format!("{}{rev}", crate::gitops::remote::REMOTE_NAMESPACE);
    if let Ok(oid) = git.refname_to_id(&branch) {
        return Some(oid.to_string());
    }
    let object = git.revparse_single(rev).ok()?;
    object.peel_to_commit().ok().map(|c| c.id().to_string())
}

/// The repos as a plan at the adopted revisions names them (what step digests and
/// `${repos.<name>.sha}` are computed from).
pub fn repo_plans(
    snapshot: &ForgeSnapshot,
    repos: &IndexMap<String, AdoptedRepo>,
) -> IndexMap<String, RepoPlan> {
    repos
        .iter()
        .filter_map(|(name, adopted)| {
            let snap = snapshot.repos.get(name)?;
            Some((
                name.clone(),
                RepoPlan {
                    base_branch: snap.base_branch.clone(),
                    base: snap.base.clone(),
                    staging: adopted.revision.clone(),
                    deployed: Some(adopted.revision.clone()),
                    remote_staging: snap.remote_staging.clone(),
                    diff_basis: DiffBasis::Deployed,
                    included: Vec::new(),
                    excluded: Vec::new(),
                    changed_paths: Vec::new(),
                    attribution: Vec::new(),
                },
            ))
        })
        .collect()
}

/// Read back every step of the plan file at the adopted revisions.
pub async fn read_back(
    config: &Config,
    snapshot: &ForgeSnapshot,
    repos: IndexMap<String, AdoptedRepo>,
    at: Timestamp,
) -> Adoption {
    let plans = repo_plans(snapshot, &repos);
    let vars = || Vars {
        repos: &plans,
        cycle: Cycle::Full,
        plan: &config.file.name,
    };
    let id = format!(
        "adopt-{}-{}",
        at.strftime("%Y%m%dT%H%M%SZ"),
        &crate::support::random_id()[..6]
    );
    let mut reader = live::Reader::new(config, vars(), &snapshot.cache_dir);
    let mut steps = Vec::new();
    for name in crate::planner::graph::step_order(config) {
        let Some(step) = config.file.steps.get(&name) else {
            continue;
        };
        let read = reader.step(&name).await;
        steps.push(AdoptedStep {
            // `always` steps: the adoption's digest is its own, as a run's is (it ran none).
            digest: digest::step_digest(config, &plans, &name, &id),
            params: params::of_step(config, &vars(), &name),
            kind: step.kind.value,
            name,
            read,
        });
    }
    Adoption {
        id,
        at,
        repos,
        steps,
        plan_file: hex::encode(Sha256::digest(config.source.as_bytes())),
    }
}

/// [`revisions`] and [`read_back`], on the one runtime.
pub fn adopt(
    config: &Config,
    snapshot: &ForgeSnapshot,
    given: &BTreeMap<String, String>,
    at: Timestamp,
) -> Result<Adoption, AdoptError> {
    let repos = revisions(config, snapshot, given)?;
    Ok(crate::support::rt::block_on(read_back(
        config, snapshot, repos, at,
    )))
}

/// Write the adoption into `state`: deployed revisions, one record per step, both cycle
/// times (the adopted system counts as a full cycle at adoption time) and a run in the
/// history. What `state` recorded of repos, steps and the current run is replaced; its
/// history, exclusions, approvals and bisections are kept.
pub fn record(state: &mut State, adoption: &Adoption) {
    let at = adoption.at;
    state.repos = adoption
        .repos
        .iter()
        .map(|(name, r)| {
            (
                name.clone(),
                RepoState {
                    deployed: r.revision.clone(),
                    base: r.base.clone(),
                    included: r.included.clone(),
                    deployed_at: Some(at),
                },
            )
        })
        .collect();
    state.steps = adoption
        .steps
        .iter()
        .map(|s| (s.name.clone(), step_record(s, &adoption.id, at)))
        .collect();
    state.cycles.last_full = Some(at);
    state.cycles.last_partial = Some(at);
    if let Some(run) = state.current_run.take() {
        crate::apply::record::push_history(state, run);
    }
    let plans: IndexMap<String, RepoPlan> = adoption
        .repos
        .iter()
        .map(|(n, r)| (n.clone(), history_repo(r)))
        .collect();
    let run = RunRecord {
        id: adoption.id.clone(),
        plan_digest: String::new(),
        inputs_digest: digest::inputs_digest_of(Cycle::Full, &adoption.plan_file, &plans),
        cycle: Cycle::Full,
        start_serial: state.serial,
        started_at: at,
        finished_at: Some(at),
        result: RunResult::Adopted,
        steps: adoption
            .steps
            .iter()
            .map(|s| RunStep {
                name: s.name.clone(),
                result: StepResult::Success,
                attempts: 0,
                duration_ms: 0,
                detail: Some(match &s.read.unknown {
                    Some(why) => format!("adopted; unknown: {why}"),
                    None => format!("adopted: {}", s.read.found),
                }),
                log: None,
            })
            .collect(),
        scope: Default::default(),
        // What was adopted, as a run records what it deployed.
        revisions: adoption
            .repos
            .iter()
            .map(|(n, r)| {
                let revision = crate::state::RunRevision {
                    staging: r.revision.clone(),
                    base: r.base.clone().unwrap_or_default(),
                    included: r.included.clone(),
                };
                (n.clone(), revision)
            })
            .collect(),
        images: Default::default(),
        pins: Default::default(),
    };
    crate::apply::record::push_history(state, run);
}

/// What `inputs_digest_of` reads of a repo: its staging revision.
fn history_repo(r: &AdoptedRepo) -> RepoPlan {
    RepoPlan {
        base_branch: String::new(),
        base: String::new(),
        staging: r.revision.clone(),
        deployed: None,
        remote_staging: None,
        diff_basis: DiffBasis::Deployed,
        included: Vec::new(),
        excluded: Vec::new(),
        changed_paths: Vec::new(),
        attribution: Vec::new(),
    }
}

fn step_record(step: &AdoptedStep, id: &str, at: Timestamp) -> StepRecord {
    let outputs = match (&step.read.outputs, &step.read.unknown) {
        (Some(o), None) => Some(o.clone()),
        (outputs, Some(why)) => {
            let mut o = outputs.clone().unwrap_or_else(|| serde_json::json!({}));
            o[UNKNOWN] = serde_json::Value::String(why.clone());
            Some(o)
        }
        (None, None) => None,
    };
    StepRecord {
        digest: step.digest.clone(),
        result: StepResult::Success,
        run_id: id.to_string(),
        finished_at: Some(at),
        duration_ms: 0,
        outputs,
        params: Some(step.params.clone()),
        params_run: Some(id.to_string()),
    }
}

/// Steps of `state` whose adopted outcome is unknown, with why: the ones `plan` lists.
pub fn unknown_steps<'a>(config: &Config, state: &'a State) -> Vec<(&'a str, &'a str)> {
    state
        .steps
        .iter()
        .filter(|(name, _)| config.file.steps.contains_key(*name))
        .filter_map(|(name, r)| Some((name.as_str(), r.outputs.as_ref()?[UNKNOWN].as_str()?)))
        .collect()
}

/// What `state adopt` will record, for people.
pub fn render(adoption: &Adoption) -> String {
    use std::fmt::Write;
    let mut out = String::from("kcideploy will record these revisions as deployed:\n");
    for (name, r) in &adoption.repos {
        let from = match &r.source {
            Source::StagingBranch(b) => format!("staging branch {b}"),
            Source::Given(rev) => format!("-rev {name}={rev}"),
        };
        let with = if r.included.is_empty() {
            String::new()
        } else {
            let ids: Vec<&str> = r.included.iter().map(|c| c.id.as_str()).collect();
            format!(", with {}", ids.join(", "))
        };
        let _ = writeln!(out, "  {name}: {} ({from}{with})", short(&r.revision));
    }
    let _ = writeln!(
        out,
        "\nand every step as done at these revisions, with what it made as read back now:"
    );
    let width = adoption
        .steps
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for s in &adoption.steps {
        let line = match &s.read.unknown {
            Some(why) if s.read.found.is_empty() => format!("unknown: {why}"),
            Some(why) => format!("{}; unknown: {why}", s.read.found),
            None => s.read.found.clone(),
        };
        let _ = writeln!(out, "  {:<width$}  {:<16} {line}", s.name, s.kind.as_str());
    }
    let unknown = adoption.unknown().count();
    if unknown > 0 {
        let _ = writeln!(
            out,
            "\n{unknown} step(s) marked unknown: `plan` lists them; `apply -replace STEP` runs one again to record what it makes."
        );
    }
    let _ = writeln!(
        out,
        "\nNo step runs. Both cycle times become {} (the next full cycle is due full_cycle_interval after it).",
        adoption.at
    );
    out
}
