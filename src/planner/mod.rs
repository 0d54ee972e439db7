//! Planning: a pure function (config, forge snapshot, staged revisions, state, now) → [`Plan`].
//! No git, no network, no clock, no file system: the workspace fetches and stages first
//! (screening here decides what it merges: [`screen_repo`]), then asks for the plan.

pub mod changes;
pub mod coverage;
pub mod digest;
pub mod explain;
pub mod graph;
pub mod params;
mod paramtext;

pub mod render;
pub mod scope;
pub mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use indexmap::IndexMap;
use jiff::Timestamp;
use sha2::{Digest, Sha256};

pub use crate::policy::CycleRequest;
pub use types::*;

use crate::config::{Config, RepoConfig};
use crate::forge::{ForgeSnapshot, PendingChange, RepoSnapshot};
use crate::gitops::stage::{DeployedDiff, Merge, StagedRepo, ToMerge};
use crate::state::{RepoState, RunRevision, RunScope, State};

/// Everything a plan is made from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInputs<'a> {
    pub config: &'a Config,
    pub snapshot: &'a ForgeSnapshot,
    /// Per repo: the staging revision made from [`screen_repo`]'s changes, and its diff.
    pub staged: &'a IndexMap<String, StagedRepo>,
    pub state: Option<&'a State>,
    /// Steps whose recorded outputs drifted (`plan -refresh`): they run again.
    pub drift: &'a BTreeMap<String, String>,
    pub cycle: CycleRequest,
    /// "Now" for the policy and for `max_age`.
    pub now: Timestamp,
    /// The plan file as the saved plan names it (absolute).
    pub plan_file: &'a str,
    /// `-target`, `-replace`, rollback ([`scope`]).
    pub scope: &'a RunScope,
    /// Rollback: per repo, the revision to deploy instead of staging pending changes.
    pub pins: &'a BTreeMap<String, RunRevision>,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanError {
    #[error("repo `{repo}` is in the plan file but not in the forge snapshot")]
    MissingRepo { repo: String },
    #[error("repo `{repo}` was not staged (or staged with other changes than planning screens in)")]
    Unstaged { repo: String },
}

/// A pending change after screening: to merge, or left out before merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screened<'a> {
    Merge(&'a PendingChange),
    Out(Excluded),
}

/// Screen a repo's pending changes, in forge order: trust (a maintainer's approval at the
/// head overrides `untrusted`), skip list and label, draft, base, age, blamed heads, and the
/// PR's own CI (`pending.require_checks`, then `ci_covers`).
pub fn screen_repo<'a>(
    config: &Config,
    name: &str,
    snap: &'a RepoSnapshot,
    state: Option<&State>,
    now: Timestamp,
) -> Vec<Screened<'a>> {
    let Some(repo_cfg) = config.file.repos.get(name) else {
        return Vec::new();
    };
    snap.changes
        .iter()
        .map(
            |change| match screen_one(name, repo_cfg, snap, state, now, change) {
                Screened::Merge(change) => ci_gate(config, name, repo_cfg, change),
                out => out,
            },
        )
        .collect()
}

/// A change that passed the other rules, through `pending.require_checks` and `ci_covers`.
fn ci_gate<'a>(
    config: &Config,
    name: &str,
    repo_cfg: &RepoConfig,
    change: &'a PendingChange,
) -> Screened<'a> {
    let Some(required) = &repo_cfg.pending.require_checks else {
        return Screened::Merge(change);
    };
    if let Some((reason, detail)) = changes::gate(required, change.checks.as_deref()) {
        return Screened::Out(left_out(change, reason, detail, Vec::new()));
    }
    match changes::covered_by_ci(config, name, change) {
        Some(components) => Screened::Out(left_out(
            change,
            ExclusionReason::CoveredByCi,
            format!(
                "covered by CI, not deployed: its checks passed and it touches only `ci_covers` \
                 components ({})",
                components.join(", ")
            ),
            Vec::new(),
        )),
        None => Screened::Merge(change),
    }
}

fn screen_one<'a>(
    name: &str,
    repo_cfg: &RepoConfig,
    snap: &'a RepoSnapshot,
    state: Option<&State>,
    now: Timestamp,
    change: &'a PendingChange,
) -> Screened<'a> {
    let targets = (repo_cfg.base.as_str(), repo_cfg.staging_branch.as_str());
    let out = |reason, detail: String| Screened::Out(left_out(change, reason, detail, Vec::new()));
    let approved = state.is_some_and(|s| {
        s.approvals
            .iter()
            .any(|a| a.repo == name && a.change == change.id && a.head == change.head)
    });
    match changes::screen(
        &repo_cfg.pending,
        snap.trusted.as_deref(),
        targets,
        change,
        now,
    ) {
        Some((ExclusionReason::Untrusted, _)) if approved => {}
        Some((reason, detail)) => return out(reason, detail),
        None => {}
    }
    // Blamed at this head: left out until a new push (a new head re-admits it).
    let blamed = state.and_then(|s| {
        s.exclusions
            .iter()
            .find(|e| e.repo == name && e.change == change.id && e.head == change.head)
    });
    match blamed {
        Some(e) => out(
            ExclusionReason::Blamed,
            format!(
                "broke step `{}` in run {} (exclusion {}; a new push or `kcideploy exclusions clear {}` re-admits it)",
                e.step, e.run_id, e.id, e.id
            ),
        ),
        None => Screened::Merge(change),
    }
}

/// What the workspace merges for a repo: the changes screening lets through, in order.
pub fn to_merge(screened: &[Screened<'_>]) -> Vec<ToMerge> {
    screened
        .iter()
        .filter_map(|s| match s {
            Screened::Merge(c) => Some(ToMerge {
                id: c.id.clone(),
                head: c.head.clone(),
                title: c.title.clone(),
                files: c.files.clone(),
            }),
            Screened::Out(_) => None,
        })
        .collect()
}

pub(crate) fn left_out(
    change: &PendingChange,
    reason: ExclusionReason,
    detail: String,
    paths: Vec<String>,
) -> Excluded {
    Excluded {
        id: change.id.clone(),
        head: change.head.clone(),
        author: change.author.clone(),
        reason,
        detail,
        paths,
    }
}

/// Compute the plan.
pub fn plan(inputs: &PlanInputs<'_>) -> Result<Plan, PlanError> {
    let PlanInputs {
        config,
        snapshot,
        staged,
        state,
        drift,
        cycle,
        now,
        plan_file,
        scope: run_scope,
        pins,
    } = *inputs;
    let times = state.map(|s| s.cycles.clone()).unwrap_or_default();
    let decision = crate::policy::decide(cycle, &config.file.policy, &times, now);
    let mut repos = IndexMap::new();
    for name in config.file.repos.keys() {
        let snap = snapshot
            .repos
            .get(name)
            .ok_or_else(|| PlanError::MissingRepo { repo: name.clone() })?;
        let staged_repo = staged
            .get(name)
            .ok_or_else(|| PlanError::Unstaged { repo: name.clone() })?;
        let rollback_of = run_scope.pinned_by();
        let screened = scope::screen(config, name, snap, state, now, pins, rollback_of);
        let deployed = state.and_then(|s| s.repos.get(name));
        let mut repo_plan = plan_repo(name, snap, &screened, staged_repo, deployed)?;
        if let Some(pin) = pins.get(name) {
            scope::pin_repo(&mut repo_plan, pin);
        }
        repos.insert(name.clone(), repo_plan);
    }
    let components = graph::affected_components(config, &repos);
    let mut steps = graph::plan_steps(
        config,
        &components,
        decision.cycle,
        drift,
        &run_scope.replace,
    );
    let fingerprint = fingerprint(config, snapshot, state, &repos);
    if let Some(state) = state {
        skip_done_before(
            config,
            state,
            &repos,
            decision.cycle,
            &fingerprint,
            &mut steps,
        );
    }
    scope::restrict(&mut steps, &run_scope.targets);
    let vars = params::Vars {
        repos: &repos,
        cycle: decision.cycle,
        plan: &config.file.name,
    };
    resolve_params(config, &vars, state, &mut steps);
    let removed_steps = state
        .map(|s| {
            s.steps
                .keys()
                .filter(|n| !config.file.steps.contains_key(*n))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let summary = Summary {
        run: steps.iter().filter(|s| s.action == Action::Run).count(),
        skip: steps.iter().filter(|s| s.action == Action::Skip).count(),
        held_for_full: steps
            .iter()
            .filter(|s| s.because.first() == Some(&StepReason::FullCycleOnly))
            .count(),
        done_before: steps.iter().filter(|s| s.is_done_before()).count(),
        untargeted: steps.iter().filter(|s| s.is_untargeted()).count(),
        included: repos.values().map(|r| r.included.len()).sum(),
        excluded: repos.values().map(|r| r.excluded.len()).sum(),
    };
    Ok(Plan {
        format_version: PLAN_FORMAT_VERSION.to_string(),
        name: config.file.name.clone(),
        plan_file: plan_file.to_string(),
        cache_dir: snapshot.cache_dir.display().to_string(),
        planned_at: now,
        cycle: decision.cycle,
        cycle_decision: decision,
        repos,
        components,
        steps,
        summary,
        file_diffs: Vec::new(),
        removed_steps,
        scope: run_scope.clone(),
        warnings: scope::warnings(run_scope),
        fingerprint,
        content_digest: None,
    })
}

/// Each step's resolved settings; for a step that runs, what differs from its last success.
fn resolve_params(
    config: &Config,
    vars: &params::Vars<'_>,
    state: Option<&State>,
    steps: &mut [StepPlan],
) {
    for step in steps.iter_mut() {
        step.params = params::of_step(config, vars, &step.name);
        if step.action != Action::Run {
            continue;
        }
        let last = state
            .and_then(|s| s.steps.get(&step.name))
            .and_then(|r| r.params.as_ref().map(|p| (r, p)));
        if let Some((record, old)) = last {
            step.compared_with = Some(record.params_run.clone().unwrap_or_default());
            step.changes = params::changes(old, &step.params);
        }
    }
}

/// Triggered steps that state records as finished with the same inputs (in the run apply
/// would resume, for `always` steps) are not repeated, unless what they made drifted: apply
/// skips exactly these, so the plan says so.
fn skip_done_before(
    config: &Config,
    state: &State,
    repos: &IndexMap<String, RepoPlan>,
    cycle: crate::config::Cycle,
    fingerprint: &Fingerprint,
    steps: &mut [StepPlan],
) {
    let inputs = digest::inputs_digest_of(cycle, &fingerprint.plan_file, repos);
    let resumed = state
        .current_run
        .as_ref()
        .filter(|r| r.inputs_digest == inputs && r.result != crate::state::RunResult::Success)
        .map(|r| r.id.as_str())
        .unwrap_or("");
    for step in steps.iter_mut().filter(|s| s.action == Action::Run) {
        if step.is_forced() {
            continue;
        }
        let Some(record) = state.steps.get(&step.name) else {
            continue;
        };
        if record.result == crate::state::StepResult::Success
            && record.digest == digest::step_digest(config, repos, &step.name, resumed)
        {
            step.action = Action::Skip;
            step.because.insert(
                0,
                StepReason::DoneBefore {
                    run_id: record.run_id.clone(),
                },
            );
        }
    }
}

/// A repo's part of the plan: screening and merge results in forge order, changed paths
/// attributed to the changes that touched them.
fn plan_repo(
    name: &str,
    snap: &RepoSnapshot,
    screened: &[Screened<'_>],
    staged: &StagedRepo,
    deployed: Option<&RepoState>,
) -> Result<RepoPlan, PlanError> {
    let unstaged = || PlanError::Unstaged {
        repo: name.to_string(),
    };
    let mut merges = staged.merges.iter();
    let mut included: Vec<Included> = Vec::new();
    let mut excluded = Vec::new();
    for item in screened {
        let change = match item {
            Screened::Out(e) => {
                excluded.push(e.clone());
                continue;
            }
            Screened::Merge(change) => *change,
        };
        let (id, merge) = merges.next().ok_or_else(unstaged)?;
        if *id != change.id {
            return Err(unstaged());
        }
        let out = |reason, detail, paths| left_out(change, reason, detail, paths);
        match merge {
            Merge::Merged { paths } => included.push(Included {
                id: change.id.clone(),
                head: change.head.clone(),
                author: change.author.clone(),
                title: change.title.clone(),
                paths: paths.clone(),
            }),
            Merge::Conflict { paths, with_base } => {
                let detail = conflict_detail(&snap.base_branch, &included, paths, *with_base);
                excluded.push(out(ExclusionReason::Conflict, detail, paths.clone()));
            }
            Merge::Empty => excluded.push(out(
                ExclusionReason::Empty,
                format!(
                    "nothing beyond {} and the changes merged before it",
                    snap.base_branch
                ),
                Vec::new(),
            )),
            Merge::Unrelated => excluded.push(out(
                ExclusionReason::Conflict,
                format!("shares no history with {}", snap.base_branch),
                Vec::new(),
            )),
        }
    }
    if merges.next().is_some() {
        return Err(unstaged());
    }
    let (diff_basis, attribution) = match &staged.diff {
        DeployedDiff::Initial => (DiffBasis::Initial, Vec::new()),
        DeployedDiff::Unknown => (DiffBasis::UnknownDeployed, Vec::new()),
        DeployedDiff::Deployed {
            changed,
            base_paths,
        } => {
            let before: BTreeMap<&str, &str> = deployed
                .map(|d| {
                    d.included
                        .iter()
                        .map(|c| (c.id.as_str(), c.head.as_str()))
                        .collect()
                })
                .unwrap_or_default();
            (
                DiffBasis::Deployed,
                attribute(changed, &included, base_paths, &before),
            )
        }
    };
    Ok(RepoPlan {
        base_branch: snap.base_branch.clone(),
        base: snap.base.clone(),
        staging: staged.staging.clone(),
        deployed: deployed.map(|d| d.deployed.clone()),
        remote_staging: snap.remote_staging.clone(),
        diff_basis,
        included,
        excluded,
        changed_paths: attribution.iter().map(|c| c.path.clone()).collect(),
        attribution,
    })
}

/// Say what a change conflicts with: the base itself, or the included changes that touch
/// the conflicting paths (all merged before it when none touches them by its own list).
fn conflict_detail(base: &str, included: &[Included], paths: &[String], with_base: bool) -> String {
    let files = paths.join(", ");
    if with_base || included.is_empty() {
        return format!("conflicts with the base {base} in {files}");
    }
    let touching: Vec<&str> = included
        .iter()
        .filter(|i| i.paths.iter().any(|p| paths.contains(p)))
        .map(|i| i.id.as_str())
        .collect();
    let ids = if touching.is_empty() {
        included.iter().map(|i| i.id.as_str()).collect()
    } else {
        touching
    };
    format!(
        "conflicts with {} merged before it in {files}",
        ids.join(", ")
    )
}

/// Attribute each changed path: to the included changes that are new or moved since the
/// deploy; failing that, to the base; failing that, to changes deployed before (their merge
/// with a new base may differ); failing that, to `removed` (a deployed change left out).
fn attribute(
    changed: &BTreeSet<String>,
    included: &[Included],
    base_paths: &BTreeSet<String>,
    deployed_before: &BTreeMap<&str, &str>,
) -> Vec<ChangedPath> {
    changed
        .iter()
        .map(|path| {
            let touching = |new: bool| -> Vec<String> {
                included
                    .iter()
                    .filter(|c| {
                        (deployed_before.get(c.id.as_str()) != Some(&c.head.as_str())) == new
                    })
                    .filter(|c| c.paths.binary_search(path).is_ok())
                    .map(|c| c.id.clone())
                    .collect()
            };
            let mut changes = touching(true);
            if changes.is_empty() && base_paths.contains(path) {
                changes.push("base".to_string());
            }
            if changes.is_empty() {
                changes = touching(false);
            }
            if changes.is_empty() {
                changes.push("removed".to_string());
            }
            ChangedPath {
                path: path.clone(),
                changes,
            }
        })
        .collect()
}

fn fingerprint(
    config: &Config,
    snapshot: &ForgeSnapshot,
    state: Option<&State>,
    repos: &IndexMap<String, RepoPlan>,
) -> Fingerprint {
    let mut fp = Fingerprint {
        plan_file: hex::encode(Sha256::digest(config.source.as_bytes())),
        state_serial: state.map(|s| s.serial).unwrap_or(0),
        state_lineage: state.map(|s| s.lineage.clone()),
        repos: snapshot
            .repos
            .iter()
            .map(|(name, snap)| {
                (
                    name.clone(),
                    RepoFingerprint {
                        base: snap.base.clone(),
                        heads: snap
                            .changes
                            .iter()
                            .map(|c| (c.id.clone(), c.head.clone()))
                            .collect(),
                        staging: repos
                            .get(name)
                            .map(|r| r.staging.clone())
                            .unwrap_or_default(),
                    },
                )
            })
            .collect(),
        digest: String::new(),
    };
    fp.digest = fingerprint_digest(&fp);
    fp
}

/// SHA-256 over the fingerprint's inputs (everything but `digest`).
pub fn fingerprint_digest(fp: &Fingerprint) -> String {
    let mut copy = fp.clone();
    copy.digest.clear();
    let bytes = serde_json::to_vec(&copy).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}
