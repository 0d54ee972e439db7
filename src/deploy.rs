//! One deploy after planning, shared by `apply`, `run` and `serve`: apply the plan, bisect a
//! failure and leave the culprit out (blame), apply again without it, and notify the PRs.
//! The core is async and creates no runtime; apply and blame share one approver and one
//! stop signal ([`Controls`]), so a signal, a server shutdown or a newer push stops a
//! bisection as it stops an apply.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use miette::{IntoDiagnostic, Result};

use crate::apply::events::{Reporter, StepResult};
use crate::apply::{ApplyOptions, ApplyReport, Controls, RunDirs};
use crate::config::Config;
use crate::forge::ForgeSnapshot;
use crate::planner::{CycleRequest, Plan};
use crate::state::{Backend, ExclusionCause, RunResult, StateLock};

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
    /// The forge snapshot the plan was made from: planning again after blame reuses it
    /// instead of fetching a second time.
    pub snapshot: Option<ForgeSnapshot>,
}

/// Apply `plan`; on failure (and with `blame.enabled`) find the culprit, leave it out, plan
/// and apply again, up to `blame.max_culprits` times; then comment on the PRs when `notify`.
/// Stops (without replanning) when `controls.stop` fires.
#[allow(clippy::too_many_arguments)] // the sync wrapper's arguments plus the controls
pub async fn apply_with_blame_async(
    config: &Config,
    plan: Plan,
    backend: &Backend,
    lock: &StateLock,
    opts: DeployOptions,
    controls: &Controls,
    reporter: &mut dyn Reporter,
    narrator: &mut dyn Narrator,
) -> Result<Deployed> {
    let DeployOptions {
        apply: opts,
        notify,
        snapshot,
    } = opts;
    if notify {
        for w in crate::notify::pending(config, &plan).await {
            tracing::warn!("notification: {w}");
        }
    }
    let mut plan = plan;
    let mut culprits = 0;
    let report = loop {
        let report = crate::apply::apply(
            config.clone(),
            plan.clone(),
            backend,
            lock,
            &opts,
            controls,
            reporter,
        )
        .await?;
        if report.result != RunResult::Failed
            || !config.file.blame.enabled
            || culprits >= config.file.blame.max_culprits
            || controls.stop.current().is_some()
        {
            break report;
        }
        let found =
            blame_failure(config, &plan, &report, backend, &opts, controls, reporter).await?;
        let Some(found) = found else {
            break report;
        };
        if controls.stop.current().is_some() {
            break report;
        }
        culprits += 1;
        // Planning may start a runtime of its own (the github forge): off this one.
        let (c, p, b) = (config.clone(), plan.clone(), backend.clone());
        let snap = snapshot.clone();
        plan = tokio::task::spawn_blocking(move || replan(&c, &p, &b, snap.as_ref()))
            .await
            .into_diagnostic()??;
        narrator.replanned(&found, &plan);
    };
    if notify {
        notify_after(config, &plan, &report).await;
    }
    Ok(Deployed { plan, report })
}

/// Plan again after a culprit was left out (state now excludes it): the same cycle, the
/// snapshot the deploy was planned from when the caller has it (no second fetch), else a
/// fresh one.
fn replan(
    config: &Config,
    plan: &Plan,
    backend: &Backend,
    snapshot: Option<&ForgeSnapshot>,
) -> Result<Plan> {
    let ws = crate::workspace::Workspace {
        config: config.clone(),
        backend: backend.clone(),
        state: backend.read()?,
        cache_dir: PathBuf::from(&plan.cache_dir),
        plan_file: plan.plan_file.clone(),
    };
    let request = crate::workspace::PlanRequest {
        cycle: CycleRequest::from(plan.cycle),
        scope: crate::state::RunScope {
            targets: plan.scope.targets.clone(),
            replace: plan.scope.replace.clone(),
            rollback_of: None,
            promoted_from: None,
        },
        ..Default::default()
    };
    match snapshot {
        Some(snapshot) => {
            let mut snapshot = snapshot.clone();
            ws.refresh_remote_staging(&mut snapshot);
            ws.plan(&snapshot, &request)
        }
        None => Ok(ws.fetch_and_plan(&request)?.1),
    }
}

async fn notify_after(config: &Config, plan: &Plan, report: &ApplyReport) {
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
    for w in crate::notify::after_apply(config, plan, &results).await {
        tracing::warn!("notification: {w}");
    }
    for w in crate::notify::chat::post_all(config, plan, &results).await {
        tracing::warn!("chat notification: {w}");
    }
}

/// [`apply_with_blame_async`] from synchronous code (on the process's runtime), with the
/// controls `opts` ask for.
pub fn apply_with_blame(
    config: &Config,
    plan: Plan,
    backend: &Backend,
    lock: &StateLock,
    opts: DeployOptions,
    reporter: &mut dyn Reporter,
    narrator: &mut dyn Narrator,
) -> Result<Deployed> {
    crate::support::rt::block_on(async move {
        let (controls, _listener) = Controls::listen(&opts.apply)?;
        apply_with_blame_async(
            config, plan, backend, lock, opts, &controls, reporter, narrator,
        )
        .await
    })
}

/// Apply (no blame) from synchronous code, with the controls `opts` ask for.
pub fn run_apply(
    config: Config,
    plan: Plan,
    backend: &Backend,
    lock: &StateLock,
    opts: ApplyOptions,
    reporter: &mut dyn Reporter,
) -> Result<ApplyReport> {
    crate::support::rt::block_on(async move {
        let (controls, _listener) = Controls::listen(&opts)?;
        Ok(crate::apply::apply(config, plan, backend, lock, &opts, &controls, reporter).await?)
    })
}

/// Bisect the first failed step of `report`, record the verdict, and leave the culprit out.
/// Returns the culprit's label when one was found.
async fn blame_failure(
    config: &Config,
    plan: &Plan,
    report: &ApplyReport,
    backend: &Backend,
    opts: &ApplyOptions,
    controls: &Controls,
    reporter: &mut dyn Reporter,
) -> Result<Option<String>> {
    use crate::blame::{self, Verdict};
    let Some(failed) = report
        .steps
        .iter()
        .find(|(_, r)| *r == StepResult::Failed)
        .map(|(n, _)| n.clone())
    else {
        return Ok(None);
    };
    let dirs = RunDirs::beside(backend, &plan.name, &report.run_id);
    let env = blame::BisectEnv {
        log_root: dirs.log_dir.join(format!(
            "blame-{}",
            crate::config::names::file_name(&failed)
        )),
        checkout_dir: dirs.checkout_dir,
        opts,
        controls,
    };
    let (record, cands, verdict) =
        blame::bisect(config, plan, &failed, &report.run_id, env, reporter).await;
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
            reason: ExclusionCause::Blamed,
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
