//! `state migrate --to BACKEND`: copy a plan's state to another backend (see
//! [`crate::state::migrate`]).

use std::path::PathBuf;

use miette::Result;

use crate::config::Config;
use crate::exit::ExitStatus;
use crate::state::Backend;

/// Copy the state to another backend: lineage, serial and history (a target holding
/// another lineage, or a newer serial, is refused). The plan file's backend is unchanged:
/// point `state.backend` (or KCIDEPLOY_BACKEND) at the target afterwards.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// `postgres://USER@HOST:PORT/DATABASE` (the password from the environment, as for
    /// `state.backend`), `local` (the plan's state file) or `local:PATH`.
    #[arg(long = "to", value_name = "BACKEND")]
    pub to: String,
    /// Wait for the locks of both states this long.
    #[arg(long = "lock-timeout", default_value = "0s", value_parser = super::args::parse_duration)]
    pub lock_timeout: crate::config::HumanDuration,
}

/// `state migrate --to BACKEND`: copy the state there, under both locks.
pub fn cmd_migrate(args: &MigrateArgs) -> Result<ExitStatus> {
    let (file, to) = (args.file.as_path(), args.to.as_str());
    use crate::state::migrate::Migrated;
    let config = Config::load(file)?;
    let from = Backend::open(&config)?;
    let target = match to.strip_prefix("local:") {
        Some(path) => Backend::local(path),
        None => Backend::of(
            config.backend_named(to, "--to")?,
            &config.file.name,
            config.state_path(),
        )?,
    };
    let _from_lock = from
        .lock("state migrate", args.lock_timeout.0)
        .map_err(|e| e.for_plan(file))?;
    let _to_lock = target
        .lock("state migrate", args.lock_timeout.0)
        .map_err(|e| e.for_plan(file))?;
    match crate::state::migrate::migrate(&from, &target)? {
        Migrated::Copied { serial, runs } => println!(
            "Copied the state (serial {serial}, {runs} run(s) of history) from the {} to the {}.\nPoint `state.backend` (or KCIDEPLOY_BACKEND) at it to use it; the {} is left as it was.",
            from.describe(),
            target.describe(),
            from.describe()
        ),
        Migrated::AlreadyThere { serial } => println!(
            "The {} already holds this state at serial {serial}: nothing to copy.",
            target.describe()
        ),
    }
    Ok(ExitStatus::Success)
}
