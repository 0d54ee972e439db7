//! One deploy after planning, shared by `apply`, `run` and `serve`: apply the plan, bisect a
//! failure and leave the culprit out (blame), apply again without it, and notify the PRs.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use miette::{IntoDiagnostic, Result};

use crate::apply::events::{Reporter, StepResult};
use crate::apply::{ApplyOptions, ApplyReport};
use crate::config::Config;
use crate::planner::{CycleRequest, Plan};
use crate::state::{LocalState, StateLock};

/// What `deploy` tells its caller between applies (the CLI prints it; `serve` logs it).
pub trait Narrator {
    /// A new plan after a culprit was left out.
    fn replanned(&mut self, culprit: &str, plan: &Plan);
}

/// Prints nothing.
pub struct Quiet;

impl Narrator for Quiet {
    fn replanned(&mut self, culprit: &str, _plan: &Plan) {
        tracing::info!("left out {culprit}; deploying the rest");
    }
}

/// The end of a deploy: the last plan applied and its report.
pub struct Deployed {
    pub plan: Plan,
    pub report: ApplyReport,
}

/// How to deploy: the apply options, and whether to comment on PRs and set statuses.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub apply: ApplyOptions,
    pub notify: bool,
}

/// Apply `plan`; on failure (and with `blame.enabled`) find the culprit, leave it out, plan
/// and apply again, up to `blame.max_culprits` times; then comment on the PRs when `notify`.
pub fn apply_with_blame(
    config: &Config,
    plan: Plan,
    backend: &LocalState,
    lock: &StateLock,
    opts: DeployOptions,
    reporter: &mut dyn Reporter,
    narrator: &mut dyn Narrator,
) -> Result<Deployed> {
    let DeployOptions {
        apply: opts,
        notify,
    } = opts;
    if notify {
        for w in crate::notify::pending(config, &plan) {
            tracing::warn!("notification: {w}");
        }
    }
    let mut plan = plan;
    let mut culprits = 0;
    let report = loop {
        let report = run_apply(
            config.clone(),
            plan.clone(),
            backend,
            lock,
            opts.clone(),
            reporter,
        )?;
        if report.result != "failed"
            || !config.file.blame.enabled
            || culprits >= config.file.blame.max_culprits
        {
            break report;
        }
        let Some(found) = blame_failure(config, &plan, &report, backend, reporter)? else {
            break report;
        };
        culprits += 1;
        plan = replan(config, &plan, backend)?;
        narrator.replanned(&found, &plan);
    };
    if notify {
        let results = crate::notify::RunResults {
            run_id: &report.run_id,
            steps: report
                .steps
                .iter()
                .map(|(n, r)| {
                    (
                        n.clone(),
                        (*r, report.durations.get(n).copied().unwrap_or(0)),
                    )
                })
                .collect(),
            details: report.details.clone(),
        };
        for w in crate::notify::after_apply(config, &plan, &results) {
            tracing::warn!("notification: {w}");
        }
    }
    Ok(Deployed { plan, report })
}

/// Plan again after blame left a culprit out: the same cycle, the state as blame left it.
fn replan(config: &Config, plan: &Plan, backend: &LocalState) -> Result<Plan> {
    let ws = crate::workspace::Workspace {
        config: config.clone(),
        backend: LocalState::new(backend.path.clone()),
        state: backend.read()?,
        cache_dir: PathBuf::from(&plan.cache_dir),
        plan_file: plan.plan_file.clone(),
    };
    let request = crate::workspace::PlanRequest {
        cycle: CycleRequest::from(plan.cycle),
        ..Default::default()
    };
    Ok(ws.fetch_and_plan(&request)?.1)
}

/// Apply on a fresh tokio runtime.
pub fn run_apply(
    config: Config,
    plan: Plan,
    backend: &LocalState,
    lock: &StateLock,
    opts: ApplyOptions,
    reporter: &mut dyn Reporter,
) -> Result<ApplyReport> {
    // Steps are child processes and I/O waits: one thread schedules them with the least latency.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .into_diagnostic()?;
    Ok(runtime.block_on(crate::apply::apply(
        config, plan, backend, lock, opts, reporter,
    ))?)
}

/// Bisect the first failed step of `report`, record the verdict, and leave the culprit out.
/// Returns the culprit's label when one was found.
fn blame_failure(
    config: &Config,
    plan: &Plan,
    report: &ApplyReport,
    backend: &LocalState,
    reporter: &mut dyn Reporter,
) -> Result<Option<String>> {
    use crate::apply::blame::{self, Verdict};
    let Some(failed) = report
        .steps
        .iter()
        .find(|(_, r)| *r == StepResult::Failed)
        .map(|(n, _)| n.clone())
    else {
        return Ok(None);
    };
    let state_dir = backend
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let env = blame::BisectEnv {
        log_root: state_dir
            .join("runs")
            .join(&plan.name)
            .join(&report.run_id)
            .join(format!("blame-{failed}")),
        checkout_dir: state_dir.join("checkouts").join(&plan.name),
        cancel: tokio::sync::watch::channel(crate::apply::process::Cancel::None).1,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .into_diagnostic()?;
    let (record, cands, verdict) = runtime.block_on(blame::bisect(
        config,
        plan,
        &failed,
        &report.run_id,
        env,
        reporter,
    ));
    let mut state = backend.read()?.unwrap_or_default();
    let log_tail = state
        .current_run
        .as_ref()
        .and_then(|r| r.steps.iter().find(|s| s.name == failed))
        .and_then(|s| s.log.as_ref())
        .map(|log| crate::apply::process::tail(Path::new(log), 20));
    let culprit = match verdict {
        Verdict::Blamed(i) | Verdict::Pair(_, i) => cands.get(i).cloned(),
        _ => None,
    };
    if let Some(c) = &culprit {
        let author = plan
            .repos
            .get(&c.repo)
            .and_then(|r| r.included.iter().find(|i| i.id == c.change))
            .map(|i| i.author.clone())
            .unwrap_or_default();
        state.exclusions.push(crate::state::Exclusion {
            id: crate::support::random_id()[..8].to_string(),
            repo: c.repo.clone(),
            change: c.change.clone(),
            head: c.head.clone(),
            reason: "blamed".into(),
            step: failed.clone(),
            detail: format!("{} (author {author})", record.summary),
            log_tail,
            at: Timestamp::now(),
            run_id: report.run_id.clone(),
        });
    }
    state.blames.push(record);
    let extra = state.blames.len().saturating_sub(crate::state::BLAMES_KEEP);
    state.blames.drain(..extra);
    backend.write(&mut state)?;
    Ok(culprit.map(|c| c.label()))
}
