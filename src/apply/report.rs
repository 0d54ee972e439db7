//! How an apply ended: counts, the run's result, and what each step did.

use std::collections::BTreeMap;

use super::dispatch::Finished;
use super::events::{Counts, Event, StepResult};
use crate::state::{RunResult, State};

/// How an apply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub run_id: String,
    /// `Success`, `Failed` or `Cancelled`.
    pub result: RunResult,
    pub counts: Counts,
    pub steps: Vec<(String, StepResult)>,
    /// How long each step took, in ms.
    pub durations: BTreeMap<String, u64>,
    /// Why steps failed (a regression report, an exit status).
    pub details: BTreeMap<String, String>,
}

impl ApplyReport {
    pub fn succeeded(&self) -> bool {
        self.result == RunResult::Success
    }

    /// The report of run `run_id` as state recorded it.
    pub fn new(
        run_id: String,
        result: RunResult,
        names: &[String],
        results: &[StepResult],
        state: &State,
    ) -> ApplyReport {
        let this_run = state.history.iter().rev().find(|r| r.id == run_id);
        let durations = this_run
            .map(|r| {
                r.steps
                    .iter()
                    .map(|s| (s.name.clone(), s.duration_ms))
                    .collect()
            })
            .unwrap_or_default();
        let details = this_run
            .map(|r| {
                r.steps
                    .iter()
                    .filter(|s| s.result == StepResult::Failed)
                    .filter_map(|s| s.detail.clone().map(|d| (s.name.clone(), d)))
                    .collect()
            })
            .unwrap_or_default();
        ApplyReport {
            run_id,
            result,
            counts: counts(results),
            steps: names.iter().cloned().zip(results.iter().copied()).collect(),
            durations,
            details,
        }
    }
}

pub fn counts(results: &[StepResult]) -> Counts {
    let mut counts = Counts::default();
    for result in results {
        match result {
            StepResult::Success => counts.done += 1,
            StepResult::Failed => counts.failed += 1,
            StepResult::Skipped => counts.skipped += 1,
            StepResult::DoneBefore => counts.done_before += 1,
            StepResult::Cancelled => counts.cancelled += 1,
            StepResult::NotNeeded => counts.not_needed += 1,
        }
    }
    counts
}

/// A run's result: cancelled when a step was (or the run was asked to stop), failed when a
/// step failed or was skipped (or state could not be written), else success.
pub fn run_result(counts: &Counts, stopped: bool, write_failed: bool) -> RunResult {
    if counts.cancelled > 0 || stopped {
        RunResult::Cancelled
    } else if counts.failed + counts.skipped > 0 || write_failed {
        RunResult::Failed
    } else {
        RunResult::Success
    }
}

/// The event of a finished step (its log only when it failed).
pub fn finished_event(step: &Finished<'_>) -> Event {
    Event::StepFinished {
        step: step.name.to_string(),
        result: step.result,
        attempts: step.attempts,
        duration_ms: step.duration.as_millis() as u64,
        detail: step.detail.clone(),
        log: if step.result == StepResult::Failed {
            step.log.clone()
        } else {
            None
        },
        log_tail: step.log_tail.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelled_wins_over_failed_and_failed_over_success() {
        use StepResult::*;
        let c = counts(&[Success, Failed, Cancelled]);
        assert_eq!(run_result(&c, false, false), RunResult::Cancelled);
        let c = counts(&[Success, Skipped, DoneBefore]);
        assert_eq!(run_result(&c, false, false), RunResult::Failed);
        let c = counts(&[Success, DoneBefore]);
        assert_eq!(run_result(&c, false, false), RunResult::Success);
        assert_eq!(run_result(&c, true, false), RunResult::Cancelled);
        assert_eq!(run_result(&c, false, true), RunResult::Failed);
    }
}
