//! What apply keeps in state: the run (resumed or new), every finished step at once (durable
//! before any dependent starts), and at the end the deployed revisions and the history.

use jiff::Timestamp;

use super::dispatch::{Finished, Observer};
use super::events::{Event, Reporter, StepResult};
use super::report::{ApplyReport, finished_event};
use super::schedule::Status;
use super::{RunContext, digest};
use crate::planner::Plan;
use crate::planner::params::Params;
use crate::state::journal::Entry;
use crate::state::{
    ChangeRef, HISTORY_KEEP, LocalState, RepoState, RunRecord, RunResult, RunRevision, RunStep,
    State, StateError, StepRecord,
};

/// Resume the unfinished run with the same inputs, or start a new one: `(run id, resumed)`.
pub fn begin_run(state: &mut State, plan: &Plan, now: Timestamp) -> (String, bool) {
    let inputs = digest::inputs_digest(plan);
    let mut resumed = false;
    let run = match state.current_run.take() {
        Some(mut run) if run.inputs_digest == inputs && run.result != RunResult::Success => {
            resumed = true;
            run.result = RunResult::Running;
            run.finished_at = None;
            run.scope = plan.scope.clone();
            run
        }
        other => {
            if let Some(mut old) = other {
                if old.result == RunResult::Running {
                    old.result = RunResult::Abandoned;
                }
                push_history(state, old);
            }
            RunRecord {
                id: new_run_id(now),
                plan_digest: plan.fingerprint.digest.clone(),
                inputs_digest: inputs,
                cycle: plan.cycle,
                start_serial: state.serial,
                started_at: now,
                finished_at: None,
                result: RunResult::Running,
                steps: Vec::new(),
                scope: plan.scope.clone(),
                revisions: revisions(plan),
                images: Default::default(),
            }
        }
    };
    let id = run.id.clone();
    state.current_run = Some(run);
    (id, resumed)
}

/// The report of an apply whose plan runs nothing and moves no deployed revision: no run is
/// started or recorded, state stays as it is. It names the last recorded run (what is
/// deployed), if any.
pub fn nothing_to_do(state: &State) -> ApplyReport {
    ApplyReport {
        run_id: state
            .history
            .last()
            .map(|r| r.id.clone())
            .unwrap_or_default(),
        result: RunResult::Success,
        counts: Default::default(),
        steps: Vec::new(),
        durations: Default::default(),
        details: Default::default(),
    }
}

/// What a run deploys per repo, for its record (a rollback plans it again).
fn revisions(plan: &Plan) -> std::collections::BTreeMap<String, RunRevision> {
    plan.repos
        .iter()
        .map(|(name, r)| {
            let revision = RunRevision {
                staging: r.staging.clone(),
                base: r.base.clone(),
                included: r
                    .included
                    .iter()
                    .map(|c| ChangeRef {
                        id: c.id.clone(),
                        head: c.head.clone(),
                    })
                    .collect(),
            };
            (name.clone(), revision)
        })
        .collect()
}

/// The image id each step that builds one last recorded (`outputs.image` and `outputs.id`).
fn images(state: &State) -> std::collections::BTreeMap<String, String> {
    state
        .steps
        .iter()
        .filter_map(|(name, r)| {
            let outputs = r.outputs.as_ref()?;
            outputs.get("image")?;
            let id = outputs.get("id")?.as_str()?;
            Some((name.clone(), id.to_string()))
        })
        .collect()
}

fn new_run_id(now: Timestamp) -> String {
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    format!("{stamp}-{}", &crate::support::random_id()[..6])
}

/// Steps that finished before with the same inputs are not repeated, unless what they made
/// drifted away: their starting status.
pub fn done_before(
    state: &mut State,
    ctx: &RunContext,
    names: &[String],
    digests: &[String],
    reporter: &mut dyn Reporter,
) -> Vec<Status> {
    // Drifted or `-replace`d steps run again whatever they did before.
    let drifted = |name: &str| {
        ctx.plan
            .steps
            .iter()
            .any(|s| s.name == name && s.is_forced())
    };
    names
        .iter()
        .zip(digests)
        .map(|(name, digest)| {
            let done = !drifted(name)
                && state
                    .steps
                    .get(name)
                    .is_some_and(|r| r.result == StepResult::Success && r.digest == *digest);
            if !done {
                return Status::Waiting;
            }
            let step = RunStep {
                name: name.clone(),
                result: StepResult::DoneBefore,
                attempts: 0,
                duration_ms: 0,
                detail: None,
                log: None,
            };
            record_step(state, step);
            reporter.event(&Event::StepFinished {
                step: name.clone(),
                result: StepResult::DoneBefore,
                attempts: 0,
                duration_ms: 0,
                detail: None,
                log: None,
                log_tail: None,
            });
            Status::Done(StepResult::DoneBefore)
        })
        .collect()
}

/// Records each finished step in state and writes it, and shows it.
pub struct Recorder<'a> {
    pub state: &'a mut State,
    pub backend: &'a LocalState,
    pub run_id: &'a str,
    pub digests: &'a [String],
    /// Each step's resolved settings, as planned (kept in state on success).
    pub params: &'a [Params],
    pub reporter: &'a mut dyn Reporter,
    pub write_error: Option<StateError>,
}

impl Observer for Recorder<'_> {
    fn started(&mut self, name: &str) {
        self.reporter.event(&Event::StepStarted {
            step: name.to_string(),
            at: Timestamp::now(),
        });
    }

    fn finished(&mut self, step: Finished<'_>) -> Result<(), String> {
        let event = finished_event(&step);
        let digest = self.digests[step.index].clone();
        let outputs = step.outputs.clone();
        let ended = Ended {
            digest: &digest,
            run_id: self.run_id,
            finished_at: Timestamp::now(),
            outputs: outputs.as_ref(),
            params: self.params.get(step.index),
        };
        record_outcome(self.state, ended, run_step(step));
        self.reporter.event(&event);
        // Durable before any dependent starts: a crash loses at most running steps.
        match self.backend.write(self.state) {
            Ok(()) => Ok(()),
            Err(e) => {
                let text = e.to_string();
                self.write_error.get_or_insert(e);
                Err(text)
            }
        }
    }

    fn event(&mut self, event: &Event) {
        self.reporter.event(event);
    }
}

/// How a step that ran ended, besides its run record.
struct Ended<'a> {
    digest: &'a str,
    run_id: &'a str,
    finished_at: Timestamp,
    outputs: Option<&'a serde_json::Value>,
    /// The step's resolved settings (kept with a success).
    params: Option<&'a Params>,
}

/// A step that ran, in state: its record (a success or a failure) and its run's record.
fn record_outcome(state: &mut State, ended: Ended<'_>, step: RunStep) {
    if matches!(step.result, StepResult::Success | StepResult::Failed) {
        let last = state.steps.get(&step.name);
        let record = StepRecord {
            digest: ended.digest.to_string(),
            result: step.result,
            run_id: ended.run_id.to_string(),
            finished_at: Some(ended.finished_at),
            duration_ms: step.duration_ms,
            outputs: last_good_outputs(step.result, ended.outputs, last),
            params: if step.result == StepResult::Success {
                ended.params.cloned()
            } else {
                last.and_then(|r| r.params.clone())
            },
            params_run: if step.result == StepResult::Success {
                Some(ended.run_id.to_string())
            } else {
                last.and_then(|r| r.params_run.clone())
            },
        };
        state.steps.insert(step.name.clone(), record);
    }
    record_step(state, step);
}

/// Replay the journal's step exits of the unfinished run into state, in their order: what
/// state would have learnt at its next write had the apply not been killed. A step that
/// exited 0 is then done and does not run again. Returns how many were replayed.
pub fn replay(state: &mut State, entries: &[Entry]) -> usize {
    let Some(run_id) = state.current_run.as_ref().map(|r| r.id.clone()) else {
        return 0;
    };
    let mut replayed = 0;
    for entry in entries {
        if let Entry::Exited {
            run,
            digest,
            step,
            finished_at,
            outputs,
            params,
        } = entry
            && *run == run_id
        {
            let ended = Ended {
                digest,
                run_id: &run_id,
                finished_at: *finished_at,
                outputs: outputs.as_ref(),
                params: params.as_ref(),
            };
            record_outcome(state, ended, step.clone());
            replayed += 1;
        }
    }
    replayed
}

/// What a step's record keeps as its outputs: a success's own; after a failure, those of the
/// last success (the pipe-cleaner's rotation and the summaries the next cycle compares with),
/// which the failure is recorded next to, never in place of.
fn last_good_outputs(
    result: StepResult,
    outputs: Option<&serde_json::Value>,
    last: Option<&StepRecord>,
) -> Option<serde_json::Value> {
    if result == StepResult::Success {
        outputs.cloned()
    } else {
        last.and_then(|r| r.outputs.clone())
    }
}

/// The record of a finished step in its run.
pub fn run_step(step: Finished<'_>) -> RunStep {
    RunStep {
        name: step.name.to_string(),
        result: step.result,
        attempts: step.attempts,
        duration_ms: step.duration.as_millis() as u64,
        detail: step.detail,
        log: step.log,
    }
}

fn record_step(state: &mut State, entry: RunStep) {
    let Some(run) = state.current_run.as_mut() else {
        return;
    };
    match run.steps.iter_mut().find(|s| s.name == entry.name) {
        // A resumed run keeps what a step did before it.
        Some(existing)
            if entry.result == StepResult::DoneBefore && existing.result == StepResult::Success => {
        }
        Some(existing) => *existing = entry,
        None => run.steps.push(entry),
    }
}

pub fn push_history(state: &mut State, run: RunRecord) {
    state.history.retain(|r| r.id != run.id);
    state.history.push(run);
    let extra = state.history.len().saturating_sub(HISTORY_KEEP);
    state.history.drain(..extra);
}

/// The end of a run in state: deployed revisions move for repos whose steps all succeeded,
/// exclusions whose change moved go, the cycle time, and the run into the history.
pub fn end_run(
    state: &mut State,
    ctx: &RunContext,
    names: &[String],
    results: &[StepResult],
    result: RunResult,
) {
    let finished_at = Timestamp::now();
    let cancelled = result == RunResult::Cancelled;
    for (repo, repo_plan) in &ctx.plan.repos {
        let all_ok = names.iter().zip(results).all(|(n, r)| {
            matches!(r, StepResult::Success | StepResult::DoneBefore)
                || !digest::step_repos(&ctx.config, n).contains(repo)
        });
        // `-target` left out steps of this repo: what they deploy is not deployed yet.
        let held =
            ctx.plan.steps.iter().any(|s| {
                s.is_untargeted() && digest::step_repos(&ctx.config, &s.name).contains(repo)
            });
        if all_ok && !held && !cancelled {
            state.repos.insert(
                repo.clone(),
                RepoState {
                    deployed: repo_plan.staging.clone(),
                    base: Some(repo_plan.base.clone()),
                    included: repo_plan
                        .included
                        .iter()
                        .map(|c| ChangeRef {
                            id: c.id.clone(),
                            head: c.head.clone(),
                        })
                        .collect(),
                    deployed_at: Some(finished_at),
                },
            );
        }
    }
    // An exclusion lasts while its change keeps the blamed head.
    state.exclusions.retain(|e| {
        ctx.plan
            .fingerprint
            .repos
            .get(&e.repo)
            .and_then(|r| r.heads.get(&e.change))
            == Some(&e.head)
    });
    if !cancelled {
        match ctx.plan.cycle {
            crate::config::Cycle::Partial => state.cycles.last_partial = Some(finished_at),
            crate::config::Cycle::Full => state.cycles.last_full = Some(finished_at),
        }
    }
    let images = images(state);
    if let Some(mut run) = state.current_run.take() {
        run.result = result;
        run.finished_at = Some(finished_at);
        run.images = images;
        push_history(state, run.clone());
        if result != RunResult::Success {
            state.current_run = Some(run);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(result: StepResult, outputs: Option<serde_json::Value>) -> StepRecord {
        StepRecord {
            digest: "d".into(),
            result,
            run_id: "r1".into(),
            finished_at: None,
            duration_ms: 0,
            outputs,
            params: None,
            params_run: None,
        }
    }

    #[test]
    fn a_failure_keeps_the_outputs_of_the_last_success() {
        let good = json!({"next_index": 1});
        let after_success = record(StepResult::Success, Some(good.clone()));
        assert_eq!(
            last_good_outputs(StepResult::Failed, None, Some(&after_success)),
            Some(good.clone())
        );
        // And a second failure too (the record after the first one holds them).
        let after_failure = record(StepResult::Failed, Some(good.clone()));
        assert_eq!(
            last_good_outputs(StepResult::Failed, None, Some(&after_failure)),
            Some(good)
        );
        assert_eq!(last_good_outputs(StepResult::Failed, None, None), None);
    }

    #[test]
    fn a_success_records_its_own_outputs_even_none() {
        let last = record(StepResult::Success, Some(json!({"next_index": 1})));
        let now = json!({"next_index": 2});
        assert_eq!(
            last_good_outputs(StepResult::Success, Some(&now), Some(&last)),
            Some(now)
        );
        assert_eq!(
            last_good_outputs(StepResult::Success, None, Some(&last)),
            None
        );
    }
}
