//! One deploy, on the deploy thread: record pending approvals, plan, apply (with blame and
//! notifications). The same code as `kcideploy apply`, run by the worker.

use jiff::Timestamp;
use miette::Result;
use tokio::sync::watch;

use super::hub::Hub;
use super::status::{ChangeStatus, DeployResult, GraphStep, StatusReporter, changes};
use super::worker::Outcome;
use crate::apply::process::Cancel;
use crate::config::Cycle;
use crate::planner::{CycleRequest, Plan};
use crate::workspace::{PlanRequest, Workspace};

/// One deploy, on its own thread: record pending approvals, plan, apply (with blame and
/// notifications).
pub(super) fn deploy(
    hub: &Hub,
    cycle: Cycle,
    rollback: Option<String>,
    cancel: watch::Receiver<Cancel>,
    started_at: Timestamp,
) -> Outcome {
    let mut outcome = Outcome {
        cycle,
        rollback: rollback.clone(),
        started_at,
        result: DeployResult::Error,
        run_id: None,
        changes: None,
        error: None,
    };
    match deploy_inner(hub, cycle, rollback.as_deref(), cancel) {
        Ok((changes, report)) => {
            match report {
                Some(r) => {
                    outcome.result = DeployResult::Run(r.result);
                    outcome.run_id = Some(r.run_id);
                }
                None => outcome.result = DeployResult::Nothing,
            }
            outcome.changes = Some(changes);
        }
        Err(e) => outcome.error = Some(format!("{e}")),
    }
    outcome
}

fn deploy_inner(
    hub: &Hub,
    cycle: Cycle,
    rollback: Option<&str>,
    cancel: watch::Receiver<Cancel>,
) -> Result<(Vec<ChangeStatus>, Option<crate::apply::ApplyReport>)> {
    // The plan file as it is now: an edited plan takes effect at the next deploy.
    let mut ws = Workspace::load(&hub.opts.file, None)?;
    let lock = ws.backend.lock("serve", hub.opts.lock_timeout)?;
    hub.record_approvals(&ws.backend)?;
    ws.reload_state()?;
    let (request, pins) = match rollback {
        Some(run) => {
            let (request, run) = ws.rollback_request(Some(run), CycleRequest::from(cycle))?;
            (request, Some(run.pins))
        }
        None => {
            let request = PlanRequest {
                cycle: CycleRequest::from(cycle),
                ..Default::default()
            };
            (request, None)
        }
    };
    let (snapshot, plan) = {
        let _fetching = hub.fetching.lock().unwrap_or_else(|e| e.into_inner());
        ws.fetch_and_plan(&request)?
    };
    let mut plan = plan;
    if let Some(pins) = &pins {
        // A rollback deploys the digests that run pinned, not what the tags name now.
        for w in crate::apply::pins::reuse_plan_pins(&ws.config, ws.state.as_ref(), &mut plan, pins)
        {
            tracing::warn!("rollback: {w}");
        }
    }
    let (config, backend) = (&ws.config, &ws.backend);
    if plan.is_deployed() {
        if hub.opts.notify && crate::notify::wanted(config) {
            let warnings = crate::support::rt::block_on(crate::notify::covered(config, &plan));
            for w in warnings {
                tracing::warn!("notification: {w}");
            }
        }
        return Ok((changes(config, &plan), None));
    }
    publish_plan(hub, config, &plan);
    let opts = crate::apply::ApplyOptions {
        parallelism: hub.opts.parallelism,
        grace: hub.opts.grace,
        handle_signals: false,
        cancel: Some(cancel),
        // `approve: true` steps stop the run: a service never confirms on its own.
        auto_approve: false,
    };
    let notify = hub.opts.notify && crate::notify::wanted(config);
    let mut reporter = StatusReporter { hub };
    let deployed = crate::deploy::apply_with_blame(
        config,
        plan,
        backend,
        &lock,
        crate::deploy::DeployOptions {
            apply: opts,
            notify,
            snapshot: Some(snapshot),
        },
        &mut reporter,
        &mut crate::deploy::Quiet,
    )?;
    Ok((changes(config, &deployed.plan), Some(deployed.report)))
}

/// Show the planned deploy on the status page: its step graph and the changes it takes.
fn publish_plan(hub: &Hub, config: &crate::config::Config, plan: &Plan) {
    let (names, graph) = crate::apply::graph_of(config, plan, None);
    let steps: Vec<GraphStep> = names
        .iter()
        .enumerate()
        .map(|(i, name)| GraphStep {
            name: name.clone(),
            waits_on: graph
                .deps
                .get(i)
                .into_iter()
                .flatten()
                .filter_map(|d| names.get(*d).cloned())
                .collect(),
            approve: graph.approve.get(i).copied().unwrap_or(false),
        })
        .collect();
    let changes = changes(config, plan);
    let mut status = hub.status();
    status.changes = changes;
    if let Some(run) = &mut status.running {
        run.graph = steps;
    }
}
