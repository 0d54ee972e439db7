//! `rollback [RUN_ID]`: plan a deploy of the revisions an earlier successful run deployed
//! (pending changes left out), show it with the images that run recorded, and apply it after
//! confirmation as a normal run that history marks as a rollback of RUN_ID.

use std::io::Write;

use miette::Result;

use super::apply::{Execute, confirm, execute};
use super::args::RollbackArgs;
use crate::exit::ExitStatus;
use crate::planner::{self, Plan};
use crate::state::{RunRecord, State, StateLock};
use crate::workspace::Workspace;

pub fn cmd_rollback(args: RollbackArgs, color: bool) -> Result<ExitStatus> {
    let mut ws = Workspace::load(&args.file, args.cache_dir.as_deref())?;
    // A plan-only rollback reads state as `plan` does, without the lock.
    let lock = match args.plan_only {
        true => None,
        false => Some(
            ws.backend
                .lock("rollback", args.lock_timeout.0)
                .map_err(|e| e.for_plan(&args.file))?,
        ),
    };
    ws.reload_state()?;
    let (request, run) = ws.rollback_request(args.run_id.as_deref(), args.cycle)?;
    let (snapshot, mut plan) = ws.fetch_and_plan(&request)?;
    // The digests that run pinned, not what the tags name now.
    let warnings =
        crate::apply::pins::reuse_plan_pins(&ws.config, ws.state.as_ref(), &mut plan, &run.pins);
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    let how = Execute {
        json: args.json,
        color,
        parallelism: args.parallelism,
        grace: args.grace.0,
        auto_approve: args.auto_approve,
        no_notify: args.no_notify,
    };
    let shown = images_text(&run, ws.state.as_ref(), &plan);
    let nothing = format!(
        "Nothing to roll back: run {} deployed what runs now.",
        run.id
    );
    show_and_apply(
        &ws,
        lock,
        (plan, snapshot),
        (&shown, &nothing),
        args.plan_only,
        &how,
    )
}

/// The end of a pinned deploy (a rollback, a promotion): with `plan_only` and `--json` the
/// plan JSON; else the plan text and `shown`, then, holding `lock`, `nothing` when
/// everything runs as planned already, or confirmation and the apply.
pub(super) fn show_and_apply(
    ws: &Workspace,
    lock: Option<StateLock>,
    (plan, snapshot): (Plan, crate::forge::ForgeSnapshot),
    (shown, nothing): (&str, &str),
    plan_only: bool,
    how: &Execute,
) -> Result<ExitStatus> {
    if plan_only && how.json {
        let _ = writeln!(std::io::stdout(), "{}", super::plan::to_json(&plan)?);
        return Ok(ExitStatus::Success);
    }
    if !how.json {
        let mut text = planner::render::text(&plan, how.color);
        text.push_str(shown);
        let _ = std::io::stdout().write_all(text.as_bytes());
    }
    let Some(lock) = lock else {
        return Ok(ExitStatus::Success);
    };
    if plan.is_deployed() {
        if !how.json {
            println!("{nothing}");
        }
        return Ok(ExitStatus::Success);
    }
    if plan.has_changes() && !how.auto_approve {
        confirm()?;
    }
    execute(ws, &lock, plan, snapshot, how)
}

/// The images the run recorded for the steps that build them, beside those deployed now:
/// a step whose image differs gets it back from its revision (a build is named after its
/// content, so the same revision finds the same image).
fn images_text(run: &RunRecord, state: Option<&State>, plan: &Plan) -> String {
    if run.images.is_empty() {
        return String::new();
    }
    let now = state
        .and_then(|s| s.history.last())
        .map(|r| &r.images)
        .cloned()
        .unwrap_or_default();
    let mut out = format!("\nImages run {} recorded:\n", run.id);
    for (step, id) in &run.images {
        let runs = plan
            .steps
            .iter()
            .any(|s| s.name == *step && s.action == planner::Action::Run);
        let deployed = now.get(step);
        let how = match (deployed, runs) {
            (Some(d), _) if d == id => "deployed now".to_string(),
            (_, true) => format!(
                "{} now; `{step}` runs",
                deployed.map(|d| image_short(d)).unwrap_or("none")
            ),
            (_, false) => format!(
                "{} now; `{step}` does not run",
                deployed.map(|d| image_short(d)).unwrap_or("none")
            ),
        };
        out.push_str(&format!("  {step}: {} ({how})\n", image_short(id)));
    }
    out
}

/// An image id as `docker images` shows it: 12 hex digits, no `sha256:`.
fn image_short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}
