//! The command line: one file per verb, each thin: parse (clap, [`args`]), call the library,
//! render, map errors to exit codes.

mod adopt;
mod apply;
pub mod args;
mod demo;
mod inspect;
mod plan;
pub mod promote;
mod rollback;
pub mod rootfs;
mod run;
mod state;

use std::io::IsTerminal;

use miette::Result;

pub use args::{
    ApplyArgs, Cli, Command, CoverageArgs, ExclusionsAction, PlanArgs, RollbackArgs, ScopeArgs,
    StateCommand, normalize_args,
};
pub use plan::{parse_now, read_saved_plan};

use crate::exit::ExitStatus;

/// Whether to colour output written to stdout.
fn use_color(cli_no_color: bool) -> bool {
    !cli_no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// Run the command line; errors come back as miette reports.
pub fn run(cli: Cli) -> Result<ExitStatus> {
    let color = use_color(cli.no_color);
    match cli.command {
        Command::Plan(args) => plan::cmd_plan(args, color),
        Command::Validate {
            file,
            strict,
            offline,
            cache_dir,
        } => inspect::validate(&file, strict.then_some((offline, cache_dir.as_deref()))),
        Command::Coverage(args) => inspect::coverage(args),
        Command::Graph { file, plan } => inspect::graph(&file, plan.as_deref()),
        Command::Schema {
            reference,
            included,
        } => inspect::schema(reference, included),
        Command::Show { planfile, json } => inspect::show(&planfile, json, color),
        Command::Apply(args) => apply::cmd_apply(args, color),
        Command::Run {
            file,
            at,
            no_notify,
            lock_timeout,
            scope,
        } => run::cmd_run(file, at, no_notify, lock_timeout, scope.to_scope(), color),
        Command::Rollback(args) => rollback::cmd_rollback(args, color),
        Command::Promote(args) => promote::cmd_promote(args, color),
        Command::PromoteRootfs(args) => rootfs::cmd_promote_rootfs(args),
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
        Command::State(cmd) => state::cmd_state(cmd),
        Command::ForceUnlock { id, file, force } => state::force_unlock(&file, &id, force),
        Command::Blame { file, json, .. } => state::blame(&file, json),
        Command::Exclusions { file, action, json } => state::exclusions(&file, action, json),
        Command::Resume { file } => state::resume(&file),
        Command::Completions { shell } => inspect::completions(shell),
        Command::Man { dir } => inspect::man(dir.as_deref()),
        Command::Demo { dir } => demo::run(dir.as_deref(), color),
    }
}
