//! The command line's clap definitions and Terraform-style single-dash options.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::planner::CycleRequest;

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

const EXAMPLES_PLAN: &str = "Examples:
  kcideploy plan -f plans/staging.yaml
  kcideploy plan -f plans/staging.yaml --cycle full -out plan.json
  kcideploy plan -f plans/staging.yaml -detailed-exitcode --json
  kcideploy plan -f plans/staging.yaml --explain-paths";
const EXAMPLES_VALIDATE: &str = "Examples:
  kcideploy validate -f plans/staging.yaml
  kcideploy validate -f plans/staging.yaml --strict --offline";
const EXAMPLES_COVERAGE: &str = "Examples:
  kcideploy coverage -f plans/staging.yaml
  kcideploy coverage -f plans/staging.yaml --offline --json";
const EXAMPLES_GRAPH: &str = "Examples:
  kcideploy graph -f plans/staging.yaml | dot -Tsvg > graph.svg
  kcideploy graph -f plans/staging.yaml --plan plan.json";
const EXAMPLES_SCHEMA: &str = "Examples:
  kcideploy schema > plan.schema.json
  kcideploy schema --reference
  kcideploy schema --included > include.schema.json";
const EXAMPLES_SHOW: &str = "Examples:
  kcideploy show plan.json
  kcideploy show --json plan.json";
const EXAMPLES_APPLY: &str = "Examples:
  kcideploy plan -f plans/staging.yaml -out plan.json && kcideploy apply plan.json
  kcideploy apply -f plans/staging.yaml -auto-approve --cycle partial";
const EXAMPLES_RUN: &str = "Examples:
  kcideploy run -f plans/staging.yaml      # cron or CI: 0 nothing, 2 applied, 3 held back";
const EXAMPLES_ROLLBACK: &str = "Examples:
  kcideploy rollback -f plans/staging.yaml -plan-only
  kcideploy rollback -f plans/staging.yaml 20261124T080000Z-1a2b3c -auto-approve";
const EXAMPLES_SERVE: &str = "Examples:
  kcideploy serve -f plans/staging.yaml --listen 127.0.0.1:8080
  curl http://127.0.0.1:8080/status";
const EXAMPLES_STATE: &str = "Examples:
  kcideploy state show -f plans/staging.yaml
  kcideploy state history -f plans/staging.yaml --json
  kcideploy state adopt -f plans/staging.yaml
  kcideploy state adopt -f plans/staging.yaml -rev kernelci-api=1f2e3d4c... -auto-approve";
const EXAMPLES_FORCE_UNLOCK: &str = "Examples:
  kcideploy force-unlock 3f2a9c1d0b7e4a65 -f plans/staging.yaml";
const EXAMPLES_BLAME: &str = "Examples:
  kcideploy blame -f plans/staging.yaml
  kcideploy blame -f plans/staging.yaml --json";
const EXAMPLES_EXCLUSIONS: &str = "Examples:
  kcideploy exclusions -f plans/staging.yaml
  kcideploy exclusions -f plans/staging.yaml clear 1a2b3c4d";
const EXAMPLES_PROMOTE: &str = "Examples:
  kcideploy promote -f plans/production.yaml --from plans/staging.yaml -plan-only
  kcideploy promote -f plans/production.yaml --from plans/staging.yaml -rev kernelci-api=1a2b3c4";
const EXAMPLES_RESUME: &str = "Examples:
  kcideploy resume -f plans/production.yaml";
const EXAMPLES_COMPLETIONS: &str = "Examples:
  kcideploy completions bash > /etc/bash_completion.d/kcideploy";
const EXAMPLES_MAN: &str = "Examples:
  kcideploy man | man -l -
  kcideploy man --dir /usr/local/share/man/man1";
const EXAMPLES_DEMO: &str = "Examples:
  kcideploy demo
  kcideploy demo --dir /tmp/kcideploy-demo";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what a deploy would do, and why.
    #[command(after_help = EXAMPLES_PLAN)]
    Plan(PlanArgs),
    /// Check a plan file: syntax, names, globs, dependency cycles.
    #[command(after_help = EXAMPLES_VALIDATE)]
    Validate {
        /// The plan file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Also check coverage (as `coverage` does; fetches): exit 4 when a file of a repo
        /// is in no component and no `ignore:` glob.
        #[arg(long)]
        strict: bool,
        /// With --strict: the repos as last fetched into the cache, without the network.
        #[arg(long, requires = "strict")]
        offline: bool,
        /// With --strict: where fetched repos are cached (default: beside the state file).
        #[arg(long, value_name = "DIR", requires = "strict")]
        cache_dir: Option<PathBuf>,
    },
    /// Check that every file of each repo's staging revision is in a component or ignored
    /// with a reason (`repos.<name>.ignore`). Exit 4 when some are not, listed per repo.
    #[command(after_help = EXAMPLES_COVERAGE)]
    Coverage(CoverageArgs),
    /// Print the step graph as Graphviz DOT.
    #[command(after_help = EXAMPLES_GRAPH)]
    Graph {
        /// The plan file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// A plan saved with `plan -out`: mark the steps it runs.
        #[arg(long)]
        plan: Option<PathBuf>,
    },
    /// Print the JSON schema of plan files (draft-07).
    #[command(after_help = EXAMPLES_SCHEMA)]
    Schema {
        /// Print the plan file reference (Markdown) instead, as in the README.
        #[arg(long, conflicts_with = "included")]
        reference: bool,
        /// Print the schema of files that plan files include (`include:`) instead.
        #[arg(long)]
        included: bool,
    },
    /// Show a plan saved with `plan -out`.
    #[command(after_help = EXAMPLES_SHOW)]
    Show {
        /// The saved plan.
        planfile: PathBuf,
        /// Print the plan JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a saved plan, or plan and run after confirmation.
    #[command(after_help = EXAMPLES_APPLY)]
    Apply(ApplyArgs),
    /// One-shot for cron or CI: plan, obey the policy, apply, notify.
    /// Exit: 0 nothing to do, 1 failed, 2 applied, 3 held back by the policy.
    #[command(after_help = EXAMPLES_RUN)]
    Run {
        /// The plan file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Decide the policy as if it were this time (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
        /// Post no PR comment, commit status or chat message.
        #[arg(long = "no-notify")]
        no_notify: bool,
        /// Wait this long for the state lock.
        #[arg(long = "lock-timeout", default_value = "5m", value_parser = parse_duration)]
        lock_timeout: crate::config::HumanDuration,
        /// `-target STEP` and `-replace STEP` as for `plan`.
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Deploy again what an earlier successful run deployed: its revisions (pending changes
    /// left out), and so the images built from them. Only steps whose inputs differ run.
    #[command(after_help = EXAMPLES_ROLLBACK)]
    Rollback(RollbackArgs),
    /// Production deploys what staging tested: each repo at the revision the last staging
    /// run whose full cycle passed was built on; a revision staging did not pass is refused.
    #[command(after_help = EXAMPLES_PROMOTE)]
    Promote(super::promote::PromoteArgs),
    /// Open a PR against the configuration repo with the rootfs URLs that passed on staging.
    #[command(name = "promote-rootfs", after_help = super::rootfs::EXAMPLES)]
    PromoteRootfs(super::rootfs::PromoteRootfsArgs),
    /// Long-running service: GitHub webhooks, the staging policy, `@kcibot` commands,
    /// `/status` and `/metrics`. SIGTERM stops the running deploy cleanly.
    #[command(after_help = EXAMPLES_SERVE)]
    Serve {
        /// The plan file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Address to listen on (port 0: any free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Post no PR comment, commit status or chat message after deploys (the bot still replies).
        #[arg(long = "no-notify")]
        no_notify: bool,
        /// Steps running at once.
        #[arg(long, default_value_t = 10, value_parser = at_least_one)]
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
    #[command(after_help = EXAMPLES_STATE)]
    State(StateCommand),
    /// Remove the state lock ID left by a run that is gone for good.
    #[command(after_help = EXAMPLES_FORCE_UNLOCK)]
    ForceUnlock {
        /// The lock ID, as named by the error.
        id: String,
        /// The plan file whose state is locked.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Remove the lock even though its holder still runs on this host.
        #[arg(long)]
        force: bool,
    },
    /// Explain the last bisection.
    #[command(after_help = EXAMPLES_BLAME)]
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
    #[command(after_help = EXAMPLES_EXCLUSIONS)]
    Exclusions {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(subcommand)]
        action: Option<ExclusionsAction>,
        #[arg(long)]
        json: bool,
    },
    /// Give back what a stop-the-line step paused (Deployments scaled by `with.scale`).
    #[command(after_help = EXAMPLES_RESUME)]
    Resume {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    #[command(after_help = EXAMPLES_COMPLETIONS)]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), or write one page per subcommand into a directory.
    #[command(after_help = EXAMPLES_MAN)]
    Man {
        /// Write kcideploy.1 and kcideploy-<subcommand>.1 pages here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Make local repos with pending branches, plan, apply, and plan again.
    #[command(after_help = EXAMPLES_DEMO)]
    Demo {
        /// Directory to create the demo in (default: a new temporary directory, kept).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct CoverageArgs {
    /// The plan file.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// The repos as last fetched into the cache, without the network (git forge: with the
    /// pending branches fetched then; github: the base revision).
    #[arg(long)]
    pub offline: bool,
    /// Where fetched repos are cached (default: beside the state file).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The plan file.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print what a change to each component triggers (Markdown table; from the plan file
    /// alone, nothing fetched) instead of planning.
    #[arg(
        long = "explain-paths",
        conflicts_with_all = ["json", "out", "detailed_exitcode", "at", "cache_dir", "refresh", "diff", "target", "replace"]
    )]
    pub explain_paths: bool,
    /// Preview one pending change (`REPO#N`, or `REPO#BRANCH` for a git forge): what it alone
    /// would trigger and whether it merges with the others, as its PR comment says.
    #[arg(
        long = "pr",
        value_name = "REPO#N",
        conflicts_with_all = ["json", "out", "detailed_exitcode", "refresh", "diff", "target", "replace", "explain_paths"]
    )]
    pub pr: Option<String>,
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
    /// Under each affected component, the diff of every changed file it matched.
    #[arg(long)]
    pub diff: bool,
    /// With --diff: at most this many diff lines per file.
    #[arg(long = "diff-lines", value_name = "N", default_value_t = 40, value_parser = at_least_one)]
    pub diff_lines: usize,
    /// Compare what state records each step made (images, containers and the image each
    /// runs, registry manifests, pushed branches and tags) with the live system; steps whose
    /// outcome drifted run again.
    #[arg(long)]
    pub refresh: bool,
    #[command(flatten)]
    pub scope: ScopeArgs,
}

/// `-target` and `-replace`, Terraform's meaning.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScopeArgs {
    /// Plan only this step and the steps it needs (transitively, and the `git_push` steps
    /// publishing the revisions it uses); repeatable. The plan is partial: repos with
    /// triggered steps left out keep their deployed revision.
    #[arg(long = "target", value_name = "STEP")]
    pub target: Vec<String>,
    /// Run this step although nothing it depends on changed (even when it finished before
    /// with the same inputs); repeatable. Steps needing it are planned by the usual rules.
    #[arg(long = "replace", value_name = "STEP")]
    pub replace: Vec<String>,
}

impl ScopeArgs {
    pub fn to_scope(&self) -> crate::state::RunScope {
        crate::state::RunScope {
            targets: dedup(&self.target),
            replace: dedup(&self.replace),
            rollback_of: None,
            promoted_from: None,
        }
    }
}

/// In the order given, each name once.
fn dedup(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
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
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
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
    /// Post no PR comment, commit status or chat message (also `notify: { enabled: false }`).
    #[arg(long = "no-notify")]
    pub no_notify: bool,
    /// With -f: plan with `-refresh` (steps whose outcome drifted run again). A saved plan
    /// already holds what `plan -refresh -out` found.
    #[arg(long)]
    pub refresh: bool,
    /// With -f: `-target STEP` and `-replace STEP` as for `plan` (a saved plan keeps those it
    /// was made with).
    #[command(flatten)]
    pub scope: ScopeArgs,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The run whose revisions to deploy (`state history` lists them; default: the last
    /// successful run, not a `-target` one, before the newest that deployed other revisions
    /// than those deployed).
    pub run_id: Option<String>,
    /// The plan file.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print the rollback's plan and stop.
    #[arg(long = "plan-only", conflicts_with = "auto_approve")]
    pub plan_only: bool,
    /// Do not ask for confirmation.
    #[arg(long = "auto-approve")]
    pub auto_approve: bool,
    /// With -plan-only: print the plan JSON; else one JSON object per event.
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
    /// Which cycle: partial (only steps whose inputs differ), full, or auto (ask the policy).
    #[arg(long, value_enum, default_value_t = CycleRequest::Partial)]
    pub cycle: CycleRequest,
    /// Where fetched repos are cached (default: beside the state file).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Post no PR comment and no commit status.
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
    /// Record what already runs as deployed, running no step (Terraform's import).
    Adopt(AdoptArgs),
}

#[derive(Debug, clap::Args)]
pub struct AdoptArgs {
    /// The plan file.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Adopt REPO at REVISION (a commit SHA or a branch of the repo) instead of its staging
    /// branch's revision; once per repo.
    #[arg(long = "rev", value_name = "REPO=REVISION")]
    pub rev: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(long = "auto-approve")]
    pub auto_approve: bool,
    /// Adopt although state exists: its deployed revisions, step records and current run
    /// are replaced (its history, exclusions and approvals are kept; the state before is
    /// kept in `<state>.backup`).
    #[arg(long = "replace-state")]
    pub replace_state: bool,
    /// Where fetched repos are cached (default: beside the state file).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Wait this long for the state lock (e.g. 30s, 5m).
    #[arg(long = "lock-timeout", default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: crate::config::HumanDuration,
}

/// A count that must be at least 1 (`-parallelism`).
pub(super) fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a number: {e}")),
    }
}

pub(super) fn parse_duration(text: &str) -> Result<crate::config::HumanDuration, String> {
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
        "strict",
        "offline",
        "explain-paths",
        "diff",
        "diff-lines",
        "rev",
        "replace-state",
        "replace",
        "plan-only",
        "dry-run",
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
