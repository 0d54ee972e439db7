//! `promote --from STAGING.yaml`: production deploys what staging tested. Each repo is
//! pinned to the revision of `main` that the last staging run whose full cycle passed was
//! built on (pending changes left out, as in a rollback); a revision asked for with
//! `-rev REPO=SHA` must be one staging passed (that one or an older one on the same line),
//! or the promotion is refused naming it. Kubernetes pins are resolved in the plan and
//! deployed by digest, never by a moving tag.

use std::path::PathBuf;

use miette::Result;

use super::apply::Execute;
use super::args::{at_least_one, parse_duration};
use super::rollback::show_and_apply;
use crate::exit::ExitStatus;
use crate::planner::CycleRequest;
use crate::state::{RunRecord, RunResult, RunRevision, RunScope};
use crate::workspace::{PlanRequest, Workspace};

#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The production plan file.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// The staging plan file whose passed full cycles say what may be promoted.
    #[arg(long = "from", value_name = "STAGING.yaml")]
    pub from: PathBuf,
    /// Promote this revision of REPO instead of the one staging passed last; refused unless
    /// staging passed it (repeatable).
    #[arg(long = "rev", value_name = "REPO=SHA")]
    pub rev: Vec<String>,
    /// Print the promotion's plan and stop.
    #[arg(long = "plan-only", conflicts_with = "auto_approve")]
    pub plan_only: bool,
    /// Do not ask for confirmation.
    #[arg(long = "auto-approve")]
    pub auto_approve: bool,
    /// One JSON object per event (with -plan-only: the plan JSON).
    #[arg(long)]
    pub json: bool,
    /// Steps running at once.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    pub parallelism: usize,
    /// Wait this long for the state lock (e.g. 30s, 5m).
    #[arg(long = "lock-timeout", default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: crate::config::HumanDuration,
    /// Time between SIGTERM and SIGKILL for a step being stopped.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub grace: crate::config::HumanDuration,
    /// Where production's fetched repos are cached (default: beside its state file).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Post no PR comment, commit status or chat message.
    #[arg(long = "no-notify")]
    pub no_notify: bool,
}

/// The last staging run whose full cycle passed.
fn passed_run(staging: &Workspace) -> Result<RunRecord> {
    let history = staging
        .state
        .as_ref()
        .map(|s| s.history.as_slice())
        .unwrap_or_default();
    history
        .iter()
        .rev()
        .find(|r| r.cycle == crate::config::Cycle::Full && r.result == RunResult::Success && !r.revisions.is_empty())
        .cloned()
        .ok_or_else(|| {
            miette::miette!(
                help = "run a full staging cycle (`kcideploy apply -f STAGING.yaml --cycle full`) and promote once it passed",
                "{}: no full cycle has passed on staging yet: nothing to promote",
                staging.plan_file
            )
        })
}

/// Whether `sha` is `passed` or an older commit of its line, in the repo cache `cache`.
fn staging_passed(cache: &std::path::Path, sha: &str, passed: &str) -> bool {
    let Ok(git) = git2::Repository::open_bare(cache) else {
        return false;
    };
    let (Ok(sha), Ok(passed)) = (git2::Oid::from_str(sha), git2::Oid::from_str(passed)) else {
        return false;
    };
    sha == passed || git.graph_descendant_of(passed, sha).unwrap_or(false)
}

/// The pins of the promotion: per repo of production, the revision staging passed (or the
/// one asked for, checked).
fn pins(
    prod: &Workspace,
    snapshot: &crate::forge::ForgeSnapshot,
    run: &RunRecord,
    asked: &[(String, String)],
) -> Result<std::collections::BTreeMap<String, RunRevision>> {
    let mut pins = std::collections::BTreeMap::new();
    for name in prod.config.file.repos.keys() {
        let Some(tested) = run.revisions.get(name) else {
            miette::bail!(
                "repo `{name}` is not in staging run {}: production deploys only what staging tested",
                run.id
            );
        };
        let passed = if tested.base.is_empty() {
            &tested.staging
        } else {
            &tested.base
        };
        let sha = match asked.iter().find(|(r, _)| r == name) {
            Some((_, sha)) => {
                let cache = snapshot
                    .repos
                    .get(name)
                    .map(|s| s.cache.clone())
                    .unwrap_or_default();
                let full = git2::Repository::open_bare(&cache)
                    .and_then(|g| g.revparse_single(sha).map(|o| o.id().to_string()))
                    .unwrap_or_else(|_| sha.clone());
                if !staging_passed(&cache, &full, passed) {
                    miette::bail!(
                        help = "promote what staging passed (leave out -rev), or run a full staging cycle with it first",
                        "repo `{name}`: {sha} has not passed staging: the last staging run whose full cycle passed ({}, {}) tested `{}` at {}",
                        run.id,
                        run.started_at,
                        name,
                        crate::support::text::short(passed)
                    );
                }
                full
            }
            None => passed.clone(),
        };
        pins.insert(
            name.clone(),
            RunRevision {
                staging: sha.clone(),
                base: sha,
                included: Vec::new(),
            },
        );
    }
    Ok(pins)
}

pub fn cmd_promote(args: PromoteArgs, color: bool) -> Result<ExitStatus> {
    let staging = Workspace::load(&args.from, None)?;
    let run = passed_run(&staging)?;
    let mut asked = Vec::new();
    for rev in &args.rev {
        let Some((repo, sha)) = rev
            .split_once('=')
            .filter(|(r, s)| !r.is_empty() && !s.is_empty())
        else {
            miette::bail!("-rev {rev}: write REPO=SHA");
        };
        asked.push((repo.to_string(), sha.to_string()));
    }
    let mut ws = Workspace::load(&args.file, args.cache_dir.as_deref())?;
    if let Some((repo, _)) = asked
        .iter()
        .find(|(r, _)| !ws.config.file.repos.contains_key(r))
    {
        miette::bail!("-rev: {} has no repo `{repo}`", ws.plan_file);
    }
    let lock = match args.plan_only {
        true => None,
        false => Some(
            ws.backend
                .lock("promote", args.lock_timeout.0)
                .map_err(|e| e.for_plan(&args.file))?,
        ),
    };
    ws.reload_state()?;
    let snapshot = ws.fetch()?;
    let request = PlanRequest {
        cycle: CycleRequest::Partial,
        scope: RunScope {
            promoted_from: Some(format!("{} run {}", staging.config.file.name, run.id)),
            ..Default::default()
        },
        pins: pins(&ws, &snapshot, &run, &asked)?,
        ..Default::default()
    };
    let mut plan = ws.plan(&snapshot, &request)?;
    super::plan::pin_digests(&ws, &mut plan);
    let how = Execute {
        json: args.json,
        color,
        parallelism: args.parallelism,
        grace: args.grace.0,
        auto_approve: args.auto_approve,
        no_notify: args.no_notify,
    };
    let nothing = format!(
        "Nothing to promote: production runs what staging run {} passed.",
        run.id
    );
    show_and_apply(
        &ws,
        lock,
        (plan, snapshot),
        ("", &nothing),
        args.plan_only,
        &how,
    )
}
