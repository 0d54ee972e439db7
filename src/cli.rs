//! Command line: clap definitions, Terraform-style single-dash options, dispatch.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use jiff::Timestamp;
use miette::{Context, IntoDiagnostic, Result};

use crate::config::Config;
use crate::exit::ExitStatus;
use crate::planner::{self, CycleRequest, Plan, PlanOptions};
use crate::state::LocalState;
use crate::support::write_atomic;

/// Deploy KernelCI staging and production from a YAML plan file.
#[derive(Debug, Parser)]
#[command(name = "kcideploy", version, about, long_about = None)]
pub struct Cli {
    /// Never use colours.
    #[arg(long = "no-color", global = true)]
    pub no_color: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what a deploy would do, and why.
    Plan(PlanArgs),
    /// Check a plan file: syntax, names, globs, dependency cycles.
    Validate {
        /// The plan file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Print the step graph as Graphviz DOT.
    Graph {
        /// The plan file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// A plan saved with `plan -out`: mark the steps it runs.
        #[arg(long)]
        plan: Option<PathBuf>,
    },
    /// Print the JSON schema of plan files (draft-07).
    Schema {
        /// Print the plan file reference (Markdown) instead, as in the README.
        #[arg(long)]
        reference: bool,
    },
    /// Show a plan saved with `plan -out`.
    Show {
        /// The saved plan.
        planfile: PathBuf,
        /// Print the plan JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a saved plan, or plan and run after confirmation.
    Apply(ApplyArgs),
    /// One-shot for cron or CI: plan, obey the policy, apply, notify.
    /// Exit: 0 nothing to do, 1 failed, 2 applied, 3 held back by the policy.
    Run {
        /// The plan file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Decide the policy as if it were this time (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
        /// Post no PR comment and no commit status.
        #[arg(long = "no-notify")]
        no_notify: bool,
        /// Wait this long for the state lock.
        #[arg(long = "lock-timeout", default_value = "5m", value_parser = parse_duration)]
        lock_timeout: crate::config::HumanDuration,
    },
    /// Long-running service: GitHub webhooks, the staging policy, `@kcibot` commands,
    /// `/status` and `/metrics`. SIGTERM stops the running deploy cleanly.
    Serve {
        /// The plan file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Address to listen on (port 0: any free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Post no PR comment and no commit status after deploys (the bot still replies).
        #[arg(long = "no-notify")]
        no_notify: bool,
        /// Steps running at once.
        #[arg(long, default_value_t = 10)]
        parallelism: usize,
        /// Time between SIGTERM and SIGKILL for a step being stopped.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        grace: crate::config::HumanDuration,
        /// Wait this long for the state lock (held by a manual apply).
        #[arg(long = "lock-timeout", default_value = "5m", value_parser = parse_duration)]
        lock_timeout: crate::config::HumanDuration,
    },
    /// Look at the state.
    #[command(subcommand)]
    State(StateCommand),
    /// Remove the state lock ID left by a run that is gone for good.
    ForceUnlock {
        /// The lock ID, as named by the error.
        id: String,
        /// The plan file whose state is locked.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Explain the last bisection.
    Blame {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The last one (the only choice for now).
        #[arg(long, default_value_t = true)]
        last: bool,
        #[arg(long)]
        json: bool,
    },
    /// List the changes left out because they broke a deploy, or clear one.
    Exclusions {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(subcommand)]
        action: Option<ExclusionsAction>,
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
    /// Make local repos with pending branches, plan, apply, and plan again.
    Demo {
        /// Directory to create the demo in (default: a new temporary directory, kept).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The plan file.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Save the plan, with a fingerprint of every input, for `apply`.
    #[arg(long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when there is nothing to do, 2 when steps would run, 1 on error.
    #[arg(long = "detailed-exitcode")]
    pub detailed_exitcode: bool,
    /// Which cycle: partial, full, or auto (ask the policy).
    #[arg(long, value_enum, default_value_t = CycleRequest::Auto)]
    pub cycle: CycleRequest,
    /// Plan as if it were this time (RFC 3339), for the policy and `max_age`.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// Where fetched repos are cached (default: beside the state file).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Check that images and containers recorded in state are still there and as recorded;
    /// steps whose outputs drifted run again.
    #[arg(long)]
    pub refresh: bool,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A plan saved with `plan -out`.
    #[arg(conflicts_with = "file", required_unless_present = "file")]
    pub planfile: Option<PathBuf>,
    /// Plan this plan file now and apply after confirmation.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long = "auto-approve")]
    pub auto_approve: bool,
    /// Steps running at once.
    #[arg(long, default_value_t = 10)]
    pub parallelism: usize,
    /// Wait this long for the state lock (e.g. 30s, 5m).
    #[arg(long = "lock-timeout", default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: crate::config::HumanDuration,
    /// Time between SIGTERM and SIGKILL for a step being stopped.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub grace: crate::config::HumanDuration,
    /// One JSON object per event on stdout.
    #[arg(long)]
    pub json: bool,
    /// Which cycle, with -f: partial, full, or auto.
    #[arg(long, value_enum, default_value_t = CycleRequest::Auto)]
    pub cycle: CycleRequest,
    /// Where fetched repos are cached, with -f.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// With -f: plan as if it were this time (RFC 3339), for the policy and `max_age`.
    #[arg(long, value_name = "RFC3339", requires = "file")]
    pub at: Option<String>,
    /// Post no PR comment and no commit status (also `notify: { enabled: false }`).
    #[arg(long = "no-notify")]
    pub no_notify: bool,
}

#[derive(Debug, Subcommand)]
pub enum ExclusionsAction {
    /// Re-admit an excluded change (by exclusion ID).
    Clear { id: String },
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Deployed revisions, cycle times, the current run.
    Show {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The state JSON as it is.
        #[arg(long)]
        json: bool,
    },
    /// The last runs with per-step results and durations.
    History {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// How many runs.
        #[arg(short = 'n', long, default_value_t = 10)]
        count: usize,
        #[arg(long)]
        json: bool,
    },
}

fn parse_duration(text: &str) -> Result<crate::config::HumanDuration, String> {
    crate::config::HumanDuration::parse(text)
}

/// Terraform writes long options with one dash (`-out`, `-detailed-exitcode`); accept both.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    const LONG: &[&str] = &[
        "out",
        "detailed-exitcode",
        "json",
        "no-color",
        "cycle",
        "at",
        "refresh",
        "auto-approve",
        "parallelism",
        "lock-timeout",
        "target",
        "file",
        "plan",
        "cache-dir",
        "grace",
        "no-notify",
    ];
    args.into_iter()
        .map(|arg| {
            let Some(rest) = arg.strip_prefix('-') else {
                return arg;
            };
            if rest.starts_with('-') {
                return arg;
            }
            let name = rest.split('=').next().unwrap_or(rest);
            if LONG.contains(&name) {
                format!("-{arg}")
            } else {
                arg
            }
        })
        .collect()
}

/// Whether to colour output written to stdout.
fn use_color(cli_no_color: bool) -> bool {
    !cli_no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// Run the command line; errors come back as miette reports.
pub fn run(cli: Cli) -> Result<ExitStatus> {
    let color = use_color(cli.no_color);
    match cli.command {
        Command::Plan(args) => cmd_plan(args, color),
        Command::Validate { file } => {
            let config = Config::load(&file)?;
            let f = &config.file;
            println!(
                "{}: valid plan file `{}` ({} repo(s), {} component(s), {} step(s))",
                file.display(),
                f.name,
                f.repos.len(),
                f.components.len(),
                f.steps.len()
            );
            Ok(ExitStatus::Success)
        }
        Command::Graph { file, plan } => {
            let config = Config::load(&file)?;
            let saved = plan.map(|p| read_saved_plan(&p)).transpose()?;
            print!("{}", planner::render::dot(&config, saved.as_ref()));
            Ok(ExitStatus::Success)
        }
        Command::Schema { reference } => {
            if reference {
                print!("{}", crate::schema::reference_markdown());
            } else {
                println!("{}", crate::schema::plan_schema_json());
            }
            Ok(ExitStatus::Success)
        }
        Command::Show { planfile, json } => {
            let plan = read_saved_plan(&planfile)?;
            if json {
                println!("{}", to_json(&plan)?);
            } else {
                print!("{}", planner::render::text(&plan, color));
            }
            Ok(ExitStatus::Success)
        }
        Command::Apply(args) => cmd_apply(args, color),
        Command::Run {
            file,
            at,
            no_notify,
            lock_timeout,
        } => cmd_run(file, at, no_notify, lock_timeout, color),
        Command::Serve {
            file,
            listen,
            no_notify,
            parallelism,
            grace,
            lock_timeout,
        } => crate::server::serve::serve(crate::server::serve::ServeOptions {
            file,
            listen,
            notify: !no_notify,
            parallelism,
            grace: grace.0,
            lock_timeout: lock_timeout.0,
        }),
        Command::State(cmd) => cmd_state(cmd),
        Command::ForceUnlock { id, file } => {
            let config = Config::load(&file)?;
            let info = crate::state::lock::force_unlock(&config.state_path(), &id)?;
            println!("Removed the {info}.");
            Ok(ExitStatus::Success)
        }
        Command::Blame { file, json, .. } => {
            let config = Config::load(&file)?;
            let state = LocalState::new(config.state_path())
                .read()?
                .unwrap_or_default();
            let Some(last) = state.blames.last() else {
                println!("No bisection yet.");
                return Ok(ExitStatus::Success);
            };
            if json {
                println!("{}", serde_json::to_string_pretty(last).into_diagnostic()?);
            } else {
                print!("{}", crate::state::render::blame(last));
            }
            Ok(ExitStatus::Success)
        }
        Command::Exclusions { file, action, json } => {
            let config = Config::load(&file)?;
            let backend = LocalState::new(config.state_path());
            match action {
                None => {
                    let state = backend.read()?.unwrap_or_default();
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&state.exclusions).into_diagnostic()?
                        );
                    } else {
                        print!("{}", crate::state::render::exclusions(&state.exclusions));
                    }
                }
                Some(ExclusionsAction::Clear { id }) => {
                    let lock = crate::state::StateLock::acquire(
                        &backend.path,
                        "exclusions clear",
                        std::time::Duration::from_secs(10),
                    )?;
                    let mut state = backend.read()?.unwrap_or_default();
                    let before = state.exclusions.len();
                    state.exclusions.retain(|e| e.id != id);
                    if state.exclusions.len() == before {
                        miette::bail!(
                            help = "`kcideploy exclusions -f PLAN` lists them",
                            "no exclusion with ID {id}"
                        );
                    }
                    backend.write(&mut state)?;
                    drop(lock);
                    println!(
                        "Cleared exclusion {id}: the change is merged again from the next plan on."
                    );
                }
            }
            Ok(ExitStatus::Success)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "kcideploy", &mut out);
            // A closed pipe (`| head`) is not an error.
            let _ = std::io::stdout().write_all(&out);
            Ok(ExitStatus::Success)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .into_diagnostic()?;
            let _ = std::io::stdout().write_all(&out);
            Ok(ExitStatus::Success)
        }
        Command::Demo { dir } => crate::demo::run(dir.as_deref(), color),
    }
}

/// Load, lock, check or make the plan, confirm, apply.
fn cmd_apply(args: ApplyArgs, color: bool) -> Result<ExitStatus> {
    use crate::apply::events::{JsonReporter, PlainReporter, Reporter, TtyReporter};
    let saved = args.planfile.as_deref().map(read_saved_plan).transpose()?;
    let plan_path = match (&args.file, &saved) {
        (Some(f), _) => f.clone(),
        (None, Some(p)) => PathBuf::from(&p.plan_file),
        (None, None) => miette::bail!("give a saved plan, or -f PLAN.yaml"),
    };
    let config = Config::load(&plan_path)?;
    let backend = LocalState::new(config.state_path());
    let lock = crate::state::StateLock::acquire(&backend.path, "apply", args.lock_timeout.0)?;
    let state = backend.read()?;
    let plan = match saved {
        Some(saved) => {
            let cache = PathBuf::from(&saved.cache_dir);
            let snapshot = crate::forge::snapshot(&config, &cache)?;
            let request = CycleRequest::from(saved.cycle);
            let fresh = planner::plan(
                &config,
                &snapshot,
                state.as_ref(),
                PlanOptions {
                    cycle: request,
                    now: saved.planned_at,
                },
            )?;
            let own_serial = state
                .as_ref()
                .and_then(|s| s.current_run.as_ref())
                .is_some_and(|r| {
                    r.plan_digest == saved.fingerprint.digest
                        && r.start_serial == saved.fingerprint.state_serial
                });
            let moved = crate::apply::stale::differences(
                &saved.fingerprint,
                &fresh.fingerprint,
                own_serial,
            );
            if !moved.is_empty() {
                miette::bail!(
                    help = format!(
                        "plan again (kcideploy plan -f {} -out FILE) and apply the new plan",
                        plan_path.display()
                    ),
                    "the saved plan is stale; since it was made:\n  - {}",
                    moved.join("\n  - ")
                );
            }
            saved
        }
        None => {
            let now = parse_now(args.at.as_deref())?;
            let cache = args
                .cache_dir
                .clone()
                .unwrap_or_else(|| crate::forge::default_cache_dir(&config));
            let snapshot = crate::forge::snapshot(&config, &cache)?;
            let plan = planner::plan(
                &config,
                &snapshot,
                state.as_ref(),
                PlanOptions {
                    cycle: args.cycle,
                    now,
                },
            )?;
            if !args.json {
                print!("{}", planner::render::text(&plan, color));
            }
            if plan.has_changes() && !args.auto_approve {
                confirm()?;
            }
            plan
        }
    };
    let mut reporter: Box<dyn Reporter> = if args.json {
        Box::new(JsonReporter)
    } else if std::io::stdout().is_terminal() {
        Box::new(TtyReporter::new())
    } else {
        Box::new(PlainReporter::default())
    };
    let opts = crate::apply::ApplyOptions {
        parallelism: args.parallelism,
        grace: args.grace.0,
        auto_approve: args.auto_approve,
        ..Default::default()
    };
    let notify = !args.no_notify && crate::notify::wanted(&config);
    let mut narrator = CliNarrator {
        json: args.json,
        color,
    };
    let crate::deploy::Deployed { report, .. } = crate::deploy::apply_with_blame(
        &config,
        plan,
        &backend,
        &lock,
        crate::deploy::DeployOptions {
            apply: opts,
            notify,
        },
        reporter.as_mut(),
        &mut narrator,
    )?;
    drop(lock);
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

/// `run`: nothing to do (0), held back by the cooldown (3), else apply (2 applied, 1 failed).
fn cmd_run(
    file: PathBuf,
    at: Option<String>,
    no_notify: bool,
    lock_timeout: crate::config::HumanDuration,
    color: bool,
) -> Result<ExitStatus> {
    let now = parse_now(at.as_deref())?;
    let config = Config::load(&file)?;
    let state = LocalState::new(config.state_path()).read()?;
    let plan = make_plan(&file, CycleRequest::Auto, now, None)?;
    if plan.is_deployed() {
        println!(
            "Nothing to do: {} is deployed as planned ({} cycle).",
            plan.name,
            plan.cycle.as_str()
        );
        return Ok(ExitStatus::Success);
    }
    let last_end = state
        .as_ref()
        .and_then(|s| s.history.iter().filter_map(|r| r.finished_at).max());
    if let Some(end) = last_end {
        let cooldown = config.file.policy.cooldown;
        let ready = end.as_second() + cooldown.as_secs() as i64;
        if now.as_second() < ready {
            println!(
                "Held back by the policy: the last deploy ended {} ago, cooldown is {cooldown}; next deploy from {}.",
                crate::support::text::age(now.as_second() - end.as_second()),
                Timestamp::from_second(ready).unwrap_or(now)
            );
            return Ok(ExitStatus::HeldBack);
        }
    }
    let args = ApplyArgs {
        planfile: None,
        file: Some(file),
        auto_approve: true,
        parallelism: 10,
        lock_timeout,
        grace: crate::config::HumanDuration::from_secs(10),
        json: false,
        cycle: CycleRequest::from(plan.cycle),
        cache_dir: None,
        at,
        no_notify,
    };
    Ok(match cmd_apply(args, color)? {
        ExitStatus::Success => ExitStatus::Changes,
        other => other,
    })
}

/// Ask on the terminal; only `yes` goes on.
fn confirm() -> Result<()> {
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

fn cmd_state(cmd: StateCommand) -> Result<ExitStatus> {
    let (file, json) = match &cmd {
        StateCommand::Show { file, json } | StateCommand::History { file, json, .. } => {
            (file, *json)
        }
    };
    let config = Config::load(file)?;
    let path = config.state_path();
    let Some(state) = LocalState::new(&path).read()? else {
        println!("No state at {}: nothing was applied yet.", path.display());
        return Ok(ExitStatus::Success);
    };
    match cmd {
        StateCommand::Show { .. } if json => println!(
            "{}",
            serde_json::to_string_pretty(&state).into_diagnostic()?
        ),
        StateCommand::Show { .. } => print!("{}", crate::state::render::show(&state, &path)),
        StateCommand::History { count, .. } => {
            let runs: Vec<_> = state.history.iter().rev().take(count).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&runs).into_diagnostic()?);
            } else {
                print!("{}", crate::state::render::history(&runs));
            }
        }
    }
    Ok(ExitStatus::Success)
}

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

/// Load, fetch, plan: everything `plan` and `demo` share.
pub fn make_plan(
    file: &Path,
    cycle: CycleRequest,
    now: Timestamp,
    cache_dir: Option<&Path>,
) -> Result<Plan> {
    make_plan_refreshed(file, cycle, now, cache_dir, false)
}

/// [`make_plan`], with `refresh`: check recorded Docker outputs for drift first.
pub fn make_plan_refreshed(
    file: &Path,
    cycle: CycleRequest,
    now: Timestamp,
    cache_dir: Option<&Path>,
    refresh: bool,
) -> Result<Plan> {
    let config = Config::load(file)?;
    let state = LocalState::new(config.state_path()).read()?;
    let cache = cache_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate::forge::default_cache_dir(&config));
    let snapshot = crate::forge::snapshot(&config, &cache)?;
    let drift = match (&state, refresh) {
        (Some(state), true) => detect_drift(&config, state)?,
        _ => Default::default(),
    };
    let plan = planner::plan_with_drift(
        &config,
        &snapshot,
        state.as_ref(),
        PlanOptions { cycle, now },
        &drift,
    )?;
    Ok(plan)
}

/// Steps whose recorded outputs (images, containers) are no longer as recorded.
fn detect_drift(
    config: &Config,
    state: &crate::state::State,
) -> Result<std::collections::BTreeMap<String, String>> {
    let with_outputs: Vec<(String, serde_json::Value)> = state
        .steps
        .iter()
        .filter(|(name, record)| {
            config.file.steps.contains_key(*name) && record.result == "success"
        })
        .filter_map(|(name, record)| record.outputs.clone().map(|o| (name.clone(), o)))
        .collect();
    if with_outputs.is_empty() {
        return Ok(Default::default());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .into_diagnostic()?;
    runtime.block_on(async {
        let docker = crate::apply::kinds::docker::connect()
            .await
            .map_err(|e| miette::miette!("-refresh needs the Docker daemon: {e}"))?;
        let mut drift = std::collections::BTreeMap::new();
        for (name, outputs) in with_outputs {
            if let Some(detail) = crate::apply::kinds::docker::drift(&docker, &outputs).await {
                drift.insert(name, detail);
            }
        }
        Ok(drift)
    })
}

fn cmd_plan(args: PlanArgs, color: bool) -> Result<ExitStatus> {
    let now = parse_now(args.at.as_deref())?;
    let plan = make_plan_refreshed(
        &args.file,
        args.cycle,
        now,
        args.cache_dir.as_deref(),
        args.refresh,
    )?;
    if let Some(out) = &args.out {
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

fn to_json(plan: &Plan) -> Result<String> {
    serde_json::to_string_pretty(plan).into_diagnostic()
}

/// Read a plan saved with `-out`, checking its format version and fingerprint digest.
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
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::normalize_args;

    #[test]
    fn single_dash_long_options() {
        let args = [
            "kcideploy",
            "plan",
            "-f",
            "x.yaml",
            "-out",
            "p.json",
            "-detailed-exitcode",
            "-out=q",
            "--json",
        ]
        .map(String::from);
        assert_eq!(
            normalize_args(args),
            [
                "kcideploy",
                "plan",
                "-f",
                "x.yaml",
                "--out",
                "p.json",
                "--detailed-exitcode",
                "--out=q",
                "--json"
            ]
        );
    }
}
