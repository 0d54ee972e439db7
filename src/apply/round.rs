//! A bisection round: some of a plan's steps on another staging revision, through the same
//! executor as an apply (approvals, time limits, cancellation), recorded apart from the run.

use std::sync::Arc;

use super::cancel::Stop;
use super::dispatch::{self, Finished, Observer};
use super::events::{Event, Reporter, StepResult};
use super::schedule::Status;
use super::{ApplyOptions, Controls, RunContext, RunDirs, graph_of, record};
use crate::config::Config;
use crate::planner::Plan;
use crate::state::{RunResult, RunStep};

/// What a round runs, and where.
pub struct Round<'a> {
    pub config: &'a Config,
    /// The plan with the round's staging revisions.
    pub plan: Plan,
    /// The steps to run (others of the plan are left alone).
    pub steps: &'a [String],
    pub run_id: String,
    pub dirs: RunDirs,
}

/// How a round ended.
#[derive(Debug, Clone)]
pub struct RoundReport {
    /// `Success`, `Failed` (a step failed), or `Cancelled` (a step was not approved, or the
    /// round was stopped).
    pub result: RunResult,
    /// Each step's record, as a run keeps it.
    pub steps: Vec<RunStep>,
    /// The stop request, when one came.
    pub stopped: Option<Stop>,
}

/// Run a round; nothing goes to state.
pub async fn run_round(
    round: Round<'_>,
    opts: &ApplyOptions,
    controls: &Controls,
    reporter: &mut dyn Reporter,
) -> RoundReport {
    let Round {
        config,
        plan,
        steps,
        run_id,
        dirs,
    } = round;
    let (names, graph) = graph_of(config, &plan, Some(steps));
    let ctx = match RunContext::new(
        config.clone(),
        plan,
        run_id,
        dirs,
        opts.grace,
        Default::default(),
    ) {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => {
            let steps = names
                .iter()
                .map(|n| RunStep {
                    name: n.clone(),
                    result: StepResult::Failed,
                    attempts: 0,
                    duration_ms: 0,
                    detail: Some(e.clone()),
                    log: None,
                })
                .collect();
            return RoundReport {
                result: RunResult::Failed,
                steps,
                stopped: None,
            };
        }
    };
    let initial = vec![Status::Waiting; names.len()];
    let mut observer = RoundObserver {
        steps: Vec::new(),
        reporter,
    };
    let done = dispatch::dispatch(
        ctx,
        &names,
        &graph,
        initial,
        opts.parallelism,
        controls,
        &mut observer,
    )
    .await;
    let failed = done
        .results
        .iter()
        .any(|r| matches!(r, StepResult::Failed | StepResult::Skipped));
    let cancelled = done.results.contains(&StepResult::Cancelled);
    let result = if done.stopped.is_some() {
        RunResult::Cancelled
    } else if failed {
        RunResult::Failed
    } else if cancelled {
        RunResult::Cancelled
    } else {
        RunResult::Success
    };
    // In plan order, as a run lists them.
    let mut steps = observer.steps;
    steps.sort_by_key(|s| names.iter().position(|n| *n == s.name));
    RoundReport {
        result,
        steps,
        stopped: done.stopped,
    }
}

/// Keeps each step's record; shows only stop requests (a round's steps are not the run's).
struct RoundObserver<'a> {
    steps: Vec<RunStep>,
    reporter: &'a mut dyn Reporter,
}

impl Observer for RoundObserver<'_> {
    fn started(&mut self, _: &str) {}

    fn finished(&mut self, step: Finished<'_>) -> Result<(), String> {
        self.steps.push(record::run_step(step));
        Ok(())
    }

    fn event(&mut self, event: &Event) {
        if matches!(event, Event::Cancelling { .. }) {
            self.reporter.event(event);
        }
    }
}
