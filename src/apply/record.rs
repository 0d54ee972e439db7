//! What apply keeps in state: the run (resumed or new) when it starts, every finished step
//! in memory (its end is already durable in the run's journal), and at the end the steps,
//! the deployed revisions and the history.

use jiff::Timestamp;

use super::dispatch::{Finished, Observer};
use super::events::{Event, Reporter, StepResult};
use super::report::{ApplyReport, finished_event};
use super::schedule::Status;
use super::{RunContext, digest};
use crate::planner::Plan;
use crate::planner::params::Params;
use crate::state::journal::{Ended, record_outcome, record_step};
use crate::state::{
    Backend, ChangeRef, HISTORY_KEEP, RepoState, RunRecord, RunResult, RunRevision, RunStep, State,
    StateError,
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
                pins: Default::default(),
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

/// The digests each step's last success pinned (`pin_images.<key>.digest` of its settings).
fn pins(
    state: &State,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    state
        .steps
        .iter()
        .filter_map(|(name, r)| {
            let found: std::collections::BTreeMap<String, String> = r
                .params
                .as_ref()?
                .iter()
                .filter_map(|(k, v)| {
                    let key = k.strip_prefix("pin_images.")?.strip_suffix(".digest")?;
                    Some((key.to_string(), v.clone()))
                })
                .collect();
            (!found.is_empty()).then(|| (name.clone(), found))
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
    pub backend: &'a Backend,
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

    fn finished(&mut self, mut step: Finished<'_>) -> Result<(), String> {
        let event = finished_event(&step);
        let unrecorded = step.unrecorded.take();
        let outputs = step.outputs.take();
        let ended = Ended {
            digest: &self.digests[step.index],
            run_id: self.run_id,
            finished_at: Timestamp::now(),
            outputs: outputs.as_ref(),
            params: self.params.get(step.index),
        };
        record_outcome(self.state, ended, run_step(step));
        self.reporter.event(&event);
        // The step's end is durable in the journal (synced before the dispatcher heard of
        // it, so before any dependent starts); state gets it at the end of the run, or from
        // the journal when the run was interrupted.
        match unrecorded {
            None => Ok(()),
            Some(source) => {
                let e = StateError::Write {
                    path: self.backend.journal_path(),
                    source,
                };
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
    let pins = pins(state);
    if let Some(mut run) = state.current_run.take() {
        run.result = result;
        run.finished_at = Some(finished_at);
        run.images = images;
        run.pins = pins;
        push_history(state, run.clone());
        if result != RunResult::Success {
            state.current_run = Some(run);
        }
    }
}
