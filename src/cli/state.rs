//! Verbs on the state: `state show|history`, `force-unlock`, `blame`, `exclusions`; `state
//! adopt` is in adopt.rs.

use std::path::Path;

use miette::{IntoDiagnostic, Result};

use super::args::{ExclusionsAction, StateCommand};
use crate::config::Config;
use crate::exit::ExitStatus;
use crate::state::Backend;

pub fn cmd_state(cmd: StateCommand) -> Result<ExitStatus> {
    let (file, json) = match &cmd {
        StateCommand::Show { file, json } | StateCommand::History { file, json, .. } => {
            (file, *json)
        }
        StateCommand::Adopt(args) => return super::adopt::cmd_adopt(args),
        StateCommand::Migrate(args) => return super::migrate::cmd_migrate(args),
    };
    let config = Config::load(file)?;
    let backend = Backend::open(&config)?;
    let Some(state) = backend.read()? else {
        // `--json` output is always one JSON document: no state is `null`, no runs `[]`.
        match (&cmd, json) {
            (StateCommand::Show { .. }, true) => println!("null"),
            (StateCommand::History { .. }, true) => println!("[]"),
            _ => println!(
                "No state in the {}: nothing was applied yet.",
                backend.describe()
            ),
        }
        return Ok(ExitStatus::Success);
    };
    match cmd {
        StateCommand::Show { .. } if json => println!(
            "{}",
            serde_json::to_string_pretty(&state).into_diagnostic()?
        ),
        StateCommand::Show { .. } => {
            let location = match &backend {
                Backend::Local(local) => local.path.display().to_string(),
                other => other.describe(),
            };
            print!("{}", crate::state::render::show(&state, &location));
        }
        StateCommand::Adopt(_) | StateCommand::Migrate(_) => {}
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

pub fn force_unlock(file: &Path, id: &str, force: bool) -> Result<ExitStatus> {
    let config = Config::load(file)?;
    let info = Backend::open(&config)?.force_unlock(id, force)?;
    println!("Removed the {info}.");
    Ok(ExitStatus::Success)
}

pub fn blame(file: &Path, json: bool) -> Result<ExitStatus> {
    let config = Config::load(file)?;
    let state = Backend::open(&config)?.read()?.unwrap_or_default();
    let Some(last) = state.blames.last() else {
        println!("{}", if json { "null" } else { "No bisection yet." });
        return Ok(ExitStatus::Success);
    };
    if json {
        println!("{}", serde_json::to_string_pretty(last).into_diagnostic()?);
    } else {
        print!("{}", crate::state::render::blame(last));
    }
    Ok(ExitStatus::Success)
}

pub fn exclusions(file: &Path, action: Option<ExclusionsAction>, json: bool) -> Result<ExitStatus> {
    let config = Config::load(file)?;
    let backend = Backend::open(&config)?;
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
            let lock = backend
                .lock("exclusions clear", std::time::Duration::from_secs(10))
                .map_err(|e| e.for_plan(file))?;
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
            println!("Cleared exclusion {id}: the change is merged again from the next plan on.");
        }
    }
    Ok(ExitStatus::Success)
}

/// `kcideploy resume`: scale back what a stop-the-line step paused, under the state lock.
pub fn resume(file: &Path) -> Result<ExitStatus> {
    let config = Config::load(file)?;
    let backend = Backend::open(&config)?;
    let lock = backend
        .lock("resume", std::time::Duration::from_secs(10))
        .map_err(|e| e.for_plan(file))?;
    let Some(mut state) = backend.read()? else {
        println!("Nothing is paused: no state yet.");
        return Ok(ExitStatus::Success);
    };
    let lines =
        crate::apply::resume::resume(&config, &mut state).map_err(|e| miette::miette!(e))?;
    if lines.is_empty() {
        println!("Nothing is paused.");
        return Ok(ExitStatus::Success);
    }
    backend.write(&mut state)?;
    drop(lock);
    for line in &lines {
        println!("{line}");
    }
    println!("Resumed: the line runs again.");
    Ok(ExitStatus::Success)
}
