//! Apply: run a plan's steps in graph order with bounded parallelism, record every finished
//! step in state at once, resume without repeating what finished with the same inputs.
//!
//! The parts: [`schedule`] (pure: what may start), [`dispatch`] (bounded parallelism on the
//! current runtime), [`runner`] (one step: retries, time limits, cancellation), [`approve`]
//! (who confirms `approve: true` steps), [`kinds`] (what a step does), [`digest`] (from the planner), [`record`]
//! (state) and [`report`]. Blame runs its rounds through [`run_round`]: the same executor.

pub mod adopt;
pub mod approve;
pub mod cancel;
pub mod dispatch;
pub mod events;
pub mod kinds;
pub mod leftovers;
pub mod lifeline;
pub mod pins;
pub mod process;
pub mod record;
pub mod refresh;
pub mod report;
pub mod resume;
mod round;
pub mod runner;
pub mod schedule;
pub mod spawn;
pub mod stale;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::watch;

use crate::config::Config;
pub use crate::planner::digest::{self, inputs_digest, step_digest, step_repos};
use crate::planner::{Action, Plan};
use crate::state::journal::Journal;
use crate::state::{Backend, StateError, StateLock};
pub use approve::Approver;
pub use cancel::{CancelReason, Listener, StopSignal};
use events::{Event, Reporter};
use process::Cancel;
pub use report::ApplyReport;
pub use round::{Round, RoundReport, run_round};

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

/// What steers a run (and a bisection's rounds) from outside: who approves `approve: true`
/// steps, and the stop requests.
#[derive(Clone)]
pub struct Controls {
    pub approver: Arc<dyn Approver>,
    pub stop: StopSignal,
}

impl Controls {
    /// What `opts` ask for: the approver of `auto_approve` (else a terminal prompt, else
    /// none), and stop requests from SIGINT/SIGTERM (with `handle_signals`) and the `cancel`
    /// channel while the listener lives. Needs a runtime.
    pub fn listen(opts: &ApplyOptions) -> Result<(Controls, Listener), ApplyError> {
        let (stop, listener) =
            cancel::listen(opts.handle_signals, opts.cancel.clone()).map_err(ApplyError::Setup)?;
        let controls = Controls {
            approver: approve::for_options(opts.auto_approve),
            stop,
        };
        Ok((controls, listener))
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
    pub previous_outputs: BTreeMap<String, serde_json::Value>,
    /// What each step that succeeded in this run returned, for the steps after it (the
    /// pipe-cleaner's check reads the kernel its push step pushed): filled by the runner as
    /// steps succeed, and for a resumed run with what succeeded in its earlier part.
    this_run: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Where an apply's steps record their processes and exits at once (not a blame round's).
    pub journal: Option<RunJournal>,
}

/// The journal of an apply, and each step's input digest and resolved settings (what its
/// exit records).
pub struct RunJournal {
    pub journal: Journal,
    /// PostgreSQL: the step ends go there too, as rows (what other hosts read).
    pub rows: Option<crate::state::StepRows>,
    pub steps: BTreeMap<String, (String, crate::planner::params::Params)>,
}

impl RunJournal {
    /// Empty the journal once state holds all of it (a failure only costs a replay).
    fn clear(&self) {
        if let Err(e) = self.journal.clear() {
            let path = self.journal.path().display();
            tracing::warn!("cannot empty the journal {path}: {e}");
        }
    }
}

impl RunContext {
    /// A run's context; makes its log directory.
    pub fn new(
        config: Config,
        plan: Plan,
        run_id: String,
        dirs: RunDirs,
        grace: Duration,
        previous_outputs: BTreeMap<String, serde_json::Value>,
    ) -> Result<RunContext, String> {
        std::fs::create_dir_all(&dirs.log_dir)
            .map_err(|e| format!("cannot create {}: {e}", dirs.log_dir.display()))?;
        Ok(RunContext {
            cache_dir: PathBuf::from(&plan.cache_dir),
            config,
            plan,
            run_id,
            log_dir: dirs.log_dir,
            checkout_dir: dirs.checkout_dir,
            grace,
            now: Timestamp::now(),
            http: OnceLock::new(),
            previous_outputs,
            journal: None,
            this_run: Mutex::new(BTreeMap::new()),
        })
    }

    /// Keep what `step` returned when it succeeded in this run.
    pub fn keep_outputs(&self, step: &str, outputs: &serde_json::Value) {
        let mut this_run = self.this_run.lock().unwrap_or_else(|e| e.into_inner());
        this_run.insert(step.to_string(), outputs.clone());
    }

    /// What `step` returned when it succeeded in this run (`None`: it has not, or returned
    /// nothing).
    pub fn outputs_in_this_run(&self, step: &str) -> Option<serde_json::Value> {
        let this_run = self.this_run.lock().unwrap_or_else(|e| e.into_inner());
        this_run.get(step).cloned()
    }

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
        crate::gitops::export_tree(&cache, &plan.staging, &dest).map_err(|e| match &e {
            // Name the change(s) that brought the refused entry.
            crate::gitops::export::ExportError::Refused { path, .. } => {
                let path = path.to_string_lossy();
                let by: Vec<String> = plan
                    .included
                    .iter()
                    .filter(|c| {
                        c.paths
                            .iter()
                            .any(|p| *p == path || p.starts_with(&format!("{path}/")))
                    })
                    .map(|c| format!("{} by {}", c.id, c.author))
                    .collect();
                match by.is_empty() {
                    true => format!("{e} (in the base of `{repo}`)"),
                    false => format!("{e} (brought by {})", by.join(", ")),
                }
            }
            crate::gitops::export::ExportError::Failed(_) => e.to_string(),
        })?;
        Ok(dest)
    }

    /// A shared HTTP client (rustls with ring) that connects within `timeouts.connect`.
    pub fn http_client(&self) -> Result<reqwest::Client, String> {
        if let Some(c) = self.http.get() {
            return Ok(c.clone());
        }
        let client = crate::support::http::http_client(self.config.file.timeouts.connect.0)?;
        Ok(self.http.get_or_init(|| client).clone())
    }
}

/// Where a run keeps its logs and exports its checkouts.
#[derive(Debug, Clone)]
pub struct RunDirs {
    pub log_dir: PathBuf,
    pub checkout_dir: PathBuf,
}

impl RunDirs {
    /// Beside the state file: `runs/<plan>/<run>/` and `checkouts/<plan>/`.
    pub fn beside(backend: &Backend, plan: &str, run_id: &str) -> RunDirs {
        let state_dir = backend
            .path()
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        RunDirs {
            log_dir: state_dir.join("runs").join(plan).join(run_id),
            checkout_dir: state_dir.join("checkouts").join(plan),
        }
    }
}

/// The steps `plan` runs (or those of `only`), in plan order, and their graph (`needs` and
/// `after` among them).
pub fn graph_of(
    config: &Config,
    plan: &Plan,
    only: Option<&[String]>,
) -> (Vec<String>, schedule::Graph) {
    let names: Vec<String> = plan
        .steps
        .iter()
        // A round names its steps: a step the plan does not repeat (it finished with the
        // plan's inputs) runs again on the round's other inputs.
        .filter(|s| match only {
            Some(only) => only.contains(&s.name),
            None => s.action == Action::Run,
        })
        .map(|s| s.name.clone())
        .collect();
    let mut graph = schedule::Graph::default();
    for name in &names {
        let step = config.file.steps.get(name);
        let deps = step
            .map(|s| {
                s.needs
                    .iter()
                    .chain(&s.after)
                    .filter_map(|d| names.iter().position(|n| *n == d.value))
                    .collect()
            })
            .unwrap_or_default();
        graph.deps.push(deps);
        graph.approve.push(step.is_some_and(|s| s.approve));
        let watched: Vec<usize> = step
            .map(|s| {
                s.when_failed
                    .iter()
                    .filter_map(|d| names.iter().position(|n| *n == d.value))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(deps) = graph.deps.last_mut() {
            deps.extend(
                watched
                    .iter()
                    .filter(|w| !deps.contains(w))
                    .copied()
                    .collect::<Vec<_>>(),
            );
        }
        graph.when_failed.push(watched);
        let tolerated = step
            .filter(|s| s.run_after_failures)
            .map(|s| {
                s.after
                    .iter()
                    .filter(|d| !s.needs.iter().any(|n| n.value == d.value))
                    .filter_map(|d| names.iter().position(|n| *n == d.value))
                    .collect()
            })
            .unwrap_or_default();
        graph.tolerates.push(tolerated);
    }
    // Push before use (`crate::planner::graph::published_by`): ordering the plan file does
    // not write, between steps that both run.
    for (user, pushes) in crate::planner::graph::published_by(config) {
        let Some(i) = names.iter().position(|n| *n == user) else {
            continue;
        };
        for push in pushes {
            if let Some(p) = names.iter().position(|n| *n == push.step)
                && !graph.deps[i].contains(&p)
            {
                graph.deps[i].push(p);
            }
        }
    }
    (names, graph)
}

/// The resolved settings of each of `names`, as planned.
fn params_of(plan: &Plan, names: &[String]) -> Vec<crate::planner::params::Params> {
    names
        .iter()
        .map(|n| {
            plan.steps
                .iter()
                .find(|s| s.name == *n)
                .map(|s| s.params.clone())
                .unwrap_or_default()
        })
        .collect()
}

/// Apply `plan`. The caller holds the state lock (`_lock` is the proof).
pub async fn apply(
    config: Config,
    plan: Plan,
    backend: &Backend,
    _lock: &StateLock,
    opts: &ApplyOptions,
    controls: &Controls,
    reporter: &mut dyn Reporter,
) -> Result<ApplyReport, ApplyError> {
    let started = Instant::now();
    // With the step ends of an interrupted run folded in from its journal.
    let mut state = backend.read_async().await?.unwrap_or_default();
    // What an interrupted run left running is stopped before anything starts.
    leftovers::after_interruption(backend, opts.grace).await?;
    if plan.is_deployed() {
        // No step to run and no deployed revision to move: nothing for state to remember.
        return Ok(record::nothing_to_do(&state));
    }
    let (run_id, resumed) = record::begin_run(&mut state, &plan, Timestamp::now());
    backend.write_async(&mut state).await?;
    let journal = leftovers::fresh_journal(backend)?;
    backend.fold_step_ends().await?;
    let previous = state
        .steps
        .iter()
        .filter_map(|(k, r)| r.outputs.clone().map(|o| (k.clone(), o)))
        .collect();
    let dirs = RunDirs::beside(backend, &plan.name, &run_id);
    let mut ctx = RunContext::new(config, plan, run_id.clone(), dirs, opts.grace, previous)
        .map_err(ApplyError::Setup)?;
    // A resumed run: what its steps returned before it was interrupted.
    for (name, record) in &state.steps {
        if record.params_run.as_deref() == Some(run_id.as_str())
            && let Some(outputs) = &record.outputs
        {
            ctx.keep_outputs(name, outputs);
        }
    }
    let (names, graph) = graph_of(&ctx.config, &ctx.plan, None);
    let digests: Vec<String> = names
        .iter()
        .map(|n| step_digest(&ctx.config, &ctx.plan.repos, n, &run_id))
        .collect();
    let params = params_of(&ctx.plan, &names);
    ctx.journal = Some(RunJournal {
        journal,
        rows: backend.step_rows(),
        steps: names
            .iter()
            .zip(&digests)
            .zip(&params)
            .map(|((n, d), p)| (n.clone(), (d.clone(), p.clone())))
            .collect(),
    });
    let ctx = Arc::new(ctx);
    reporter.event(&Event::RunStarted {
        run_id: run_id.clone(),
        plan: ctx.plan.name.clone(),
        cycle: ctx.plan.cycle,
        steps: names.len(),
        resumed,
        at: ctx.now,
    });
    let initial = record::done_before(&mut state, &ctx, &names, &digests, reporter);
    let mut recorder = record::Recorder {
        state: &mut state,
        backend,
        run_id: &run_id,
        digests: &digests,
        params: &params,
        reporter,
        write_error: None,
    };
    let done = dispatch::dispatch(
        ctx.clone(),
        &names,
        &graph,
        initial,
        opts.parallelism,
        controls,
        &mut recorder,
    )
    .await;
    let write_error = recorder.write_error.take();
    let counts = report::counts(&done.results);
    let result = report::run_result(&counts, done.stopped.is_some(), write_error.is_some());
    record::end_run(&mut state, &ctx, &names, &done.results, result);
    backend.write_async(&mut state).await?;
    if let Some(j) = &ctx.journal {
        j.clear();
        if let Err(e) = backend.fold_step_ends().await {
            tracing::warn!("{e}");
        }
    }
    if let Some(e) = write_error {
        return Err(e.into());
    }
    reporter.event(&Event::RunFinished {
        run_id: run_id.clone(),
        result,
        counts,
        duration_ms: started.elapsed().as_millis() as u64,
    });
    Ok(ApplyReport::new(
        run_id,
        result,
        &names,
        &done.results,
        &state,
    ))
}
