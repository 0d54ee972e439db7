//! State for people: `state show` and `state history`.

use super::{RunRecord, State};
use crate::support::text::short;
use std::fmt::Write;

/// `location`: the state file's path, or the PostgreSQL URL and plan.
pub fn show(state: &State, location: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "State {} (serial {}, lineage {})",
        location, state.serial, state.lineage
    );
    let _ = writeln!(out, "\nDeployed:");
    if state.repos.is_empty() {
        let _ = writeln!(out, "  nothing yet");
    }
    for (name, repo) in &state.repos {
        let changes: Vec<&str> = repo.included.iter().map(|c| c.id.as_str()).collect();
        let _ = writeln!(
            out,
            "  {name}: {}{}{}",
            short(&repo.deployed),
            repo.deployed_at
                .map(|t| format!(" at {t}"))
                .unwrap_or_default(),
            if changes.is_empty() {
                String::new()
            } else {
                format!(" with {}", changes.join(", "))
            }
        );
    }
    let when =
        |t: Option<jiff::Timestamp>| t.map(|t| t.to_string()).unwrap_or_else(|| "never".into());
    let _ = writeln!(
        out,
        "\nLast partial cycle: {}",
        when(state.cycles.last_partial)
    );
    let _ = writeln!(out, "Last full cycle:    {}", when(state.cycles.last_full));
    if let Some(run) = &state.current_run {
        let _ = writeln!(
            out,
            "\nUnfinished run {} ({}): applying the same inputs again resumes it.",
            run.id, run.result
        );
    }
    out
}

pub fn history(runs: &[&RunRecord]) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        let _ = writeln!(out, "No runs yet.");
    }
    for run in runs {
        let _ = writeln!(
            out,
            "{} {} cycle, {} (started {}{})",
            run.id,
            run.cycle.as_str(),
            run.result,
            run.started_at,
            run.finished_at
                .map(|t| format!(", finished {t}"))
                .unwrap_or_default()
        );
        if let Some(of) = &run.scope.rollback_of {
            let _ = writeln!(out, "  rollback: deploys again what run {of} deployed");
        }
        if let Some(from) = &run.scope.promoted_from {
            let _ = writeln!(out, "  promotion: deploys what {from} passed");
        }
        if !run.scope.targets.is_empty() {
            let _ = writeln!(out, "  -target {} (partial)", run.scope.targets.join(", "));
        }
        if !run.scope.replace.is_empty() {
            let _ = writeln!(out, "  -replace {}", run.scope.replace.join(", "));
        }
        for step in &run.steps {
            let _ = writeln!(
                out,
                "  {:<12} {:<28} {:>8.1}s{}{}",
                step.result,
                step.name,
                step.duration_ms as f64 / 1000.0,
                if step.attempts > 1 {
                    format!("  {} attempts", step.attempts)
                } else {
                    String::new()
                },
                step.detail
                    .as_deref()
                    .map(|d| format!("  {d}"))
                    .unwrap_or_default()
            );
        }
    }
    out
}

pub fn blame(record: &super::BlameRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Bisection of `{}` in run {} ({})",
        record.step, record.run_id, record.at
    );
    let _ = writeln!(
        out,
        "Candidates: {}",
        if record.candidates.is_empty() {
            "none".to_string()
        } else {
            record.candidates.join(", ")
        }
    );
    for round in &record.rounds {
        let _ = writeln!(
            out,
            "  round {}{}: {} → {}  (logs: {})",
            round.n,
            if round.n == 0 {
                " (same inputs again)"
            } else {
                ""
            },
            if round.included.is_empty() {
                "no candidate".to_string()
            } else {
                round.included.join(", ")
            },
            round.result,
            round.log_dir
        );
    }
    let _ = writeln!(out, "Verdict: {}: {}", record.verdict, record.summary);
    out
}

pub fn exclusions(list: &[super::Exclusion]) -> String {
    let mut out = String::new();
    if list.is_empty() {
        let _ = writeln!(out, "No exclusions.");
    }
    for e in list {
        let _ = writeln!(
            out,
            "{}  {} {} at {}  {}: broke `{}` in run {} ({})",
            e.id,
            e.repo,
            e.change,
            short(&e.head),
            e.reason,
            e.step,
            e.run_id,
            e.at
        );
    }
    out
}
