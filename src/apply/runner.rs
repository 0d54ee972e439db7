//! The step runner: one step with its retries. It owns every attempt's time limit (the step's
//! `timeout`, else its kind's default) and stops an attempt when the run is stopped, with the
//! run's grace between SIGTERM and SIGKILL. Apply and blame rounds run steps only through it.

use std::fs::{File, OpenOptions};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::RunContext;
use super::cancel::{CancelReason, StopSignal};
use super::events::{Event, StepResult};
use super::kinds::{self, Kind, Outputs, StepCtx, StepError};
use super::process::{self, Cancel};
use crate::state::RunStep;
use crate::state::journal::Entry;

/// After its limit, a kind that watches the limit itself gets this long to say why.
const OWN_WORDS: Duration = Duration::from_secs(5);
/// An attempt still running this long after its grace is dropped (its processes are killed
/// on drop).
const BACKSTOP: Duration = Duration::from_secs(5);

/// How a step ended.
#[derive(Debug)]
pub struct Outcome {
    pub index: usize,
    pub outputs: Outputs,
    pub result: StepResult,
    pub attempts: u32,
    pub duration: Duration,
    pub detail: Option<String>,
    pub log_tail: Option<String>,
    /// Why it was stopped, when it was.
    pub stopped: Option<CancelReason>,
    /// Its end could not be written to the run's journal.
    pub unrecorded: Option<std::io::Error>,
}

/// Run `name` with its retries; never panics on step errors. How it ended goes to the
/// run's journal at once, before the dispatcher hears of it (which syncs it before it
/// starts anything else).
pub async fn run_step(
    ctx: Arc<RunContext>,
    index: usize,
    name: String,
    stop: StopSignal,
    events: mpsc::UnboundedSender<Event>,
) -> Outcome {
    let mut outcome = with_retries(&ctx, index, &name, stop, events).await;
    outcome.unrecorded = journal_exit(&ctx, &name, &outcome).await.err();
    outcome
}

/// Write a step's end to the run's journal (apply's, not a blame round's); the dispatcher
/// syncs it, with the ends of the steps that ended at the same time. PostgreSQL state gets
/// it as a row too, committed before this returns.
async fn journal_exit(ctx: &RunContext, name: &str, outcome: &Outcome) -> std::io::Result<()> {
    let Some(run_journal) = &ctx.journal else {
        return Ok(());
    };
    let (digest, params) = run_journal.steps.get(name).cloned().unwrap_or_default();
    let entry = Entry::Exited {
        run: ctx.run_id.clone(),
        digest,
        step: RunStep {
            name: name.to_string(),
            result: outcome.result,
            attempts: outcome.attempts,
            duration_ms: outcome.duration.as_millis() as u64,
            detail: outcome.detail.clone(),
            log: Some(log_path(ctx, name).display().to_string()),
        },
        finished_at: Timestamp::now(),
        outputs: outcome.outputs.clone(),
        params: Some(params),
    };
    run_journal.journal.note(&entry)?;
    if let Some(rows) = &run_journal.rows {
        rows.append(&entry).await.map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// The step's log (as the dispatcher names it too).
fn log_path(ctx: &RunContext, name: &str) -> std::path::PathBuf {
    ctx.log_dir
        .join(format!("{}.log", crate::config::names::file_name(name)))
}

async fn with_retries(
    ctx: &Arc<RunContext>,
    index: usize,
    name: &str,
    mut stop: StopSignal,
    events: mpsc::UnboundedSender<Event>,
) -> Outcome {
    let start = Instant::now();
    let log_path = log_path(ctx, name);
    let end = |result, attempts, detail, log_tail, stopped| Outcome {
        index,
        outputs: None,
        result,
        attempts,
        duration: start.elapsed(),
        detail,
        log_tail,
        stopped,
        unrecorded: None,
    };
    let Some(step) = ctx.config.file.steps.get(name) else {
        let detail = format!("step `{name}` is not in the plan file");
        return end(StepResult::Failed, 0, Some(detail), None, None);
    };
    let log = match OpenOptions::new().create(true).append(true).open(&log_path) {
        Ok(f) => f,
        Err(e) => {
            let detail = format!("cannot open the log {}: {e}", log_path.display());
            return end(StepResult::Failed, 0, Some(detail), None, None);
        }
    };
    let kind = kinds::kind_of(ctx.config.settings(name), step.kind.value);
    let limit = step
        .timeout
        .map(|d| d.0)
        .unwrap_or_else(|| kind.default_timeout());
    let attempts = step.retries.saturating_add(1);
    let mut attempt = 1;
    loop {
        header(&log, name, attempt, attempts);
        let (tx, rx) = watch::channel(Cancel::None);
        let mut step_ctx = StepCtx {
            run: ctx,
            name,
            step,
            attempt,
            log: &log,
            log_path: &log_path,
            cancel: rx,
            limit,
            events: events.clone(),
        };
        let ended = run_attempt(kind.as_ref(), &mut step_ctx, &tx, ctx.grace, &mut stop).await;
        match ended {
            Ended::Finished(Ok(outputs)) => {
                if let Some(o) = &outputs {
                    ctx.keep_outputs(name, o);
                }
                return Outcome {
                    outputs,
                    ..end(StepResult::Success, attempt, None, None, None)
                };
            }
            Ended::Stopped(reason) => {
                let detail = Some("cancelled".to_string());
                return end(StepResult::Cancelled, attempt, detail, None, Some(reason));
            }
            Ended::Finished(Err(e)) if attempt < attempts => {
                let delay = step.retry_delay(attempt);
                let _ = events.send(Event::StepRetrying {
                    step: name.to_string(),
                    attempt,
                    error: e.to_string(),
                    delay_ms: delay.as_millis() as u64,
                });
                let stopped = match stop.current() {
                    Some(s) => Some(s.reason),
                    None => tokio::select! {
                        _ = tokio::time::sleep(delay) => None,
                        s = stop.changed() => Some(s.reason),
                    },
                };
                if let Some(reason) = stopped {
                    let detail = Some("cancelled".to_string());
                    return end(StepResult::Cancelled, attempt, detail, None, Some(reason));
                }
                attempt += 1;
            }
            Ended::Finished(Err(e)) => {
                let tail = process::tail(&log_path, 20);
                let timed_out = matches!(e, StepError::Timeout(_)).then_some(CancelReason::Timeout);
                return end(
                    StepResult::Failed,
                    attempt,
                    Some(e.to_string()),
                    Some(tail),
                    timed_out,
                );
            }
        }
    }
}

fn header(log: &File, name: &str, attempt: u32, attempts: u32) {
    use std::io::Write;
    let mut l = log;
    let _ = writeln!(
        l,
        "--- {name}: attempt {attempt} of {attempts}, {} ---",
        Timestamp::now()
    );
}

/// How one attempt ended.
enum Ended {
    Finished(Result<Outputs, StepError>),
    Stopped(CancelReason),
}

/// One attempt within its limit, stopped when the run is.
async fn run_attempt(
    kind: &dyn Kind,
    ctx: &mut StepCtx<'_>,
    tx: &watch::Sender<Cancel>,
    grace: Duration,
    stop: &mut StopSignal,
) -> Ended {
    let limit = ctx.limit;
    let mut watch = Watch {
        tx,
        grace,
        reason: None,
        deadline: None,
    };
    if let Some(s) = stop.current() {
        watch.escalate(s.reason);
    }
    let timer = tokio::time::sleep(if kind.watches_limit() {
        limit.saturating_add(OWN_WORDS)
    } else {
        limit
    });
    tokio::pin!(timer);
    let work = kind.run(ctx);
    tokio::pin!(work);
    let result = loop {
        let deadline = watch.deadline;
        let backstop = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut work => break Some(r),
            _ = &mut timer, if watch.reason.is_none() => watch.escalate(CancelReason::Timeout),
            s = stop.changed() => watch.escalate(s.reason),
            _ = backstop => break None,
        }
    };
    match (result, watch.reason) {
        (Some(Ok(outputs)), _) => Ended::Finished(Ok(outputs)),
        (Some(Err(StepError::Cancelled)) | None, Some(CancelReason::Timeout)) => {
            Ended::Finished(Err(StepError::Timeout(limit)))
        }
        // A process stopped by the run exits with an error: that is the stop, not a failure.
        (Some(_) | None, Some(reason)) if reason > CancelReason::Timeout => Ended::Stopped(reason),
        (Some(Err(StepError::Cancelled)) | None, _) => Ended::Stopped(CancelReason::Shutdown),
        (Some(Err(e)), _) => Ended::Finished(Err(e)),
    }
}

/// What an attempt was told, and until when it may take to stop.
struct Watch<'a> {
    tx: &'a watch::Sender<Cancel>,
    grace: Duration,
    reason: Option<CancelReason>,
    deadline: Option<Instant>,
}

impl Watch<'_> {
    fn escalate(&mut self, to: CancelReason) {
        if self.reason.is_some_and(|r| r >= to) || to.level() == Cancel::None {
            return;
        }
        self.reason = Some(to);
        self.tx.send_replace(to.level());
        let wait = if to == CancelReason::Kill {
            BACKSTOP
        } else {
            self.grace.saturating_add(BACKSTOP)
        };
        let deadline = Instant::now() + wait;
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
    }
}
