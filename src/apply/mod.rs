//! Apply: run a plan's steps in graph order with bounded parallelism, record every finished
//! step in state at once, resume without repeating what finished with the same inputs.

pub mod blame;
pub mod events;
pub mod kinds;
pub mod process;
pub mod stale;

use std::collections::{BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::planner::{Action, Plan};
use crate::state::{
    HISTORY_KEEP, LocalState, RepoState, RunRecord, RunStep, State, StateError, StateLock,
    StepRecord,
};
use events::{Counts, Event, Reporter, StepResult};
use process::Cancel;

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Steps running at once.
    pub parallelism: usize,
    /// Between SIGTERM and SIGKILL for a step being stopped.
    pub grace: Duration,
    /// Listen to SIGINT/SIGTERM (off in tests that cancel through [`ApplyOptions::cancel`]).
    pub handle_signals: bool,
    /// Cancel from outside (tests, the server).
    pub cancel: Option<watch::Receiver<Cancel>>,
    /// Steps with `approve: true` run without asking.
    pub auto_approve: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            parallelism: 10,
            grace: Duration::from_secs(10),
            handle_signals: true,
            cancel: None,
            auto_approve: false,
        }
    }
}

/// How an apply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub run_id: String,
    /// `success`, `failed` or `cancelled`.
    pub result: String,
    pub counts: Counts,
    pub steps: Vec<(String, StepResult)>,
    /// How long each step took, in ms.
    pub durations: std::collections::BTreeMap<String, u64>,
    /// Why steps failed (a regression report, an exit status).
    pub details: std::collections::BTreeMap<String, String>,
}

impl ApplyReport {
    pub fn succeeded(&self) -> bool {
        self.result == "success"
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ApplyError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    State(#[from] StateError),
    #[error("cannot prepare the run: {0}")]
    Setup(String),
}

/// What every step of a run shares.
pub struct RunContext {
    pub config: Config,
    pub plan: Plan,
    pub run_id: String,
    pub log_dir: PathBuf,
    pub checkout_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub grace: Duration,
    /// When the run started (dated tags use it).
    pub now: Timestamp,
    http: OnceLock<reqwest::Client>,
    /// What each step recorded the last time it succeeded (pipe-cleaner rotation, summaries).
    pub previous_outputs: std::collections::BTreeMap<String, serde_json::Value>,
}

impl RunContext {
    /// The staging revision of `repo` exported to a directory (made once per revision).
    pub fn checkout(&self, repo: &str) -> Result<PathBuf, String> {
        let plan = self
            .plan
            .repos
            .get(repo)
            .ok_or_else(|| format!("repo `{repo}` is not in the plan"))?;
        let dest = self.checkout_dir.join(format!(
            "{repo}-{}",
            crate::support::text::short(&plan.staging)
        ));
        let cache = git2::Repository::open_bare(self.cache_dir.join(format!("{repo}.git")))
            .map_err(|e| format!("cannot open the cache of `{repo}`: {e}"))?;
        crate::gitops::export_tree(&cache, &plan.staging, &dest)?;
        Ok(dest)
    }

    /// A shared HTTP client (rustls with ring).
    pub fn http_client(&self) -> Result<reqwest::Client, String> {
        if let Some(c) = self.http.get() {
            return Ok(c.clone());
        }
        let client = crate::support::http::http_client(None)?;
        Ok(self.http.get_or_init(|| client).clone())
    }
}

/// Repos a step deploys: those of its `on` components and `with.repo`, and of the steps it
/// needs. A repo's deployed revision moves only when all its steps succeeded.
pub fn step_repos(config: &Config, step: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![step.to_string()];
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(s) = config.file.steps.get(&name) else {
            continue;
        };
        for on in &s.on {
            if let Some(c) = config.file.components.get(&on.value) {
                out.insert(c.repo.value.clone());
            }
        }
        if let Some(repo) = config.settings(&name).repo() {
            out.insert(repo.to_string());
        }
        todo.extend(s.needs.iter().map(|n| n.value.clone()));
    }
    out
}

/// Digest of a step's inputs: its settings and the staging revisions of its repos (all repos
/// when it names none); `always` steps also the run, so each run runs them once.
pub fn step_digest(config: &Config, plan: &Plan, step: &str, run_id: &str) -> String {
    let Some(s) = config.file.steps.get(step) else {
        return String::new();
    };
    let mut repos = step_repos(config, step);
    if repos.is_empty() {
        repos = plan.repos.keys().cloned().collect();
    }
    let revisions: Vec<(&String, &str)> = repos
        .iter()
        .map(|r| {
            (
                r,
                plan.repos.get(r).map(|p| p.staging.as_str()).unwrap_or(""),
            )
        })
        .collect();
    let doc = serde_json::json!({
        "step": step,
        "kind": s.kind.value.as_str(),
        "with": s.with.value,
        "revisions": revisions,
        "run": if s.always { Some(run_id) } else { None },
    });
    hex::encode(Sha256::digest(doc.to_string().as_bytes()))
}

/// Digest of what a run deploys; an unfinished run with the same digest is resumed.
pub fn inputs_digest(plan: &Plan) -> String {
    let doc = serde_json::json!({
        "cycle": plan.cycle,
        "plan_file": plan.fingerprint.plan_file,
        "staging": plan.repos.iter().map(|(k, r)| (k, &r.staging)).collect::<Vec<_>>(),
    });
    hex::encode(Sha256::digest(doc.to_string().as_bytes()))
}

fn new_run_id(now: Timestamp) -> String {
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    format!("{stamp}-{}", &crate::support::random_id()[..6])
}

struct Node {
    name: String,
    deps: Vec<usize>,
    status: Option<StepResult>,
    running: bool,
    digest: String,
}

struct Outcome {
    index: usize,
    outputs: kinds::Outputs,
    result: StepResult,
    attempts: u32,
    duration: Duration,
    detail: Option<String>,
    log_tail: Option<String>,
}

/// Apply `plan`. The caller holds the state lock (`_lock` is the proof).
pub async fn apply(
    config: Config,
    plan: Plan,
    backend: &LocalState,
    _lock: &StateLock,
    opts: ApplyOptions,
    reporter: &mut dyn Reporter,
) -> Result<ApplyReport, ApplyError> {
    let started = Instant::now();
    let now = Timestamp::now();
    let mut state = backend.read()?.unwrap_or_default();
    let inputs = inputs_digest(&plan);

    // Resume the unfinished run with the same inputs, or start a new one.
    let mut resumed = false;
    let run = match state.current_run.take() {
        Some(mut run) if run.inputs_digest == inputs && run.result != "success" => {
            resumed = true;
            run.result = "running".into();
            run.finished_at = None;
            run
        }
        other => {
            if let Some(mut old) = other {
                if old.result == "running" {
                    old.result = "abandoned".into();
                }
                push_history(&mut state, old);
            }
            RunRecord {
                id: new_run_id(now),
                plan_digest: plan.fingerprint.digest.clone(),
                inputs_digest: inputs.clone(),
                cycle: plan.cycle,
                start_serial: state.serial,
                started_at: now,
                finished_at: None,
                result: "running".into(),
                steps: Vec::new(),
            }
        }
    };
    let run_id = run.id.clone();
    state.current_run = Some(run);
    backend.write(&mut state)?;

    let state_dir = backend
        .path
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let log_dir = state_dir.join("runs").join(&plan.name).join(&run_id);
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| ApplyError::Setup(format!("cannot create {}: {e}", log_dir.display())))?;
    let ctx = Arc::new(RunContext {
        checkout_dir: state_dir.join("checkouts").join(&plan.name),
        cache_dir: PathBuf::from(&plan.cache_dir),
        config,
        run_id: run_id.clone(),
        log_dir,
        grace: opts.grace,
        now,
        http: OnceLock::new(),
        previous_outputs: state
            .steps
            .iter()
            .filter_map(|(k, r)| r.outputs.clone().map(|o| (k.clone(), o)))
            .collect(),
        plan,
    });

    // The steps to run and their dependencies among themselves.
    let to_run: Vec<&str> = ctx
        .plan
        .steps
        .iter()
        .filter(|s| s.action == Action::Run)
        .map(|s| s.name.as_str())
        .collect();
    let index: HashMap<&str, usize> = to_run.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut nodes: Vec<Node> = to_run
        .iter()
        .map(|name| {
            let step = &ctx.config.file.steps[*name];
            let deps = step
                .needs
                .iter()
                .chain(&step.after)
                .filter_map(|d| index.get(d.value.as_str()).copied())
                .collect();
            Node {
                name: name.to_string(),
                deps,
                status: None,
                running: false,
                digest: step_digest(&ctx.config, &ctx.plan, name, &run_id),
            }
        })
        .collect();

    reporter.event(&Event::RunStarted {
        run_id: run_id.clone(),
        plan: ctx.plan.name.clone(),
        cycle: ctx.plan.cycle,
        steps: nodes.len(),
        resumed,
        at: now,
    });

    // Steps that finished before with the same inputs are not repeated, unless what they made
    // drifted away.
    let drifted: BTreeSet<&str> = ctx
        .plan
        .steps
        .iter()
        .filter(|s| {
            s.because
                .iter()
                .any(|r| matches!(r, crate::planner::StepReason::Drift { .. }))
        })
        .map(|s| s.name.as_str())
        .collect();
    for node in nodes.iter_mut() {
        if drifted.contains(node.name.as_str()) {
            continue;
        }
        let done = state
            .steps
            .get(&node.name)
            .is_some_and(|r| r.result == "success" && r.digest == node.digest);
        if done {
            node.status = Some(StepResult::DoneBefore);
            record_step(
                &mut state,
                &node.name,
                StepResult::DoneBefore,
                0,
                0,
                None,
                None,
            );
            reporter.event(&finished_event(
                &node.name,
                StepResult::DoneBefore,
                0,
                Duration::ZERO,
                None,
                None,
                None,
            ));
        }
    }

    let (cancel_tx, cancel_rx) = watch::channel(Cancel::None);
    let mut outside = opts.cancel.clone();
    let (event_tx, mut event_rx) = mpsc::unbounded_channel::<Event>();
    let mut signals = if opts.handle_signals {
        let int = signal(SignalKind::interrupt())
            .map_err(|e| ApplyError::Setup(format!("cannot handle SIGINT: {e}")))?;
        let term = signal(SignalKind::terminate())
            .map_err(|e| ApplyError::Setup(format!("cannot handle SIGTERM: {e}")))?;
        Some((int, term))
    } else {
        None
    };
    // Cancelled before it started (the server stopping while this run planned): start nothing.
    let mut cancel = opts
        .cancel
        .as_ref()
        .map(|rx| *rx.borrow())
        .unwrap_or(Cancel::None);
    let mut join: JoinSet<Outcome> = JoinSet::new();
    let mut running = 0usize;
    let mut write_error: Option<StateError> = None;
    let mut approved: BTreeSet<usize> = BTreeSet::new();

    loop {
        // Dependents of failed steps are skipped (transitively).
        loop {
            let mut changed = false;
            for i in 0..nodes.len() {
                if nodes[i].status.is_some() || nodes[i].running {
                    continue;
                }
                let failed_dep = nodes[i].deps.iter().find(|&&d| {
                    matches!(
                        nodes[d].status,
                        Some(StepResult::Failed | StepResult::Skipped | StepResult::Cancelled)
                    )
                });
                if let Some(&d) = failed_dep {
                    // Behind a cancelled step a step is cancelled too, not skipped.
                    let (result, detail) = if nodes[d].status == Some(StepResult::Cancelled) {
                        (StepResult::Cancelled, "not started: cancelled".to_string())
                    } else {
                        (
                            StepResult::Skipped,
                            format!("dependency failed: {}", nodes[d].name),
                        )
                    };
                    nodes[i].status = Some(result);
                    record_step(
                        &mut state,
                        &nodes[i].name,
                        result,
                        0,
                        0,
                        Some(detail.clone()),
                        None,
                    );
                    reporter.event(&finished_event(
                        &nodes[i].name,
                        result,
                        0,
                        Duration::ZERO,
                        Some(detail),
                        None,
                        None,
                    ));
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        // Start what is ready, in plan order.
        if cancel == Cancel::None {
            for i in 0..nodes.len() {
                if running >= opts.parallelism.max(1) {
                    break;
                }
                let ready = nodes[i].status.is_none()
                    && !nodes[i].running
                    && nodes[i].deps.iter().all(|&d| {
                        matches!(
                            nodes[d].status,
                            Some(StepResult::Success | StepResult::DoneBefore)
                        )
                    });
                if !ready {
                    continue;
                }
                if !approved.contains(&i)
                    && ctx
                        .config
                        .file
                        .steps
                        .get(&nodes[i].name)
                        .is_some_and(|s| s.approve)
                {
                    match approve(&nodes[i].name, opts.auto_approve) {
                        Ok(()) => {
                            approved.insert(i);
                        }
                        Err(detail) => {
                            nodes[i].status = Some(StepResult::Cancelled);
                            record_step(
                                &mut state,
                                &nodes[i].name,
                                StepResult::Cancelled,
                                0,
                                0,
                                Some(detail.clone()),
                                None,
                            );
                            reporter.event(&finished_event(
                                &nodes[i].name,
                                StepResult::Cancelled,
                                0,
                                Duration::ZERO,
                                Some(detail),
                                None,
                                None,
                            ));
                            continue;
                        }
                    }
                }
                nodes[i].running = true;
                running += 1;
                reporter.event(&Event::StepStarted {
                    step: nodes[i].name.clone(),
                    at: Timestamp::now(),
                });
                join.spawn(run_step(
                    ctx.clone(),
                    i,
                    nodes[i].name.clone(),
                    cancel_rx.clone(),
                    event_tx.clone(),
                ));
            }
        }
        if running == 0 {
            break;
        }
        tokio::select! {
            Some(joined) = join.join_next() => {
                let mut finished = vec![joined];
                while let Some(more) = join.try_join_next() {
                    finished.push(more);
                }
                for outcome in finished {
                    let outcome = match outcome {
                        Ok(o) => o,
                        Err(e) => {
                            // A panicking step task: nothing to attribute it to but the run.
                            write_error.get_or_insert(StateError::Write {
                                path: backend.path.clone(),
                                source: std::io::Error::other(format!("a step task failed: {e}")),
                            });
                            continue;
                        }
                    };
                    running -= 1;
                    let node = &mut nodes[outcome.index];
                    node.running = false;
                    node.status = Some(outcome.result);
                    let ms = outcome.duration.as_millis() as u64;
                    let log = ctx.log_dir.join(format!("{}.log", node.name)).display().to_string();
                    if outcome.result == StepResult::Success || outcome.result == StepResult::Failed {
                        state.steps.insert(node.name.clone(), StepRecord {
                            digest: node.digest.clone(),
                            result: outcome.result.as_str().to_string(),
                            run_id: run_id.clone(),
                            finished_at: Some(Timestamp::now()),
                            duration_ms: ms,
                            outputs: outcome.outputs.clone(),
                        });
                    }
                    record_step(&mut state, &node.name, outcome.result, outcome.attempts, ms, outcome.detail.clone(), Some(log.clone()));
                    reporter.event(&finished_event(&node.name, outcome.result, outcome.attempts, outcome.duration, outcome.detail, Some(log), outcome.log_tail));
                }
                // Durable before any dependent starts: a crash loses at most running steps.
                if let Err(e) = backend.write(&mut state) {
                    write_error.get_or_insert(e);
                    cancel = Cancel::Graceful;
                    let _ = cancel_tx.send(cancel);
                }
            }
            Some(event) = event_rx.recv() => reporter.event(&event),
            Some(name) = next_signal(&mut signals) => {
                cancel = if cancel == Cancel::None { Cancel::Graceful } else { Cancel::Kill };
                let _ = cancel_tx.send(cancel);
                reporter.event(&Event::Cancelling { signal: name.to_string() });
            }
            level = outside_cancel(&mut outside) => {
                if level > cancel {
                    cancel = level;
                    let _ = cancel_tx.send(cancel);
                }
            }
        }
    }
    while let Ok(event) = event_rx.try_recv() {
        reporter.event(&event);
    }

    // Steps never started because of cancellation.
    for node in nodes.iter_mut().filter(|n| n.status.is_none()) {
        node.status = Some(StepResult::Cancelled);
        record_step(
            &mut state,
            &node.name,
            StepResult::Cancelled,
            0,
            0,
            Some("not started: cancelled".into()),
            None,
        );
        reporter.event(&finished_event(
            &node.name,
            StepResult::Cancelled,
            0,
            Duration::ZERO,
            Some("not started".into()),
            None,
            None,
        ));
    }

    let mut counts = Counts::default();
    for node in &nodes {
        match node.status {
            Some(StepResult::Success) => counts.done += 1,
            Some(StepResult::Failed) => counts.failed += 1,
            Some(StepResult::Skipped) => counts.skipped += 1,
            Some(StepResult::DoneBefore) => counts.done_before += 1,
            Some(StepResult::Cancelled) | None => counts.cancelled += 1,
        }
    }
    let result = if counts.cancelled > 0 || cancel > Cancel::None {
        "cancelled"
    } else if counts.failed + counts.skipped > 0 || write_error.is_some() {
        "failed"
    } else {
        "success"
    };

    // Deployed revisions move for repos whose steps all succeeded.
    let finished_at = Timestamp::now();
    for (repo, repo_plan) in &ctx.plan.repos {
        let all_ok = nodes.iter().all(|n| {
            matches!(n.status, Some(StepResult::Success | StepResult::DoneBefore))
                || !step_repos(&ctx.config, &n.name).contains(repo)
        });
        if all_ok && result != "cancelled" {
            state.repos.insert(
                repo.clone(),
                RepoState {
                    deployed: repo_plan.staging.clone(),
                    base: Some(repo_plan.base.clone()),
                    included: repo_plan
                        .included
                        .iter()
                        .map(|c| crate::state::ChangeRef {
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
    if result != "cancelled" {
        match ctx.plan.cycle {
            crate::config::Cycle::Partial => state.cycles.last_partial = Some(finished_at),
            crate::config::Cycle::Full => state.cycles.last_full = Some(finished_at),
        }
    }
    if let Some(mut run) = state.current_run.take() {
        run.result = result.to_string();
        run.finished_at = Some(finished_at);
        push_history(&mut state, run.clone());
        if result != "success" {
            state.current_run = Some(run);
        }
    }
    backend.write(&mut state)?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    reporter.event(&Event::RunFinished {
        run_id: run_id.clone(),
        result: result.to_string(),
        counts,
        duration_ms: started.elapsed().as_millis() as u64,
    });
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
                .filter(|s| s.result == "failed")
                .filter_map(|s| s.detail.clone().map(|d| (s.name.clone(), d)))
                .collect()
        })
        .unwrap_or_default();
    Ok(ApplyReport {
        run_id,
        result: result.to_string(),
        counts,
        steps: nodes
            .iter()
            .map(|n| (n.name.clone(), n.status.unwrap_or(StepResult::Cancelled)))
            .collect(),
        durations,
        details,
    })
}

/// Confirmation of an `approve: true` step: given by -auto-approve, asked on a terminal, else
/// the run stops before it (and a later apply with -auto-approve resumes there).
fn approve(step: &str, auto: bool) -> Result<(), String> {
    use std::io::{IsTerminal, Write};
    if auto {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err("awaiting approval: apply again with -auto-approve, or on a terminal".into());
    }
    print!("\nStep `{step}` needs approval. Run it? Only 'yes' will be accepted: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() || answer.trim() != "yes" {
        return Err("not approved".into());
    }
    Ok(())
}

async fn next_signal(
    signals: &mut Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
) -> Option<&'static str> {
    match signals {
        Some((int, term)) => tokio::select! {
            _ = int.recv() => Some("SIGINT"),
            _ = term.recv() => Some("SIGTERM"),
        },
        None => std::future::pending().await,
    }
}

async fn outside_cancel(rx: &mut Option<watch::Receiver<Cancel>>) -> Cancel {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => *rx.borrow(),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

fn finished_event(
    step: &str,
    result: StepResult,
    attempts: u32,
    duration: Duration,
    detail: Option<String>,
    log: Option<String>,
    log_tail: Option<String>,
) -> Event {
    Event::StepFinished {
        step: step.to_string(),
        result,
        attempts,
        duration_ms: duration.as_millis() as u64,
        detail,
        log: if result == StepResult::Failed {
            log
        } else {
            None
        },
        log_tail,
    }
}

fn record_step(
    state: &mut State,
    name: &str,
    result: StepResult,
    attempts: u32,
    duration_ms: u64,
    detail: Option<String>,
    log: Option<String>,
) {
    let Some(run) = state.current_run.as_mut() else {
        return;
    };
    let entry = RunStep {
        name: name.to_string(),
        result: result.as_str().to_string(),
        attempts,
        duration_ms,
        detail,
        log,
    };
    match run.steps.iter_mut().find(|s| s.name == name) {
        // A resumed run keeps what a step did before it.
        Some(existing) if result == StepResult::DoneBefore && existing.result == "success" => {}
        Some(existing) => *existing = entry,
        None => run.steps.push(entry),
    }
}

fn push_history(state: &mut State, run: RunRecord) {
    state.history.retain(|r| r.id != run.id);
    state.history.push(run);
    let extra = state.history.len().saturating_sub(HISTORY_KEEP);
    state.history.drain(..extra);
}

/// Run a step with its retries; never panics on step errors.
async fn run_step(
    ctx: Arc<RunContext>,
    index: usize,
    name: String,
    cancel: watch::Receiver<Cancel>,
    events: mpsc::UnboundedSender<Event>,
) -> Outcome {
    let start = Instant::now();
    let log_path = ctx.log_dir.join(format!("{name}.log"));
    let fail = |detail: String, attempts| Outcome {
        index,
        outputs: None,
        result: StepResult::Failed,
        attempts,
        duration: start.elapsed(),
        detail: Some(detail),
        log_tail: None,
    };
    let Some(step) = ctx.config.file.steps.get(&name) else {
        return fail(format!("step `{name}` is not in the plan file"), 0);
    };
    let log = match OpenOptions::new().create(true).append(true).open(&log_path) {
        Ok(f) => f,
        Err(e) => {
            return fail(
                format!("cannot open the log {}: {e}", log_path.display()),
                0,
            );
        }
    };
    let attempts = step.retries.saturating_add(1);
    let mut attempt = 1;
    loop {
        {
            use std::io::Write;
            let mut l = &log;
            let _ = writeln!(
                l,
                "--- {name}: attempt {attempt} of {attempts}, {} ---",
                Timestamp::now()
            );
        }
        let mut step_ctx = kinds::StepCtx {
            run: &ctx,
            name: &name,
            step,
            attempt,
            log: &log,
            log_path: &log_path,
            cancel: cancel.clone(),
            events: events.clone(),
        };
        let result = kinds::execute(&mut step_ctx).await;
        let done = |result, detail, log_tail| Outcome {
            index,
            outputs: None,
            result,
            attempts: attempt,
            duration: start.elapsed(),
            detail,
            log_tail,
        };
        match result {
            Ok(outputs) => {
                return Outcome {
                    outputs,
                    ..done(StepResult::Success, None, None)
                };
            }
            Err(kinds::StepError::Cancelled) => {
                return done(StepResult::Cancelled, Some("cancelled".into()), None);
            }
            Err(e) if attempt < attempts => {
                let delay = step.retry_delay(attempt);
                let _ = events.send(Event::StepRetrying {
                    step: name.clone(),
                    attempt,
                    error: e.to_string(),
                    delay_ms: delay.as_millis() as u64,
                });
                let mut c = cancel.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = process::cancelled(&mut c, Cancel::Graceful) => {
                        return done(StepResult::Cancelled, Some("cancelled".into()), None);
                    }
                }
                attempt += 1;
            }
            Err(e) => {
                let tail = process::tail(&log_path, 20);
                return done(StepResult::Failed, Some(e.to_string()), Some(tail));
            }
        }
    }
}
