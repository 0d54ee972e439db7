//! What `GET /status` shows: the shared status the worker and the deploy thread keep current,
//! the reporter that updates it while a deploy runs, and the HTML page for browsers.

use indexmap::IndexMap;
use jiff::Timestamp;
use serde::Serialize;

use super::hub::Hub;
use crate::apply::events::{Event as ApplyEvent, Reporter, StepResult};
use crate::config::Cycle;
use crate::planner::{ExclusionReason, Plan};
use crate::state::{ExclusionCause, RunResult};

/// A closed set shown as one word in `/status` JSON, the page and the logs.
macro_rules! shown_as_word {
    ($name:ident) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

/// How a deploy of the server ended: its run's result, or that there was nothing to do, or
/// that it never ran (planning or fetching failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployResult {
    Run(RunResult),
    Nothing,
    Error,
}

impl DeployResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployResult::Run(r) => r.as_str(),
            DeployResult::Nothing => "nothing",
            DeployResult::Error => "error",
        }
    }
}
shown_as_word!(DeployResult);

/// A step of the running deploy: running, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    Running,
    Done(StepResult),
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Running => "running",
            StepState::Done(r) => r.as_str(),
        }
    }
}
shown_as_word!(StepState);

/// A pending change in the last deploy: included, or left out and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeState {
    Included,
    LeftOut(ExclusionReason),
}

impl ChangeState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeState::Included => "included",
            ChangeState::LeftOut(r) => r.as_str(),
        }
    }
}
shown_as_word!(ChangeState);

/// What `GET /status` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub plan: String,
    pub listening: String,
    pub started_at: Option<Timestamp>,
    pub running: Option<RunStatus>,
    /// When the next deploy starts (nothing runs).
    pub next_deploy: Option<Timestamp>,
    pub next_cycle: Option<Cycle>,
    /// When the next full cycle is allowed.
    pub next_full: Option<Timestamp>,
    /// The next full cycle of `policy.schedule`.
    pub schedule_next: Option<Timestamp>,
    /// Accepted deliveries not yet covered by a finished deploy.
    pub queue: usize,
    pub last: Option<LastDeploy>,
    /// Pending changes as the last deploy saw them.
    pub changes: Vec<ChangeStatus>,
    /// Approvals waiting to be recorded in state by the next deploy.
    pub approvals_pending: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub cycle: Cycle,
    pub started_at: Timestamp,
    pub run_id: Option<String>,
    pub restarts: u32,
    pub steps: IndexMap<String, StepStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepStatus {
    /// `running`, then the step's result.
    pub state: StepState,
    pub duration_ms: Option<u64>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastDeploy {
    pub cycle: Cycle,
    /// `success`, `failed`, `cancelled`, `nothing` (nothing to do) or `error`.
    pub result: DeployResult,
    pub run_id: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeStatus {
    pub repo: String,
    pub change: String,
    pub head: String,
    pub author: String,
    /// `included`, or the reason it was left out.
    pub state: ChangeState,
    pub detail: Option<String>,
}

/// The changes state says are deployed, and the ones left out for breaking a deploy (what
/// `/status` shows before this process deployed anything).
pub(super) fn deployed_changes(state: &crate::state::State) -> Vec<ChangeStatus> {
    let mut out = Vec::new();
    for (repo, rs) in &state.repos {
        for c in &rs.included {
            out.push(ChangeStatus {
                repo: repo.clone(),
                change: c.id.clone(),
                head: c.head.clone(),
                author: String::new(),
                state: ChangeState::Included,
                detail: None,
            });
        }
    }
    for e in &state.exclusions {
        out.push(ChangeStatus {
            repo: e.repo.clone(),
            change: e.change.clone(),
            head: e.head.clone(),
            author: String::new(),
            state: ChangeState::LeftOut(match e.reason {
                ExclusionCause::Blamed => ExclusionReason::Blamed,
            }),
            detail: Some(e.detail.clone()),
        });
    }
    out
}

/// The changes of a plan: included, or left out and why.
pub(super) fn changes(plan: &Plan) -> Vec<ChangeStatus> {
    let mut out = Vec::new();
    for (repo, rp) in &plan.repos {
        for c in &rp.included {
            out.push(ChangeStatus {
                repo: repo.clone(),
                change: c.id.clone(),
                head: c.head.clone(),
                author: c.author.clone(),
                state: ChangeState::Included,
                detail: None,
            });
        }
        for e in &rp.excluded {
            out.push(ChangeStatus {
                repo: repo.clone(),
                change: e.id.clone(),
                head: e.head.clone(),
                author: e.author.clone(),
                state: ChangeState::LeftOut(e.reason),
                detail: Some(e.detail.clone()),
            });
        }
    }
    out
}

/// Keeps `/status` and `/metrics` current while a deploy runs, and logs each step.
pub(super) struct StatusReporter<'a> {
    pub(super) hub: &'a Hub,
}

impl Reporter for StatusReporter<'_> {
    fn event(&mut self, event: &ApplyEvent) {
        let mut status = self.hub.status();
        let Some(run) = &mut status.running else {
            return;
        };
        match event {
            ApplyEvent::RunStarted { run_id, .. } => {
                run.run_id = Some(run_id.clone());
                run.steps.clear();
            }
            ApplyEvent::StepStarted { step, .. } => {
                tracing::info!("{step}: started");
                run.steps.insert(
                    step.clone(),
                    StepStatus {
                        state: StepState::Running,
                        duration_ms: None,
                        detail: None,
                    },
                );
            }
            ApplyEvent::StepFinished {
                step,
                result,
                duration_ms,
                detail,
                ..
            } => {
                let failed = *result == StepResult::Failed;
                let state = StepState::Done(*result);
                let result = result.as_str();
                match detail {
                    // The whole error goes to the log; PR comments only name the step.
                    Some(detail) if failed => tracing::warn!("{step}: {result}: {detail}"),
                    _ => tracing::info!("{step}: {result}"),
                }
                self.hub
                    .metrics
                    .step(step, result, *duration_ms as f64 / 1000.0);
                run.steps.insert(
                    step.clone(),
                    StepStatus {
                        state,
                        duration_ms: Some(*duration_ms),
                        detail: detail.clone(),
                    },
                );
            }
            _ => {}
        }
    }
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn ts(t: Option<Timestamp>) -> String {
    t.map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The status page for browsers (`GET /`, or `/status` asked for HTML).
pub fn html(s: &Status) -> String {
    let mut out = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>kcideploy: {name}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}\
         .success{{color:#080}}.failed{{color:#b00}}.running{{color:#06c}}</style></head><body>\
         <h1>kcideploy: {name}</h1><p>Queue: {queue} event(s). Next deploy: {next} ({cycle}). \
         Next full cycle allowed: {full}. Schedule: {sched}. <a href=\"/status\">JSON</a> · \
         <a href=\"/metrics\">metrics</a></p>",
        name = esc(&s.plan),
        queue = s.queue,
        next = ts(s.next_deploy),
        cycle = s.next_cycle.map(Cycle::as_str).unwrap_or("-"),
        full = ts(s.next_full),
        sched = ts(s.schedule_next),
    );
    match &s.running {
        Some(run) => html_running(&mut out, run),
        None => out.push_str("<h2>No deploy running</h2>"),
    }
    if let Some(last) = &s.last {
        out.push_str(&format!(
            "<h2>Last deploy</h2><p class=\"{}\">{} cycle: {} (run {}), {} → {}{}</p>",
            last.result.as_str(),
            last.cycle.as_str(),
            last.result.as_str(),
            esc(last.run_id.as_deref().unwrap_or("-")),
            ts(Some(last.started_at)),
            ts(Some(last.finished_at)),
            last.error
                .as_deref()
                .map(|e| format!(": {}", esc(e)))
                .unwrap_or_default()
        ));
    }
    out.push_str("<h2>Changes</h2><table><tr><th>repo</th><th>change</th><th>head</th><th>author</th><th>state</th><th>detail</th></tr>");
    for c in &s.changes {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.repo),
            esc(&c.change),
            esc(c.head.get(..12).unwrap_or(&c.head)),
            esc(&c.author),
            c.state.as_str(),
            esc(c.detail.as_deref().unwrap_or(""))
        ));
    }
    out.push_str("</table></body></html>\n");
    out
}

fn html_running(out: &mut String, run: &RunStatus) {
    out.push_str(&format!(
        "<h2>Running: {} cycle since {} (run {}, restarts {})</h2><table><tr><th>step</th><th>state</th><th>duration</th><th>detail</th></tr>",
        run.cycle.as_str(),
        ts(Some(run.started_at)),
        esc(run.run_id.as_deref().unwrap_or("-")),
        run.restarts
    ));
    for (name, step) in &run.steps {
        out.push_str(&format!(
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            step.state.as_str(),
            step.state.as_str(),
            step.duration_ms
                .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                .unwrap_or_default(),
            esc(step.detail.as_deref().unwrap_or(""))
        ));
    }
    out.push_str("</table>");
}
