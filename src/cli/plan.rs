//! `plan`: fetch, stage, plan, print (text or JSON), save with `-out`; reading saved plans.

use std::io::Write;
use std::path::Path;

use jiff::Timestamp;
use miette::{Context, IntoDiagnostic, Result};

use super::args::PlanArgs;
use crate::exit::ExitStatus;
use crate::planner::{self, Plan};
use crate::support::write_atomic;
use crate::workspace::{PlanRequest, Workspace};

/// Parse `--at`, or take the clock.
pub fn parse_now(at: Option<&str>) -> Result<Timestamp> {
    match at {
        None => Ok(Timestamp::now()),
        Some(text) => text
            .parse::<Timestamp>()
            .into_diagnostic()
            .wrap_err_with(|| {
                format!("--at `{text}` is not an RFC 3339 time such as 2026-11-24T08:00:00Z")
            }),
    }
}

/// Steps whose recorded outcomes (images, containers, registry manifests, pushed git refs)
/// are no longer as recorded, with `-refresh`; none without.
pub fn detect_drift(
    ws: &Workspace,
    refresh: bool,
) -> Result<std::collections::BTreeMap<String, String>> {
    match (&ws.state, refresh) {
        (Some(state), true) => crate::apply::refresh::drift(&ws.config, state).map_err(|e| {
            miette::miette!(
                help = "-refresh compares state with the live system; without it, plan from state alone",
                "{e}"
            )
        }),
        _ => Ok(Default::default()),
    }
}

pub fn cmd_plan(args: PlanArgs, color: bool) -> Result<ExitStatus> {
    if args.explain_paths {
        let config = crate::config::Config::load(&args.file)?;
        // A closed pipe (`| head`) is not an error worth a backtrace.
        let _ = std::io::stdout().write_all(planner::explain::render(&config).as_bytes());
        return Ok(ExitStatus::Success);
    }
    let ws = Workspace::load(&args.file, args.cache_dir.as_deref())?;
    if let Some(pr) = &args.pr {
        return preview(&ws, pr, parse_now(args.at.as_deref())?, args.cycle);
    }
    let scope = args.scope.to_scope();
    if let Some(usage) = unknown_steps(&ws, &scope) {
        eprintln!("error: {usage}");
        return Ok(ExitStatus::Usage);
    }
    let drift = detect_drift(&ws, args.refresh)?;
    let request = PlanRequest {
        cycle: args.cycle,
        now: Some(parse_now(args.at.as_deref())?),
        drift,
        scope,
        ..Default::default()
    };
    let (snapshot, mut plan) = ws.fetch_and_plan(&request)?;
    if args.diff {
        ws.file_diffs(&snapshot, &mut plan, args.diff_lines);
    }
    pin_digests(&ws, &mut plan);
    if let Some(out) = &args.out {
        plan.seal();
        let mut json = to_json(&plan)?.into_bytes();
        json.push(b'\n');
        write_atomic(out, &json)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot save the plan to {}", out.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    let rendered = if args.json {
        format!("{}\n", to_json(&plan)?)
    } else {
        let mut text = planner::render::text(&plan, color);
        text.push_str(&super::adopt::unknown_note(&ws, &plan));
        if let Some(out) = &args.out {
            text.push_str(&format!("\nSaved the plan to {}.\n", out.display()));
        }
        text
    };
    // A closed pipe (`| head`) is not an error worth a backtrace.
    let _ = stdout.write_all(rendered.as_bytes());
    Ok(if args.detailed_exitcode && plan.has_changes() {
        ExitStatus::Changes
    } else {
        ExitStatus::Success
    })
}

/// `-target` and `-replace` names that are not steps of the plan file, as a usage error.
pub fn unknown_steps(ws: &Workspace, scope: &crate::state::RunScope) -> Option<String> {
    let check = |flag, names| planner::scope::unknown_steps(&ws.config, flag, names);
    match (
        check("-target", &scope.targets),
        check("-replace", &scope.replace),
    ) {
        (Some(a), Some(b)) => Some(format!("{a}\nerror: {b}")),
        (a, b) => a.or(b),
    }
}

/// Resolve the image digests the plan's `kubernetes` steps will pin (shown, and kept in a
/// saved plan); a registry that does not answer is a warning: apply resolves those.
pub fn pin_digests(ws: &Workspace, plan: &mut Plan) {
    for warning in crate::apply::pins::resolve_plan_pins(&ws.config, ws.state.as_ref(), plan) {
        eprintln!("warning: {warning}");
    }
}

/// `plan --pr REPO#N`: the change's preview, as its PR comment shows it.
fn preview(
    ws: &Workspace,
    pr: &str,
    now: jiff::Timestamp,
    cycle: crate::policy::CycleRequest,
) -> Result<ExitStatus> {
    let Some((repo, id)) = pr
        .split_once('#')
        .filter(|(r, i)| !r.is_empty() && !i.is_empty())
    else {
        miette::bail!(
            help = "name the repo as the plan file does: `--pr kernelci-api#512`",
            "--pr {pr}: write REPO#N"
        );
    };
    let snapshot = ws.fetch()?;
    let id = match snapshot
        .repos
        .get(repo)
        .is_some_and(|r| r.changes.iter().any(|c| c.id == format!("#{id}")))
    {
        true => format!("#{id}"),
        false => id.to_string(),
    };
    let request = PlanRequest {
        cycle,
        now: Some(now),
        ..Default::default()
    };
    let preview = ws.preview(&snapshot, repo, &id, &request)?;
    let _ = std::io::stdout().write_all(crate::notify::preview::text(&preview).as_bytes());
    Ok(ExitStatus::Success)
}

pub fn to_json(plan: &Plan) -> Result<String> {
    serde_json::to_string_pretty(plan).into_diagnostic()
}

/// Read a plan saved with `-out`, checking its format version, its fingerprint digest and,
/// when it has one, its seal over the whole content.
pub fn read_saved_plan(path: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read saved plan {}", path.display()))?;
    let plan: Plan = serde_json::from_str(&text)
        .into_diagnostic()
        .wrap_err_with(|| format!("{} is not a saved kcideploy plan", path.display()))?;
    if plan.format_version != planner::PLAN_FORMAT_VERSION {
        miette::bail!(
            "{} has plan format version {}; this kcideploy reads version {}",
            path.display(),
            plan.format_version,
            planner::PLAN_FORMAT_VERSION
        );
    }
    if planner::fingerprint_digest(&plan.fingerprint) != plan.fingerprint.digest {
        miette::bail!(
            "{}: the fingerprint does not match its digest: the file was edited",
            path.display()
        );
    }
    if plan.seal_holds() == Some(false) {
        miette::bail!(
            help = "plan again with `kcideploy plan -f PLAN.yaml -out FILE`; a saved plan is applied as it was made, or not at all",
            "{} was edited after it was saved: its content no longer matches its seal (content_digest)",
            path.display()
        );
    }
    Ok(plan)
}
