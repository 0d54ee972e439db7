//! `run`: one-shot for cron or CI. Loads the plan file once, fetches once, plans once (under
//! the state lock), obeys the policy's cooldown, applies.

use std::path::PathBuf;

use miette::Result;

use super::apply::{Execute, execute};
use super::plan::parse_now;
use crate::exit::ExitStatus;
use crate::planner::{self, CycleRequest};
use crate::workspace::{PlanRequest, Workspace};

/// `run`: nothing to do (0), held back by the cooldown (3), else apply (2 applied, 1 failed).
pub fn cmd_run(
    file: PathBuf,
    at: Option<String>,
    no_notify: bool,
    lock_timeout: crate::config::HumanDuration,
    scope: crate::state::RunScope,
    color: bool,
) -> Result<ExitStatus> {
    let now = parse_now(at.as_deref())?;
    let mut ws = Workspace::load(&file, None)?;
    if let Some(usage) = super::plan::unknown_steps(&ws, &scope) {
        eprintln!("error: {usage}");
        return Ok(ExitStatus::Usage);
    }
    let lock = ws
        .backend
        .lock("run", lock_timeout.0)
        .map_err(|e| e.for_plan(&file))?;
    ws.reload_state()?;
    let request = PlanRequest {
        cycle: CycleRequest::Auto,
        now: Some(now),
        scope,
        ..Default::default()
    };
    let (snapshot, plan) = ws.fetch_and_plan(&request)?;
    if plan.is_deployed() {
        if !no_notify && crate::notify::wanted(&ws.config) {
            let warnings = crate::support::rt::block_on(crate::notify::covered(&ws.config, &plan));
            for w in warnings {
                tracing::warn!("notification: {w}");
            }
        }
        println!(
            "Nothing to do: {} is deployed as planned ({} cycle).",
            plan.name,
            plan.cycle.as_str()
        );
        return Ok(ExitStatus::Success);
    }
    let last_end = ws
        .state
        .as_ref()
        .and_then(|s| s.history.iter().filter_map(|r| r.finished_at).max());
    let cooldown = ws.config.file.policy.cooldown;
    if let Some(ready) = crate::policy::cooldown_until(cooldown, last_end, now) {
        println!(
            "Held back by the policy: the last deploy ended {} ago, cooldown is {cooldown}; next deploy from {ready}.",
            crate::support::text::age(
                now.as_second() - last_end.map_or(now.as_second(), |e| e.as_second())
            ),
        );
        return Ok(ExitStatus::HeldBack);
    }
    print!("{}", planner::render::text(&plan, color));
    let how = Execute {
        json: false,
        color,
        parallelism: 10,
        grace: std::time::Duration::from_secs(10),
        auto_approve: true,
        no_notify,
    };
    Ok(match execute(&ws, &lock, plan, snapshot, &how)? {
        ExitStatus::Success => ExitStatus::Changes,
        other => other,
    })
}
