//! `apply`: a saved plan (checked against a fresh one for staleness) or `-f` (plan, confirm),
//! then one deploy: apply, blame, notify.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use miette::{IntoDiagnostic, Result};

use super::args::ApplyArgs;
use super::plan::{parse_now, read_saved_plan};
use crate::apply::events::{JsonReporter, PlainReporter, Reporter, TtyReporter};
use crate::exit::ExitStatus;
use crate::forge::ForgeSnapshot;
use crate::planner::{self, CycleRequest, Plan};
use crate::state::StateLock;
use crate::workspace::{PlanRequest, Workspace};

/// How the CLI runs a deploy once it has a plan.
pub struct Execute {
    pub json: bool,
    pub color: bool,
    pub parallelism: usize,
    pub grace: std::time::Duration,
    pub auto_approve: bool,
    pub no_notify: bool,
}

/// Load, lock, check or make the plan, confirm, apply.
pub fn cmd_apply(args: ApplyArgs, color: bool) -> Result<ExitStatus> {
    let saved = args.planfile.as_deref().map(read_saved_plan).transpose()?;
    let (file, cache) = match (&args.file, &saved) {
        (Some(f), _) => (f.clone(), args.cache_dir.clone()),
        (None, Some(p)) => (
            PathBuf::from(&p.plan_file),
            Some(PathBuf::from(&p.cache_dir)),
        ),
        (None, None) => miette::bail!("give a saved plan, or -f PLAN.yaml"),
    };
    if args.refresh && saved.is_some() {
        eprintln!("{REFRESH_WITH_SAVED_PLAN}");
        return Ok(ExitStatus::Usage);
    }
    let scope = args.scope.to_scope();
    if saved.is_some() && !scope.is_empty() {
        eprintln!("{SCOPE_WITH_SAVED_PLAN}");
        return Ok(ExitStatus::Usage);
    }
    let mut ws = Workspace::load(&file, cache.as_deref())?;
    if let Some(usage) = super::plan::unknown_steps(&ws, &scope) {
        eprintln!("error: {usage}");
        return Ok(ExitStatus::Usage);
    }
    if let Some(saved) = &saved {
        check_names(&ws, saved, args.planfile.as_deref().unwrap_or(&file))?;
    }
    let lock = ws
        .backend
        .lock("apply", args.lock_timeout.0)
        .map_err(|e| e.for_plan(&file))?;
    // Plan against the state as it is under the lock.
    ws.reload_state()?;
    let (snapshot, plan) = match saved {
        Some(saved) => check_saved(&ws, saved)?,
        None => {
            let request = PlanRequest {
                cycle: args.cycle,
                now: Some(parse_now(args.at.as_deref())?),
                drift: super::plan::detect_drift(&ws, args.refresh)?,
                scope,
                ..Default::default()
            };
            let (snapshot, mut plan) = ws.fetch_and_plan(&request)?;
            super::plan::pin_digests(&ws, &mut plan);
            if !args.json {
                print!("{}", planner::render::text(&plan, color));
            }
            if plan.has_changes() && !args.auto_approve {
                confirm()?;
            }
            (snapshot, plan)
        }
    };
    let how = Execute {
        json: args.json,
        color,
        parallelism: args.parallelism,
        grace: args.grace.0,
        auto_approve: args.auto_approve,
        no_notify: args.no_notify,
    };
    execute(&ws, &lock, plan, snapshot, &how)
}

/// `apply -refresh PLANFILE`: refresh is part of planning, and a saved plan is applied as
/// it was made; say how to get what was meant.
const REFRESH_WITH_SAVED_PLAN: &str = "error: -refresh cannot be used with a saved plan: \
a saved plan is applied exactly as it was planned, and refreshing is part of planning.
  To repair drift with a saved plan: kcideploy plan -refresh -f PLAN.yaml -out FILE, then kcideploy apply FILE
  (the saved plan lists the drifted steps). Or refresh and apply at once: kcideploy apply -refresh -f PLAN.yaml";

/// `apply -target STEP PLANFILE`: a saved plan keeps the scope it was planned with.
const SCOPE_WITH_SAVED_PLAN: &str =
    "error: -target and -replace cannot be used with a saved plan: \
it is applied exactly as it was planned, with the -target and -replace it was made with.
  Plan with them: kcideploy plan -f PLAN.yaml -target STEP -out FILE, then kcideploy apply FILE";

/// Before the lock is taken: a saved plan must be sealed (plans saved before seals existed
/// are planned again), and every step, component and repo it names must be in the plan file.
fn check_names(ws: &Workspace, saved: &Plan, path: &std::path::Path) -> Result<()> {
    if saved.content_digest.is_none() {
        miette::bail!(
            help = "plan again with `kcideploy plan -f PLAN.yaml -out FILE`",
            "{} has no seal (saved by an older kcideploy): it cannot be checked for edits",
            path.display()
        );
    }
    let file = &ws.config.file;
    let mut unknown: Vec<String> = Vec::new();
    unknown.extend(
        saved
            .steps
            .iter()
            .filter(|s| !file.steps.contains_key(&s.name))
            .map(|s| format!("step `{}`", s.name)),
    );
    unknown.extend(
        saved
            .components
            .keys()
            .filter(|c| !file.components.contains_key(*c))
            .map(|c| format!("component `{c}`")),
    );
    unknown.extend(
        saved
            .repos
            .keys()
            .filter(|r| !file.repos.contains_key(*r))
            .map(|r| format!("repo `{r}`")),
    );
    if !unknown.is_empty() {
        miette::bail!(
            help = "plan again with the plan file as it is now",
            "{} names what {} does not have: {}",
            path.display(),
            ws.plan_file,
            unknown.join(", ")
        );
    }
    Ok(())
}

/// A saved plan applies only while what it was made from holds: plan again from the same
/// inputs (its cycle and time) and compare fingerprints.
fn check_saved(ws: &Workspace, saved: Plan) -> Result<(ForgeSnapshot, Plan)> {
    let request = PlanRequest {
        cycle: CycleRequest::from(saved.cycle),
        now: Some(saved.planned_at),
        scope: saved.scope.clone(),
        ..Default::default()
    };
    let (snapshot, fresh) = ws.fetch_and_plan(&request)?;
    let own_serial = ws
        .state
        .as_ref()
        .and_then(|s| s.current_run.as_ref())
        .is_some_and(|r| {
            r.plan_digest == saved.fingerprint.digest
                && r.start_serial == saved.fingerprint.state_serial
        });
    let moved =
        crate::apply::stale::differences(&saved.fingerprint, &fresh.fingerprint, own_serial);
    if !moved.is_empty() {
        miette::bail!(
            help = format!(
                "plan again (kcideploy plan -f {} -out FILE) and apply the new plan",
                ws.plan_file
            ),
            "the saved plan is stale; since it was made:\n  - {}",
            moved.join("\n  - ")
        );
    }
    Ok((snapshot, saved))
}

/// Apply `plan` (with blame and notifications) under `lock`; exit 0 when it succeeded.
pub fn execute(
    ws: &Workspace,
    lock: &StateLock,
    plan: Plan,
    snapshot: ForgeSnapshot,
    how: &Execute,
) -> Result<ExitStatus> {
    let mut reporter: Box<dyn Reporter> = if how.json {
        Box::new(JsonReporter)
    } else if std::io::stdout().is_terminal() {
        Box::new(TtyReporter::new())
    } else {
        Box::new(PlainReporter::default())
    };
    let opts = crate::apply::ApplyOptions {
        parallelism: how.parallelism,
        grace: how.grace,
        auto_approve: how.auto_approve,
        ..Default::default()
    };
    let notify = !how.no_notify && crate::notify::wanted(&ws.config);
    let mut narrator = CliNarrator {
        json: how.json,
        color: how.color,
    };
    let crate::deploy::Deployed {
        report,
        plan: deployed_plan,
    } = crate::deploy::apply_with_blame(
        &ws.config,
        plan,
        &ws.backend,
        lock,
        crate::deploy::DeployOptions {
            apply: opts,
            notify,
            snapshot: Some(snapshot),
        },
        reporter.as_mut(),
        &mut narrator,
    )?;
    let steps = report
        .steps
        .iter()
        .map(|(n, r)| (n.clone(), (*r, 0)))
        .collect();
    if let Some(stop) = crate::notify::chat::stopped_line(&deployed_plan, &steps) {
        eprintln!("\n{stop}");
    }
    Ok(if report.succeeded() {
        ExitStatus::Success
    } else {
        ExitStatus::Error
    })
}

/// Prints the new plan after a culprit was left out.
struct CliNarrator {
    json: bool,
    color: bool,
}

impl crate::deploy::Narrator for CliNarrator {
    fn replanned(&mut self, culprit: &str, plan: &Plan) {
        if !self.json {
            println!("\nLeft out {culprit}; deploying the rest.\n");
            print!("{}", planner::render::text(plan, self.color));
        }
    }
}

/// Ask on the terminal; only `yes` goes on.
pub(super) fn confirm() -> Result<()> {
    if !std::io::stdin().is_terminal() {
        miette::bail!(
            help =
                "pass -auto-approve, or save the plan with `plan -out FILE` and run `apply FILE`",
            "no terminal to confirm the plan on"
        );
    }
    print!("\nDo you want to perform these actions? Only 'yes' will be accepted: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).into_diagnostic()?;
    if answer.trim() != "yes" {
        miette::bail!("apply cancelled: the answer was not `yes`");
    }
    Ok(())
}
