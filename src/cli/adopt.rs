//! `state adopt`: fetch, read back what runs, show what will be recorded, confirm, write
//! state under its lock. And the list of adopted steps whose outcome is unknown that `plan`
//! prints.

use std::io::{IsTerminal, Write};

use jiff::Timestamp;
use miette::{IntoDiagnostic, Result};

use super::args::AdoptArgs;
use crate::apply::adopt;
use crate::exit::ExitStatus;
use crate::state::State;
use crate::workspace::Workspace;

pub fn cmd_adopt(args: &AdoptArgs) -> Result<ExitStatus> {
    if !args.auto_approve && !std::io::stdin().is_terminal() {
        miette::bail!(
            help = "pass -auto-approve to adopt without confirmation",
            "no terminal to confirm the adoption on"
        );
    }
    let given = adopt::parse_revs(&args.rev)?;
    let ws = Workspace::load(&args.file, args.cache_dir.as_deref())?;
    refuse_existing(&ws, args.replace_state)?;
    let snapshot = ws.fetch()?;
    let now = Timestamp::from_second(Timestamp::now().as_second()).into_diagnostic()?;
    let adoption = adopt::adopt(&ws.config, &snapshot, &given, now)?;
    print!("{}", adopt::render(&adoption));
    if !args.auto_approve {
        confirm()?;
    }
    let lock = ws
        .backend
        .lock("state adopt", args.lock_timeout.0)
        .map_err(|e| e.for_plan(&args.file))?;
    let mut ws = ws;
    ws.reload_state()?;
    refuse_existing(&ws, args.replace_state)?;
    let mut state = ws.state.take().unwrap_or_else(State::new);
    adopt::record(&mut state, &adoption);
    ws.backend.write(&mut state)?;
    drop(lock);
    println!(
        "\nAdopted: recorded in {} as {} (serial {}). `kcideploy plan -f {}` now plans from it.",
        ws.backend.path().display(),
        adoption.id,
        state.serial,
        args.file.display()
    );
    Ok(ExitStatus::Success)
}

fn refuse_existing(ws: &Workspace, replace: bool) -> Result<()> {
    if ws.state.is_some() && !replace {
        let path = ws.backend.path().display();
        miette::bail!(
            help = format!(
                "adoption is for a deployment kcideploy has not deployed yet; -replace-state replaces what the state records as deployed (its history, exclusions and approvals are kept, the state before goes to {path}.backup)"
            ),
            "state already exists at {path}"
        );
    }
    Ok(())
}

/// Ask on the terminal; only `yes` goes on.
fn confirm() -> Result<()> {
    print!("\nDo you want to record this as deployed? Only 'yes' will be accepted: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).into_diagnostic()?;
    if answer.trim() != "yes" {
        miette::bail!("adoption cancelled: the answer was not `yes`");
    }
    Ok(())
}

/// For the text plan: the adopted steps whose outcome is unknown and that the plan does not
/// run (a run records what they make), with the way to make it known; empty when none.
pub fn unknown_note(ws: &Workspace, plan: &crate::planner::Plan) -> String {
    use std::fmt::Write;
    let Some(state) = &ws.state else {
        return String::new();
    };
    let runs = |name: &str| {
        plan.steps
            .iter()
            .any(|s| s.name == name && s.action == crate::planner::Action::Run)
    };
    let steps: Vec<_> = adopt::unknown_steps(&ws.config, state)
        .into_iter()
        .filter(|(name, _)| !runs(name))
        .collect();
    if steps.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nAdopted steps whose outcome is unknown (`state adopt` could not read it back):\n",
    );
    for (name, why) in &steps {
        let _ = writeln!(out, "  {name}: {why}");
    }
    let _ = writeln!(
        out,
        "Run one again to record what it makes: kcideploy apply -f {} -replace STEP",
        ws.config.path.display()
    );
    out
}
