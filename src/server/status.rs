//! What `GET /status` shows: the shared status the worker and the deploy thread keep current,
//! and the reporter that updates it while a deploy runs (the pages are [`super::dashboard`]).

use indexmap::IndexMap;
use jiff::Timestamp;
use serde::Serialize;

use super::hub::Hub;
use crate::apply::events::{Event as ApplyEvent, Reporter, StepResult};
use crate::config::{Config, Cycle};
use crate::forge::github::slug;
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
    /// What the next deploy waits for.
    pub waiting: WaitStatus,
    /// This replica and who leads, when replicas share a PostgreSQL backend.
    pub replica: Option<ReplicaStatus>,
    /// The steps of the last deploy this process ran, once it has finished (the page keeps
    /// showing them).
    #[serde(skip)]
    pub last_run: Option<RunStatus>,
}

/// A `serve` replica on a PostgreSQL backend: this one, its role, and the leader.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    pub id: String,
    pub role: ReplicaRole,
    /// The leading replica (this one when it leads), as its row in the database says.
    pub leader: Option<super::leader::Replica>,
}

/// Whether a replica runs deploys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaRole {
    /// Runs the scheduler, the bot and the deploys.
    Leader,
    /// Accepts webhooks into the shared queue and serves the status pages.
    Follower,
}

/// What the next deploy waits for (the page's "why not yet").
#[derive(Debug, Clone, Default, Serialize)]
pub struct WaitStatus {
    /// Events came: the deploy waits until then for more pushes.
    pub settle_until: Option<Timestamp>,
    /// The cooldown after the last deploy ends then.
    pub cooldown_until: Option<Timestamp>,
    /// An explicit request (`@kcibot`, `schedule:`) for this cycle is pending.
    pub requested: Option<Cycle>,
    /// Restarts a partial deploy may take.
    pub max_restarts: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub cycle: Cycle,
    pub started_at: Timestamp,
    /// Why it started, in words.
    pub trigger: String,
    pub run_id: Option<String>,
    pub restarts: u32,
    /// The steps it runs, in plan order, and what each waits on (once planned).
    pub graph: Vec<GraphStep>,
    pub steps: IndexMap<String, StepStatus>,
}

/// A step of the running deploy's graph.
#[derive(Debug, Clone, Serialize)]
pub struct GraphStep {
    pub name: String,
    /// Steps it waits on (`needs`, `after`, push before use) among those that run.
    pub waits_on: Vec<String>,
    /// `approve: true`: serve holds it.
    pub approve: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepStatus {
    /// `running`, then the step's result.
    pub state: StepState,
    pub started_at: Option<Timestamp>,
    pub duration_ms: Option<u64>,
    pub detail: Option<String>,
    /// The end of its log when it finished.
    pub log_tail: Option<String>,
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
    /// Why it started, when this process ran it.
    pub trigger: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeStatus {
    pub repo: String,
    pub change: String,
    pub head: String,
    pub author: String,
    pub title: String,
    /// When its head was committed (from the fetch cache).
    pub committed_at: Option<Timestamp>,
    /// Its PR (github), or its branch on GitHub (git forge with `github_repo`).
    pub url: Option<String>,
    /// `included`, or the reason it was left out.
    pub state: ChangeState,
    pub detail: Option<String>,
    /// For `conflict`: the conflicting paths.
    pub paths: Vec<String>,
}

/// The changes state says are deployed, and the ones left out for breaking a deploy (what
/// `/status` shows before this process deployed anything).
pub(super) fn deployed_changes(state: &crate::state::State) -> Vec<ChangeStatus> {
    let mut out = Vec::new();
    for (repo, rs) in &state.repos {
        for c in &rs.included {
            out.push(change(repo, &c.id, &c.head, ChangeState::Included));
        }
    }
    for e in &state.exclusions {
        let reason = match e.reason {
            ExclusionCause::Blamed => ExclusionReason::Blamed,
        };
        let mut c = change(&e.repo, &e.change, &e.head, ChangeState::LeftOut(reason));
        c.detail = Some(e.detail.clone());
        out.push(c);
    }
    out
}

fn change(repo: &str, id: &str, head: &str, state: ChangeState) -> ChangeStatus {
    ChangeStatus {
        repo: repo.to_string(),
        change: id.to_string(),
        head: head.to_string(),
        author: String::new(),
        title: String::new(),
        committed_at: None,
        url: None,
        state,
        detail: None,
        paths: Vec::new(),
    }
}

/// The changes of a plan: included, or left out and why; with links and commit times from
/// the fetch cache.
pub(super) fn changes(config: &Config, plan: &Plan) -> Vec<ChangeStatus> {
    let mut out = Vec::new();
    for (repo, rp) in &plan.repos {
        let cache = git2::Repository::open_bare(
            std::path::Path::new(&plan.cache_dir).join(format!("{repo}.git")),
        )
        .ok();
        let slug = config.file.repos.get(repo).and_then(slug);
        let at = |head: &str| commit_time(cache.as_ref(), head);
        for c in &rp.included {
            let mut s = change(repo, &c.id, &c.head, ChangeState::Included);
            s.author = c.author.clone();
            s.title = c.title.clone();
            s.committed_at = at(&c.head);
            s.url = change_url(slug.as_deref(), &c.id);
            out.push(s);
        }
        for e in &rp.excluded {
            let mut s = change(repo, &e.id, &e.head, ChangeState::LeftOut(e.reason));
            s.author = e.author.clone();
            s.committed_at = at(&e.head);
            s.url = change_url(slug.as_deref(), &e.id);
            s.detail = Some(e.detail.clone());
            s.paths = e.paths.clone();
            out.push(s);
        }
    }
    out
}

fn commit_time(repo: Option<&git2::Repository>, head: &str) -> Option<Timestamp> {
    let oid = git2::Oid::from_str(head).ok()?;
    let commit = repo?.find_commit(oid).ok()?;
    Timestamp::from_second(commit.time().seconds()).ok()
}

/// A PR (`#12`) or a branch on GitHub.
fn change_url(slug: Option<&str>, id: &str) -> Option<String> {
    let slug = slug?;
    Some(match id.strip_prefix('#') {
        Some(n) if n.bytes().all(|b| b.is_ascii_digit()) => {
            format!("https://github.com/{slug}/pull/{n}")
        }
        _ => format!("https://github.com/{slug}/tree/{id}"),
    })
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
                // A resumed run keeps the trigger of its start.
                self.hub.triggers.record(run_id, &run.trigger);
                run.run_id = Some(run_id.clone());
                run.steps.clear();
            }
            ApplyEvent::StepStarted { step, .. } => {
                tracing::info!("{step}: started");
                run.steps.insert(
                    step.clone(),
                    StepStatus {
                        state: StepState::Running,
                        started_at: Some(Timestamp::now()),
                        duration_ms: None,
                        detail: None,
                        log_tail: None,
                    },
                );
            }
            ApplyEvent::StepFinished {
                step,
                result,
                duration_ms,
                detail,
                log_tail,
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
                let started_at = run.steps.get(step).and_then(|s| s.started_at);
                run.steps.insert(
                    step.clone(),
                    StepStatus {
                        state,
                        started_at,
                        duration_ms: Some(*duration_ms),
                        detail: detail.clone(),
                        log_tail: log_tail.clone(),
                    },
                );
            }
            _ => {}
        }
    }
}
