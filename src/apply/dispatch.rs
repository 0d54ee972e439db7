//! Dispatch: run a step graph on the current runtime with bounded parallelism. One task per
//! running step (the runner), approvals awaited as just another event, and the run's stop
//! requests passed on to every step. Never leaves early: after a failure or a stop request it
//! starts nothing more that it should not, and waits for what runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::approve::{ApprovalRequest, Decision as Approval};
use super::cancel::{CancelReason, Stop, StopSource};
use super::events::{Event, StepResult};
use super::kinds::Outputs;
use super::runner::{Outcome, run_step};
use super::schedule::{self, Decision, Graph, NotRun, Status};
use super::{Controls, RunContext};

/// A step that is done, run or not.
pub struct Finished<'a> {
    pub index: usize,
    pub name: &'a str,
    pub result: StepResult,
    pub attempts: u32,
    pub duration: Duration,
    pub detail: Option<String>,
    /// Its log, when it ran.
    pub log: Option<String>,
    pub log_tail: Option<String>,
    pub outputs: Outputs,
}

/// Who is told what happens: apply records it in state, a blame round in its record.
pub trait Observer {
    fn started(&mut self, name: &str);
    /// `Err`: the run cannot go on (state cannot be written); running steps are stopped.
    fn finished(&mut self, step: Finished<'_>) -> Result<(), String>;
    fn event(&mut self, event: &Event);
}

/// How the steps ended (in the order given) and whether the run was asked to stop.
#[derive(Debug, Clone)]
pub struct Dispatched {
    pub results: Vec<StepResult>,
    pub stopped: Option<Stop>,
}

/// Run `names` (with `graph` among them) from `initial`, up to `parallelism` at once.
pub async fn dispatch(
    ctx: Arc<RunContext>,
    names: &[String],
    graph: &Graph,
    initial: Vec<Status>,
    parallelism: usize,
    controls: &Controls,
    observer: &mut dyn Observer,
) -> Dispatched {
    // The run's own stop: what the caller asks, and state that cannot be written.
    let (source, stop) = StopSource::new();
    let mut outside = controls.stop.clone();
    if let Some(s) = outside.current() {
        source.stop(s.reason, s.by);
    }
    let mut status = initial;
    let mut steps: JoinSet<Outcome> = JoinSet::new();
    let mut ids = HashMap::new();
    let mut approvals: JoinSet<(usize, Approval)> = JoinSet::new();
    let (event_tx, mut event_rx) = mpsc::unbounded_channel::<Event>();
    loop {
        let running = status.iter().filter(|s| **s == Status::Running).count();
        let free = parallelism.max(1).saturating_sub(running);
        for decision in schedule::next(graph, &status, free, stop.current().is_some()) {
            match decision {
                Decision::Start(i) => {
                    status[i] = Status::Running;
                    observer.started(&names[i]);
                    let task = run_step(
                        ctx.clone(),
                        i,
                        names[i].clone(),
                        stop.clone(),
                        event_tx.clone(),
                    );
                    ids.insert(steps.spawn(task).id(), i);
                }
                Decision::Ask(i) => {
                    status[i] = Status::Approving;
                    let answer = controls.approver.approve(ApprovalRequest {
                        plan: ctx.plan.name.clone(),
                        run_id: ctx.run_id.clone(),
                        step: names[i].clone(),
                    });
                    approvals.spawn(async move { (i, answer.await) });
                }
                Decision::Drop(i, why) => {
                    status[i] = Status::Done(why.result());
                    let detail = match why {
                        NotRun::DependencyFailed(d) => format!("dependency failed: {}", names[d]),
                        NotRun::Cancelled => "not started: cancelled".to_string(),
                    };
                    let _ = observer.finished(not_run(i, &names[i], why.result(), detail));
                }
            }
        }
        if schedule::settled(&status) {
            break;
        }
        tokio::select! {
            Some(joined) = steps.join_next_with_id() => {
                let outcome = match joined {
                    Ok((_, outcome)) => outcome,
                    Err(e) => {
                        let Some(&i) = ids.get(&e.id()) else { continue };
                        let detail = format!("the step's task failed: {e}");
                        Outcome {
                            index: i, outputs: None, result: StepResult::Failed, attempts: 0,
                            duration: Duration::ZERO, detail: Some(detail), log_tail: None, stopped: None,
                        }
                    }
                };
                let i = outcome.index;
                status[i] = Status::Done(outcome.result);
                let log = ctx.log_dir.join(format!("{}.log", names[i])).display().to_string();
                let finished = Finished {
                    index: i,
                    name: &names[i],
                    result: outcome.result,
                    attempts: outcome.attempts,
                    duration: outcome.duration,
                    detail: outcome.detail,
                    log: Some(log),
                    log_tail: outcome.log_tail,
                    outputs: outcome.outputs,
                };
                if observer.finished(finished).is_err() {
                    source.stop(CancelReason::Shutdown, "a state write error");
                }
            }
            Some(answered) = approvals.join_next() => {
                let Ok((i, answer)) = answered else { continue };
                if status[i] != Status::Approving {
                    continue;
                }
                match answer {
                    Approval::Approved => status[i] = Status::Approved,
                    Approval::Refused(why) => {
                        status[i] = Status::Done(StepResult::Cancelled);
                        let _ = observer.finished(not_run(i, &names[i], StepResult::Cancelled, why));
                    }
                }
            }
            Some(event) = event_rx.recv() => observer.event(&event),
            s = outside.changed() => {
                if source.stop(s.reason, s.by) && s.by.starts_with("SIG") {
                    observer.event(&Event::Cancelling { signal: s.by.to_string() });
                }
            }
        }
    }
    while let Ok(event) = event_rx.try_recv() {
        observer.event(&event);
    }
    let results = status
        .iter()
        .map(|s| match s {
            Status::Done(r) => *r,
            _ => StepResult::Cancelled,
        })
        .collect();
    Dispatched {
        results,
        stopped: stop.current(),
    }
}

fn not_run(index: usize, name: &str, result: StepResult, detail: String) -> Finished<'_> {
    Finished {
        index,
        name,
        result,
        attempts: 0,
        duration: Duration::ZERO,
        detail: Some(detail),
        log: None,
        log_tail: None,
        outputs: None,
    }
}
