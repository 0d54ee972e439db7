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
use super::cancel::{CancelReason, Stop, StopSignal, StopSource};
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
    /// Its end could not be written to the run's journal (the run stops).
    pub unrecorded: Option<std::io::Error>,
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
    let (event_tx, mut event_rx) = mpsc::unbounded_channel::<Event>();
    let mut run = Running {
        ctx,
        names,
        status: initial,
        steps: JoinSet::new(),
        ids: HashMap::new(),
        approvals: JoinSet::new(),
        stop: stop.clone(),
        events: event_tx,
    };
    loop {
        let running = run.status.iter().filter(|s| **s == Status::Running).count();
        let free = parallelism.max(1).saturating_sub(running);
        for decision in schedule::next(graph, &run.status, free, stop.current().is_some()) {
            run.decide(decision, controls, observer);
        }
        if schedule::settled(&run.status) {
            break;
        }
        tokio::select! {
            Some(joined) = run.steps.join_next_with_id() => {
                // The steps that ended meanwhile too: their journal lines share one sync,
                // made before anything after them starts.
                let mut ended = vec![joined];
                while let Some(more) = run.steps.try_join_next_with_id() {
                    ended.push(more);
                }
                let synced = run.sync_journal();
                for joined in ended {
                    let Some(mut finished) = run.joined(joined) else { continue };
                    if let Err(e) = &synced {
                        finished.unrecorded.get_or_insert_with(|| std::io::Error::new(e.kind(), e.to_string()));
                    }
                    if observer.finished(finished).is_err() {
                        source.stop(CancelReason::Shutdown, "a state write error");
                    }
                }
            }
            Some(answered) = run.approvals.join_next() => {
                let Ok((i, answer)) = answered else { continue };
                run.answered(i, answer, observer);
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
    let results = run
        .status
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

/// The steps of a dispatch and what runs for them.
struct Running<'a> {
    ctx: Arc<RunContext>,
    names: &'a [String],
    status: Vec<Status>,
    steps: JoinSet<Outcome>,
    ids: HashMap<tokio::task::Id, usize>,
    approvals: JoinSet<(usize, Approval)>,
    stop: StopSignal,
    events: mpsc::UnboundedSender<Event>,
}

impl Running<'_> {
    /// Sync the step ends written to the run's journal (an apply's; a blame round has none).
    fn sync_journal(&self) -> std::io::Result<()> {
        self.ctx
            .journal
            .as_ref()
            .map_or(Ok(()), |j| j.journal.sync())
    }

    fn decide(&mut self, decision: Decision, controls: &Controls, observer: &mut dyn Observer) {
        let names = self.names;
        match decision {
            Decision::Start(i) => {
                self.status[i] = Status::Running;
                observer.started(&names[i]);
                let task = run_step(
                    self.ctx.clone(),
                    i,
                    names[i].clone(),
                    self.stop.clone(),
                    self.events.clone(),
                );
                self.ids.insert(self.steps.spawn(task).id(), i);
            }
            Decision::Ask(i) => {
                self.status[i] = Status::Approving;
                let answer = controls.approver.approve(ApprovalRequest {
                    plan: self.ctx.plan.name.clone(),
                    run_id: self.ctx.run_id.clone(),
                    step: names[i].clone(),
                });
                self.approvals.spawn(async move { (i, answer.await) });
            }
            Decision::Drop(i, why) => {
                self.status[i] = Status::Done(why.result());
                let detail = match why {
                    NotRun::DependencyFailed(d) => format!("dependency failed: {}", names[d]),
                    NotRun::Cancelled => "not started: cancelled".to_string(),
                    NotRun::NotNeeded => "not needed: no step it watches failed".to_string(),
                };
                let _ = observer.finished(not_run(i, &names[i], why.result(), detail));
            }
        }
    }

    /// A step's task ended (a panicking task fails its step).
    fn joined(
        &mut self,
        joined: Result<(tokio::task::Id, Outcome), tokio::task::JoinError>,
    ) -> Option<Finished<'_>> {
        let outcome = match joined {
            Ok((_, outcome)) => outcome,
            Err(e) => Outcome {
                index: *self.ids.get(&e.id())?,
                outputs: None,
                result: StepResult::Failed,
                attempts: 0,
                duration: Duration::ZERO,
                detail: Some(format!("the step's task failed: {e}")),
                log_tail: None,
                stopped: None,
                unrecorded: None,
            },
        };
        let i = outcome.index;
        self.status[i] = Status::Done(outcome.result);
        let log = self.ctx.log_dir.join(format!(
            "{}.log",
            crate::config::names::file_name(&self.names[i])
        ));
        Some(Finished {
            index: i,
            name: &self.names[i],
            result: outcome.result,
            attempts: outcome.attempts,
            duration: outcome.duration,
            detail: outcome.detail,
            log: Some(log.display().to_string()),
            log_tail: outcome.log_tail,
            outputs: outcome.outputs,
            unrecorded: outcome.unrecorded,
        })
    }

    fn answered(&mut self, i: usize, answer: Approval, observer: &mut dyn Observer) {
        if self.status[i] != Status::Approving {
            return;
        }
        match answer {
            Approval::Approved => self.status[i] = Status::Approved,
            Approval::Refused(why) => {
                self.status[i] = Status::Done(StepResult::Cancelled);
                let name = &self.names[i];
                let _ = observer.finished(not_run(i, name, StepResult::Cancelled, why));
            }
        }
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
        unrecorded: None,
    }
}
