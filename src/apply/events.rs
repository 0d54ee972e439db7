//! What an apply reports as it goes: events, and three ways to show them (TTY progress,
//! plain log lines, one JSON object per line like `terraform apply -json`).

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::Timestamp;
use serde::Serialize;

use crate::config::Cycle;

pub use crate::state::{RoundResult, RunResult, StepResult, VerdictKind};

/// Counts at the end of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
    pub done_before: usize,
    pub cancelled: usize,
    /// `when_failed` steps whose watched steps did not fail.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_needed: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        plan: String,
        cycle: Cycle,
        steps: usize,
        resumed: bool,
        at: Timestamp,
    },
    StepStarted {
        step: String,
        at: Timestamp,
    },
    StepRetrying {
        step: String,
        attempt: u32,
        error: String,
        delay_ms: u64,
    },
    StepFinished {
        step: String,
        result: StepResult,
        attempts: u32,
        duration_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        log: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        log_tail: Option<String>,
    },
    StepProgress {
        step: String,
        message: String,
    },
    Cancelling {
        signal: String,
    },
    BlameRound {
        step: String,
        round: u32,
        included: Vec<String>,
        result: RoundResult,
    },
    BlameVerdict {
        step: String,
        verdict: VerdictKind,
        summary: String,
    },
    RunFinished {
        run_id: String,
        result: RunResult,
        counts: Counts,
        duration_ms: u64,
    },
}

/// Shows events.
pub trait Reporter: Send {
    fn event(&mut self, event: &Event);
}

/// One JSON object per line.
pub struct JsonReporter;

impl Reporter for JsonReporter {
    fn event(&mut self, event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            println!("{line}");
        }
    }
}

/// Plain lines, for logs and CI.
#[derive(Default)]
pub struct PlainReporter {
    lines: Vec<String>,
    /// Keep lines in memory instead of printing (tests).
    pub capture: bool,
}

impl PlainReporter {
    pub fn captured(&self) -> &[String] {
        &self.lines
    }

    fn say(&mut self, line: String) {
        if self.capture {
            self.lines.push(line);
        } else {
            println!("{line}");
        }
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// The text of an event for people; `None` for events shown otherwise.
/// The line of a finished step (a failure with its log's tail and path).
fn finished_line(
    step: &str,
    result: StepResult,
    duration_ms: u64,
    detail: &Option<String>,
    (log, log_tail): (&Option<String>, &Option<String>),
    attempts: u32,
) -> String {
    let mut text = match result {
        StepResult::Success => format!("  done    {step} ({})", secs(duration_ms)),
        StepResult::DoneBefore => format!("  done    {step} (before, with the same inputs)"),
        StepResult::Skipped => format!("  skipped {step} ({})", detail.as_deref().unwrap_or("")),
        StepResult::Cancelled => format!("  cancel  {step}"),
        StepResult::NotNeeded => {
            format!("  -       {step} (not needed: nothing it watches failed)")
        }
        StepResult::Failed => format!(
            "  FAILED  {step} after {attempts} attempt(s), {}: {}",
            secs(duration_ms),
            detail.as_deref().unwrap_or("")
        ),
    };
    if result == StepResult::Failed {
        if let Some(tail) = log_tail.as_deref().filter(|t| !t.is_empty()) {
            for l in tail.lines() {
                text.push_str(&format!("\n          | {l}"));
            }
        }
        if let Some(log) = log {
            text.push_str(&format!("\n          log: {log}"));
        }
    }
    text
}

pub fn line(event: &Event) -> Option<String> {
    Some(match event {
        Event::RunStarted {
            run_id,
            plan,
            cycle,
            steps,
            resumed,
            ..
        } => format!(
            "{} run {run_id} of `{plan}`: {steps} step(s), {} cycle",
            if *resumed { "Resuming" } else { "Starting" },
            cycle.as_str()
        ),
        Event::StepStarted { step, .. } => format!("  start   {step}"),
        Event::StepRetrying {
            step,
            attempt,
            error,
            delay_ms,
        } => format!(
            "  retry   {step}: attempt {attempt} failed ({error}); next in {}",
            secs(*delay_ms)
        ),
        Event::StepFinished {
            step,
            result,
            duration_ms,
            detail,
            log,
            log_tail,
            attempts,
        } => finished_line(
            step,
            *result,
            *duration_ms,
            detail,
            (log, log_tail),
            *attempts,
        ),
        Event::BlameRound {
            round,
            included,
            result,
            ..
        } => format!(
            "  blame   round {round}{}: {} → {result}",
            if *round == 0 {
                " (same inputs again)"
            } else {
                ""
            },
            if included.is_empty() {
                "no candidate".to_string()
            } else {
                included.join(", ")
            }
        ),
        Event::BlameVerdict { summary, .. } => format!("Blame: {summary}."),
        Event::StepProgress { step, message } => format!("  ...     {step}: {message}"),
        Event::Cancelling { signal } => {
            format!(
                "Received {signal}: starting nothing new, stopping running steps (again to kill them now)"
            )
        }
        Event::RunFinished {
            run_id,
            result,
            counts,
            duration_ms,
        } => format!(
            "Run {run_id} {result} in {}: {} done, {} failed, {} skipped, {} done before, {} cancelled.",
            secs(*duration_ms),
            counts.done,
            counts.failed,
            counts.skipped,
            counts.done_before,
            counts.cancelled
        ),
    })
}

impl Reporter for PlainReporter {
    fn event(&mut self, event: &Event) {
        if let Some(l) = line(event) {
            self.say(l);
        }
    }
}

/// A spinner per running step with its elapsed time; finished steps print a line above.
pub struct TtyReporter {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
}

impl TtyReporter {
    pub fn new() -> TtyReporter {
        TtyReporter {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            bars: HashMap::new(),
        }
    }
}

impl Default for TtyReporter {
    fn default() -> Self {
        TtyReporter::new()
    }
}

impl Reporter for TtyReporter {
    fn event(&mut self, event: &Event) {
        match event {
            Event::StepStarted { step, .. } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                if let Ok(style) = ProgressStyle::with_template("  {spinner} {msg} {elapsed}") {
                    bar.set_style(style);
                }
                bar.set_message(step.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                self.bars.insert(step.clone(), bar);
            }
            Event::StepProgress { step, message } => {
                if let Some(bar) = self.bars.get(step) {
                    bar.set_message(format!("{step}: {message}"));
                }
            }
            Event::StepFinished { step, .. } => {
                if let Some(bar) = self.bars.remove(step) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                if let Some(l) = line(event) {
                    let _ = self.multi.println(l);
                }
            }
            other => {
                if let Some(l) = line(other) {
                    let _ = self.multi.println(l);
                }
            }
        }
    }
}
