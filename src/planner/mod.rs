//! Planning: (config, forge snapshot, state, now) → [`Plan`]. Deterministic; the only side
//! effect is writing merge commits into the cache repositories the snapshot names.

pub mod changes;
pub mod graph;
pub mod policy;
pub mod render;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};

use git2::{Oid, Repository};
use indexmap::IndexMap;
use jiff::Timestamp;
use sha2::{Digest, Sha256};

pub use policy::CycleRequest;
pub use types::*;

use crate::config::Config;
use crate::forge::{ForgeSnapshot, RepoSnapshot};
use crate::gitops::{self, MergeStep};
use crate::state::{RepoState, State};

/// Planning options from the command line.
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    pub cycle: CycleRequest,
    /// "Now" for the policy and for `max_age`.
    pub now: Timestamp,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanError {
    #[error("repo `{repo}`: {context}: {source}")]
    Git {
        repo: String,
        context: String,
        source: git2::Error,
    },
    #[error("repo `{repo}` is in the plan file but not in the forge snapshot")]
    MissingRepo { repo: String },
}

/// Compute the plan.
pub fn plan(
    config: &Config,
    snapshot: &ForgeSnapshot,
    state: Option<&State>,
    opts: PlanOptions,
) -> Result<Plan, PlanError> {
    plan_with_drift(config, snapshot, state, opts, &BTreeMap::new())
}

/// Compute the plan; `drift` (step → what drifted, from `plan -refresh`) makes those steps run.
pub fn plan_with_drift(
    config: &Config,
    snapshot: &ForgeSnapshot,
    state: Option<&State>,
    opts: PlanOptions,
    drift: &BTreeMap<String, String>,
) -> Result<Plan, PlanError> {
    let times = state.map(|s| s.cycles.clone()).unwrap_or_default();
    let decision = policy::decide(opts.cycle, &config.file.policy, &times, opts.now);
    let mut repos = IndexMap::new();
    for (name, repo_cfg) in &config.file.repos {
        let snap = snapshot
            .repos
            .get(name)
            .ok_or_else(|| PlanError::MissingRepo { repo: name.clone() })?;
        let deployed = state.and_then(|s| s.repos.get(name));
        let exclusions: Vec<&crate::state::Exclusion> = state
            .map(|s| s.exclusions.iter().filter(|e| e.repo == *name).collect())
            .unwrap_or_default();
        let approvals: Vec<&crate::state::Approval> = state
            .map(|s| s.approvals.iter().filter(|a| a.repo == *name).collect())
            .unwrap_or_default();
        let repo_plan = plan_repo(
            name,
            repo_cfg,
            snap,
            deployed,
            &exclusions,
            &approvals,
            opts.now,
        )?;
        repos.insert(name.clone(), repo_plan);
    }
    let components = graph::affected_components(config, &repos);
    let steps = graph::plan_steps(config, &components, decision.cycle, drift);
    let summary = Summary {
        run: steps.iter().filter(|s| s.action == Action::Run).count(),
        skip: steps.iter().filter(|s| s.action == Action::Skip).count(),
        held_for_full: steps
            .iter()
            .filter(|s| s.because.first() == Some(&StepReason::FullCycleOnly))
            .count(),
        included: repos.values().map(|r| r.included.len()).sum(),
        excluded: repos.values().map(|r| r.excluded.len()).sum(),
    };
    let fingerprint = fingerprint(config, snapshot, state, &repos);
    Ok(Plan {
        format_version: PLAN_FORMAT_VERSION.to_string(),
        name: config.file.name.clone(),
        plan_file: std::fs::canonicalize(&config.path)
            .unwrap_or_else(|_| config.path.clone())
            .display()
            .to_string(),
        cache_dir: std::path::absolute(&snapshot.cache_dir)
            .unwrap_or_else(|_| snapshot.cache_dir.clone())
            .display()
            .to_string(),
        planned_at: opts.now,
        cycle: decision.cycle,
        cycle_decision: decision,
        repos,
        components,
        steps,
        summary,
        fingerprint,
    })
}

fn plan_repo(
    name: &str,
    repo_cfg: &crate::config::RepoConfig,
    snap: &RepoSnapshot,
    deployed: Option<&RepoState>,
    exclusions: &[&crate::state::Exclusion],
    approvals: &[&crate::state::Approval],
    now: Timestamp,
) -> Result<RepoPlan, PlanError> {
    let git_err = |context: String| {
        let repo = name.to_string();
        move |source| PlanError::Git {
            repo,
            context,
            source,
        }
    };
    let repo = Repository::open_bare(&snap.cache).map_err(git_err(format!(
        "cannot open cache {}",
        snap.cache.display()
    )))?;
    let base = Oid::from_str(&snap.base).map_err(git_err("bad base SHA".into()))?;
    let mut tip = base;
    let mut included = Vec::new();
    let mut excluded = Vec::new();
    for change in &snap.changes {
        let exclude = |reason, detail: String, paths| Excluded {
            id: change.id.clone(),
            head: change.head.clone(),
            author: change.author.clone(),
            reason,
            detail,
            paths,
        };
        let targets = (repo_cfg.base.as_str(), repo_cfg.staging_branch.as_str());
        // A maintainer's approval at this very head overrides `untrusted`.
        let approved = approvals
            .iter()
            .any(|a| a.change == change.id && a.head == change.head);
        let screened = match changes::screen(
            &repo_cfg.pending,
            snap.trusted.as_deref(),
            targets,
            change,
            now,
        ) {
            Some((types::ExclusionReason::Untrusted, _)) if approved => None,
            other => other,
        };
        if let Some((reason, detail)) = screened {
            excluded.push(exclude(reason, detail, Vec::new()));
            continue;
        }
        // Blamed at this head: left out until a new push (a new head re-admits it).
        if let Some(e) = exclusions
            .iter()
            .find(|e| e.change == change.id && e.head == change.head)
        {
            let detail = format!(
                "broke step `{}` in run {} (exclusion {}; a new push or `kcideploy exclusions clear {}` re-admits it)",
                e.step, e.run_id, e.id, e.id
            );
            excluded.push(exclude(types::ExclusionReason::Blamed, detail, Vec::new()));
            continue;
        }
        let head = Oid::from_str(&change.head)
            .map_err(git_err(format!("bad head SHA of {}", change.id)))?;
        let message = format!(
            "kcideploy: merge {} ({}) into {}\n\n{}\n",
            change.id,
            crate::support::text::short(&change.head),
            snap.base_branch,
            change.title
        );
        match gitops::merge_change(&repo, tip, head, &message)
            .map_err(git_err(format!("cannot merge {}", change.id)))?
        {
            MergeStep::Merged(commit) => {
                let paths = match &change.files {
                    // The forge's list of the PR's files (github), else the git diff.
                    Some(files) => files.iter().cloned().collect::<BTreeSet<String>>(),
                    None => gitops::change_paths(&repo, base, head)
                        .map_err(git_err(format!("cannot diff {}", change.id)))?,
                };
                tip = commit;
                included.push(Included {
                    id: change.id.clone(),
                    head: change.head.clone(),
                    author: change.author.clone(),
                    title: change.title.clone(),
                    paths: paths.into_iter().collect(),
                });
            }
            MergeStep::Conflict(paths) => {
                let detail = format!(
                    "conflicts with {} in {}",
                    if included.is_empty() {
                        format!("the base {}", snap.base_branch)
                    } else {
                        format!(
                            "what is merged before it ({})",
                            included
                                .iter()
                                .map(|i: &Included| i.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                    paths.join(", ")
                );
                excluded.push(exclude(types::ExclusionReason::Conflict, detail, paths));
            }
            MergeStep::Empty => excluded.push(exclude(
                types::ExclusionReason::Empty,
                format!(
                    "nothing beyond {} and the changes merged before it",
                    snap.base_branch
                ),
                Vec::new(),
            )),
            MergeStep::Unrelated => excluded.push(exclude(
                types::ExclusionReason::Conflict,
                format!("shares no history with {}", snap.base_branch),
                Vec::new(),
            )),
        }
    }
    let staging = tip;

    let deployed_sha = deployed.map(|d| d.deployed.clone());
    let (diff_basis, attribution) = match &deployed_sha {
        None => (DiffBasis::Initial, Vec::new()),
        Some(sha) if !gitops::has_commit(&repo, sha) => (DiffBasis::UnknownDeployed, Vec::new()),
        Some(sha) => {
            let old = Oid::from_str(sha).map_err(git_err("bad deployed SHA in state".into()))?;
            let changed = gitops::diff_paths(&repo, old, staging)
                .map_err(git_err("cannot diff deployed and staging revisions".into()))?;
            let base_paths = match repo.merge_base(old, base) {
                Ok(fork) => gitops::diff_paths(&repo, fork, base)
                    .map_err(git_err("cannot diff the base".into()))?,
                Err(_) => BTreeSet::new(),
            };
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
                attribute(&changed, &included, &base_paths, &before),
            )
        }
    };
    Ok(RepoPlan {
        base_branch: snap.base_branch.clone(),
        base: snap.base.clone(),
        staging: staging.to_string(),
        deployed: deployed_sha,
        remote_staging: snap.remote_staging.clone(),
        diff_basis,
        included,
        excluded,
        changed_paths: attribution.iter().map(|c| c.path.clone()).collect(),
        attribution,
    })
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
