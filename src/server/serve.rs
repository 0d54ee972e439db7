//! `kcideploy serve`: the webhook endpoint, `/status` and `/metrics` on one listener, and a
//! worker that feeds queued events to the policy [`Scheduler`], answers `@kcibot` commands and
//! runs deploys on a thread of their own (the same code as `apply`: plan, apply, blame,
//! notify).
//!
//! Nothing is lost: a queued delivery stays on disk until a deploy started after it has
//! finished (or until it needs no deploy), so a restart replays it. A comment the bot has
//! answered is marked so, and is not answered twice.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use indexmap::IndexMap;
use jiff::Timestamp;
use miette::{IntoDiagnostic, Result};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::command::{self, BotCommand};
use super::endpoint::{App, Entry, Queue, webhook_router};
use super::metrics::{self, Metrics};
use super::policy::{Reaction, Scheduler};
use super::webhook::Event;
use crate::apply::events::{Event as ApplyEvent, Reporter};
use crate::apply::process::Cancel;
use crate::config::{Config, Cycle, ForgeKind};
use crate::exit::ExitStatus;
use crate::forge::github::{GitHub, slug};
use crate::planner::{self, CycleRequest, Plan, PlanOptions};
use crate::state::{Approval, LocalState, StateLock};
use crate::support::cron::Cron;

/// How `serve` runs deploys.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub file: PathBuf,
    pub listen: String,
    pub notify: bool,
    pub parallelism: usize,
    pub grace: Duration,
    pub lock_timeout: Duration,
}

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
    pub state: String,
    pub duration_ms: Option<u64>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastDeploy {
    pub cycle: Cycle,
    /// `success`, `failed`, `cancelled`, `nothing` (nothing to do) or `error`.
    pub result: String,
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
    pub state: String,
    pub detail: Option<String>,
}

/// Shared by the HTTP handlers, the worker and the deploy thread.
struct Hub {
    config: Config,
    opts: ServeOptions,
    queue: Queue,
    metrics: Arc<Metrics>,
    status: Mutex<Status>,
    /// Guards the approvals file.
    approvals: Mutex<()>,
    /// How many approvals the file holds.
    approvals_pending: std::sync::atomic::AtomicUsize,
}

impl Hub {
    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn approvals_file(&self) -> PathBuf {
        self.queue.dir().join("approvals.json")
    }

    fn read_approvals(&self) -> Vec<Approval> {
        std::fs::read(self.approvals_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Keep an approval on disk until a deploy records it in state.
    fn add_approval(&self, approval: Approval) -> std::io::Result<usize> {
        let _guard = self.approvals.lock().unwrap_or_else(|p| p.into_inner());
        let mut list = self.read_approvals();
        list.retain(|a| !(a.repo == approval.repo && a.change == approval.change));
        list.push(approval);
        let bytes = serde_json::to_vec_pretty(&list).map_err(std::io::Error::other)?;
        crate::support::write_atomic(&self.approvals_file(), &bytes)?;
        self.approvals_pending
            .store(list.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(list.len())
    }

    /// Move the approvals on disk into `state` (under its lock).
    fn record_approvals(&self, backend: &LocalState) -> Result<()> {
        let _guard = self.approvals.lock().unwrap_or_else(|p| p.into_inner());
        let list = self.read_approvals();
        if list.is_empty() {
            return Ok(());
        }
        let mut state = backend.read()?.unwrap_or_default();
        for a in list {
            state
                .approvals
                .retain(|old| !(old.repo == a.repo && old.change == a.change));
            state.approvals.push(a);
        }
        backend.write(&mut state)?;
        std::fs::remove_file(self.approvals_file()).into_diagnostic()?;
        self.approvals_pending
            .store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The plan file's repo for a GitHub `owner/name`.
    fn repo_for(&self, full_name: &str) -> Option<(String, &crate::config::RepoConfig)> {
        self.config
            .file
            .repos
            .iter()
            .find(|(_, r)| slug(r).is_some_and(|s| s.eq_ignore_ascii_case(full_name)))
            .map(|(n, r)| (n.clone(), r))
    }
}

/// Instant → wall clock.
fn wall(at: Instant) -> Timestamp {
    let now = Instant::now();
    let ts = Timestamp::now();
    let signed = if at >= now {
        jiff::SignedDuration::try_from(at - now).unwrap_or_default()
    } else {
        -jiff::SignedDuration::try_from(now - at).unwrap_or_default()
    };
    ts.checked_add(signed).unwrap_or(ts)
}

/// Wall clock → Instant, past or future.
fn instant(at: Timestamp) -> Instant {
    let now = Instant::now();
    let ahead = at.duration_since(Timestamp::now());
    let back = Duration::try_from(-ahead).ok();
    match (Duration::try_from(ahead), back) {
        (Ok(d), _) => now + d,
        (Err(_), Some(d)) => now.checked_sub(d).unwrap_or(now),
        _ => now,
    }
}

/// "now", "in 4m (at …)".
fn when(at: Instant) -> String {
    let now = Instant::now();
    if at <= now + Duration::from_secs(1) {
        return "now".into();
    }
    let secs = (at - now).as_secs();
    format!(
        "in {} (at {})",
        crate::config::HumanDuration::from_secs(secs.max(1)),
        wall(at).strftime("%H:%M UTC")
    )
}

/// Run the service until SIGTERM/SIGINT.
pub fn serve(opts: ServeOptions) -> Result<ExitStatus> {
    let config = Config::load(&opts.file)?;
    let secret_env = config.file.server.secret_env.clone();
    let secret = std::env::var(&secret_env)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            miette::miette!(
                help = "set it to the secret of the GitHub webhook (Settings → Webhooks)",
                "the webhook secret is missing: set the environment variable {secret_env}"
            )
        })?;
    let state_path = config.state_path();
    let queue_dir = state_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join(format!("{}.webhooks", config.file.name));
    let queue = Queue::open(&queue_dir)
        .into_diagnostic()
        .map_err(|e| e.wrap_err(format!("cannot open the queue {}", queue_dir.display())))?;
    let cron = config
        .file
        .policy
        .schedule
        .as_ref()
        .map(|c| Cron::parse(&c.value))
        .transpose()
        .map_err(|e| miette::miette!("{e}"))?;
    if config.file.server.maintainers.is_empty()
        && config.file.server.maintainer_associations.is_empty()
    {
        tracing::warn!(
            "nobody may command @{}: set server.maintainers or server.maintainer_associations",
            config.file.server.bot
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .into_diagnostic()?;
    let hub = Arc::new(Hub {
        config,
        opts,
        queue,
        metrics: Arc::new(Metrics::default()),
        status: Mutex::new(Status::default()),
        approvals: Mutex::new(()),
        approvals_pending: Default::default(),
    });
    hub.approvals_pending.store(
        hub.read_approvals().len(),
        std::sync::atomic::Ordering::Relaxed,
    );
    runtime.block_on(run(hub, secret.into_bytes(), cron))
}

async fn run(hub: Arc<Hub>, secret: Vec<u8>, cron: Option<Cron>) -> Result<ExitStatus> {
    let listener = tokio::net::TcpListener::bind(&hub.opts.listen)
        .await
        .into_diagnostic()
        .map_err(|e| e.wrap_err(format!("cannot listen on {}", hub.opts.listen)))?;
    let addr = listener.local_addr().into_diagnostic()?;
    let (sink, entries) = mpsc::unbounded_channel();
    let app = Arc::new(App {
        secret,
        queue: hub.queue.clone(),
        metrics: hub.metrics.clone(),
        sink: Some(sink),
    });
    let router = webhook_router(app, hub.config.file.server.max_body).merge(
        axum::Router::new()
            .route("/", get(status_html))
            .route("/status", get(status))
            .route("/metrics", get(metrics_text))
            .route("/healthz", get(|| async { "ok\n" }))
            .with_state(hub.clone()),
    );
    {
        let mut s = hub.status();
        s.plan = hub.config.file.name.clone();
        s.listening = addr.to_string();
        s.started_at = Some(Timestamp::now());
    }
    // Signals: the first stops cleanly, the second kills running steps.
    let (stop_tx, stop_rx) = watch::channel(0u32);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .into_diagnostic()?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .into_diagnostic()?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stop_tx.send_modify(|n| *n += 1);
            tracing::warn!(
                "stopping: {}",
                if *stop_tx.borrow() == 1 {
                    "no new deploys; the running one stops cleanly (again to kill its steps)"
                } else {
                    "killing the running steps"
                }
            );
        }
    });
    println!("kcideploy serve: listening on http://{addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut http_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|n| *n > 0).await;
            })
            .await
    });
    let worker = Worker::new(hub.clone(), cron)?;
    worker.run(entries, stop_rx).await;
    match server.await {
        Ok(Ok(())) => Ok(ExitStatus::Success),
        Ok(Err(e)) => Err(miette::miette!("the HTTP server failed: {e}")),
        Err(e) => Err(miette::miette!("the HTTP server task failed: {e}")),
    }
}

/// The result of one deploy thread.
struct Outcome {
    cycle: Cycle,
    started_at: Timestamp,
    result: String,
    run_id: Option<String>,
    plan: Option<Plan>,
    error: Option<String>,
}

struct Running {
    cycle: Cycle,
    cancel: watch::Sender<Cancel>,
    /// Start again from the beginning when it has stopped.
    restart: bool,
}

enum Handled {
    /// Needs a deploy: stays queued until one that started after it finishes.
    Keep,
    /// Needs nothing more.
    Ack,
}

struct Worker {
    hub: Arc<Hub>,
    sched: Scheduler,
    /// Deliveries fed to the scheduler and not yet acknowledged.
    handled: BTreeSet<String>,
    /// Deliveries the running deploy includes.
    covered: Vec<String>,
    running: Option<Running>,
    done_tx: mpsc::UnboundedSender<Outcome>,
    done_rx: Option<mpsc::UnboundedReceiver<Outcome>>,
    cron: Option<Cron>,
    cron_next: Option<Instant>,
    github: Option<Arc<GitHub>>,
}

impl Worker {
    fn new(hub: Arc<Hub>, cron: Option<Cron>) -> Result<Worker> {
        let state = LocalState::new(hub.config.state_path()).read()?;
        let (last_finished, last_full) = state.as_ref().map(history_times).unwrap_or_default();
        let sched = Scheduler::new(&hub.config.file.policy, last_finished, last_full);
        if let Some(state) = &state {
            let mut status = hub.status();
            status.last = state.history.last().and_then(|run| {
                Some(LastDeploy {
                    cycle: run.cycle,
                    result: run.result.to_string(),
                    run_id: Some(run.id.clone()),
                    started_at: run.started_at,
                    finished_at: run.finished_at?,
                    error: None,
                })
            });
            status.changes = deployed_changes(state);
        }
        let github = match GitHub::new(&hub.config, &crate::forge::default_cache_dir(&hub.config)) {
            // The worker awaits the bot's calls: never minutes behind a rate limit.
            Ok(g) => Some(Arc::new(g.with_max_wait(Duration::from_secs(15)))),
            Err(e) => {
                let server = &hub.config.file.server;
                if !server.maintainers.is_empty() || !server.maintainer_associations.is_empty() {
                    tracing::warn!("the bot cannot read PRs or reply: {e}");
                }
                None
            }
        };
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut w = Worker {
            hub,
            sched,
            handled: BTreeSet::new(),
            covered: Vec::new(),
            running: None,
            done_tx,
            done_rx: Some(done_rx),
            cron,
            cron_next: None,
            github,
        };
        w.next_cron();
        Ok(w)
    }

    /// Tell the scheduler what state says about the last deploys.
    fn observe_state(&mut self) {
        match LocalState::new(self.hub.config.state_path()).read() {
            Ok(Some(state)) => {
                let (finished, full) = history_times(&state);
                self.sched.observe(finished, full);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot read the state: {e}"),
        }
    }

    fn next_cron(&mut self) {
        self.cron_next = self
            .cron
            .as_ref()
            .and_then(|c| c.next_after(Timestamp::now()))
            .map(instant);
    }

    async fn run(
        mut self,
        mut entries: mpsc::UnboundedReceiver<Entry>,
        mut stop: watch::Receiver<u32>,
    ) {
        let Some(mut done_rx) = self.done_rx.take() else {
            return;
        };
        // What a previous process accepted and did not finish.
        for entry in self.hub.queue.pending() {
            if self.handled.insert(entry.delivery.clone()) {
                self.handle(entry).await;
            }
        }
        loop {
            if self.running.is_none()
                && *stop.borrow() == 0
                && self
                    .sched
                    .next_due()
                    .is_some_and(|due| due <= Instant::now())
            {
                // A manual apply or `run` may have deployed meanwhile.
                self.observe_state();
                if let Some(cycle) = self.sched.start_if_due(Instant::now()) {
                    self.launch(cycle);
                }
            }
            self.publish();
            let due = if self.running.is_none() {
                self.sched.next_due()
            } else {
                None
            };
            let far = Instant::now() + Duration::from_secs(365 * 86_400);
            tokio::select! {
                Some(entry) = entries.recv() => {
                    // The start-up scan may have handled (and acknowledged) it already.
                    if self.hub.queue.is_pending(&entry.delivery)
                        && self.handled.insert(entry.delivery.clone())
                    {
                        self.handle(entry).await;
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or(far)), if due.is_some() => {}
                _ = tokio::time::sleep_until(self.cron_next.unwrap_or(far)), if self.cron_next.is_some() => {
                    if self.sched.running() == Some(Cycle::Full) {
                        tracing::info!("policy.schedule: a full cycle is running already");
                    } else {
                        tracing::info!("policy.schedule: full cycle");
                        self.sched.request(Instant::now(), Cycle::Full);
                    }
                    self.next_cron();
                }
                Some(outcome) = done_rx.recv() => self.finished(outcome),
                _ = stop.changed() => {
                    self.stop(&mut done_rx, &mut stop).await;
                    return;
                }
            }
        }
    }

    /// Stop: no new deploys; the running one is cancelled cleanly (its state says so, and
    /// the next start resumes it), or killed on a second signal.
    async fn stop(
        &mut self,
        done_rx: &mut mpsc::UnboundedReceiver<Outcome>,
        stop: &mut watch::Receiver<u32>,
    ) {
        let Some(run) = &self.running else {
            return;
        };
        let _ = run.cancel.send(Cancel::Graceful);
        loop {
            tokio::select! {
                outcome = done_rx.recv() => {
                    if let Some(mut o) = outcome {
                        // Entries stay queued: the next start deploys them.
                        self.covered.clear();
                        o.error.get_or_insert_with(|| "stopped by a signal".into());
                        self.record(o);
                    }
                    return;
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() > 1 {
                        let _ = run.cancel.send(Cancel::Kill);
                    }
                }
            }
        }
    }

    /// Feed one queued delivery to the scheduler or the bot.
    async fn handle(&mut self, entry: Entry) {
        let handled = match entry.payload.clone() {
            Event::Ping => {
                tracing::info!("ping from GitHub ({})", entry.delivery);
                Handled::Ack
            }
            Event::PullRequest {
                repo,
                number,
                action,
                ..
            } => match self.hub.repo_for(&repo) {
                Some(_) => self.event(&format!("{repo}#{number} {action}")),
                None => self.unknown_repo(&repo),
            },
            Event::Push { repo, branch, .. } => match self.hub.repo_for(&repo) {
                Some((_, cfg)) if branch == cfg.base => {
                    self.event(&format!("push to {repo} {branch}"))
                }
                Some((_, cfg))
                    if cfg.forge == ForgeKind::Git
                        && branch != cfg.staging_branch
                        && crate::config::glob(&cfg.pending.branches.value)
                            .is_ok_and(|g| g.compile_matcher().is_match(&branch)) =>
                {
                    self.event(&format!("push to {repo} {branch}"))
                }
                Some(_) => Handled::Ack,
                None => self.unknown_repo(&repo),
            },
            Event::PrComment {
                repo,
                number,
                author,
                association,
                body,
                ..
            } => {
                self.comment(&entry, &repo, number, &author, &association, &body)
                    .await
            }
        };
        if let Handled::Ack = handled {
            self.ack(&entry.delivery);
        }
    }

    fn unknown_repo(&self, repo: &str) -> Handled {
        tracing::info!("event for {repo}, which is not a repo of this plan: ignored");
        Handled::Ack
    }

    fn ack(&mut self, delivery: &str) {
        self.handled.remove(delivery);
        if let Err(e) = self.hub.queue.ack(delivery) {
            tracing::warn!("cannot acknowledge delivery {delivery}: {e}");
        }
    }

    /// An event that may change what staging should be.
    fn event(&mut self, what: &str) -> Handled {
        let reaction = self.sched.on_event(Instant::now());
        match reaction {
            Reaction::Scheduled(at) => tracing::info!("{what}: deploy {}", when(at)),
            Reaction::RestartRunning => {
                tracing::info!("{what}: restarting the running partial deploy");
                self.restart();
            }
            Reaction::Queued => tracing::info!("{what}: after the running deploy"),
        }
        Handled::Keep
    }

    fn restart(&mut self) {
        if let Some(run) = &mut self.running {
            run.restart = true;
            let _ = run.cancel.send(Cancel::Graceful);
        }
    }

    async fn comment(
        &mut self,
        entry: &Entry,
        full_name: &str,
        number: u64,
        author: &str,
        association: &str,
        body: &str,
    ) -> Handled {
        let hub = self.hub.clone();
        let server = &hub.config.file.server;
        // The bot's own comments (as a user or a GitHub App, `name[bot]`) are never commands.
        if author
            .trim_end_matches("[bot]")
            .eq_ignore_ascii_case(&server.bot)
        {
            return Handled::Ack;
        }
        let commands = command::parse(body, &server.bot);
        if commands.is_empty() {
            return Handled::Ack;
        }
        let Some((repo, _)) = self.hub.repo_for(full_name) else {
            return self.unknown_repo(full_name);
        };
        let permitted = server
            .maintainers
            .iter()
            .any(|m| m.eq_ignore_ascii_case(author))
            || server
                .maintainer_associations
                .iter()
                .any(|a| a.as_str() == association);
        let replay = entry.replied;
        let mut lines = Vec::new();
        let mut keep = false;
        if !permitted {
            tracing::info!("{full_name}#{number}: @{author} may not command the bot");
            lines.push(format!(
                "Sorry @{author}, only the maintainers of this deployment can command me; \
                 nothing was done. A maintainer can comment `@{} deploy` to include this PR.",
                server.bot
            ));
        }
        for cmd in commands.into_iter().filter(|_| permitted) {
            match cmd {
                Err(e) => lines.push(format!("{e}. {}", help_line(&server.bot))),
                Ok(command::Parsed {
                    command: BotCommand::Help,
                    ..
                }) => lines.push(help_text(&server.bot)),
                Ok(command::Parsed {
                    command: BotCommand::Status,
                    ..
                }) => lines.push(self.pr_status(&repo, number)),
                Ok(command::Parsed {
                    command: cmd @ (BotCommand::Deploy | BotCommand::Trigger),
                    sha,
                }) => {
                    let cycle = if cmd == BotCommand::Trigger {
                        Cycle::Full
                    } else {
                        Cycle::Partial
                    };
                    if !replay {
                        match self
                            .approve(&repo, full_name, number, author, sha.as_deref())
                            .await
                        {
                            Ok(line) => lines.push(line),
                            Err(e) => {
                                lines.push(format!("Not deploying #{number}: {e}."));
                                continue;
                            }
                        }
                    }
                    let reaction = self.sched.request(Instant::now(), cycle);
                    if reaction == Reaction::RestartRunning {
                        self.restart();
                    }
                    lines.push(self.explain(reaction, cycle));
                    keep = true;
                }
            }
        }
        if !replay {
            tracing::info!("{full_name}#{number}: @{author}: {}", lines.join(" / "));
            self.reply(full_name, number, &lines.join("\n\n")).await;
            if let Err(e) = self.hub.queue.mark_replied(&entry.delivery) {
                tracing::warn!("cannot mark delivery {} answered: {e}", entry.delivery);
            }
        }
        if keep { Handled::Keep } else { Handled::Ack }
    }

    /// Approve the PR's current head (recorded in state by the next deploy); with `sha`, only
    /// if the head starts with it.
    async fn approve(
        &self,
        repo: &str,
        full_name: &str,
        number: u64,
        by: &str,
        sha: Option<&str>,
    ) -> Result<String, String> {
        let gh = self
            .github
            .as_ref()
            .ok_or("no GitHub token to read the PR with")?;
        let pr = gh
            .get_one(&format!("/repos/{full_name}/pulls/{number}"))
            .await?;
        let head = pr["head"]["sha"]
            .as_str()
            .ok_or("the PR has no head.sha")?
            .to_string();
        let pr_author = pr["user"]["login"].as_str().unwrap_or("?").to_string();
        if let Some(sha) = sha
            && !head.starts_with(sha)
        {
            return Err(format!(
                "its head is `{}` now, not `{sha}`: nothing approved; look at the new commits and approve again",
                &head[..head.len().min(12)]
            ));
        }
        self.hub
            .add_approval(Approval {
                repo: repo.to_string(),
                change: format!("#{number}"),
                head: head.clone(),
                by: by.to_string(),
                at: Timestamp::now(),
            })
            .map_err(|e| format!("cannot keep the approval: {e}"))?;
        Ok(format!(
            "Approved #{number} by @{pr_author} at `{}` for {}; a later push needs a new approval.",
            &head[..head.len().min(12)],
            self.hub.config.file.name
        ))
    }

    fn explain(&self, reaction: Reaction, cycle: Cycle) -> String {
        let what = match cycle {
            Cycle::Partial => "a partial deploy (no test kernel)",
            Cycle::Full => "a full cycle (deploy, test kernel, result check)",
        };
        match reaction {
            Reaction::Scheduled(at) => format!("Starting {what} {}.", when(at)),
            Reaction::RestartRunning => {
                format!("Restarting the running partial deploy to include it: {what}, now.")
            }
            Reaction::Queued => format!(
                "A {} cycle is running; {what} starts right after it.",
                self.sched.running().map(Cycle::as_str).unwrap_or("deploy")
            ),
        }
    }

    fn pr_status(&self, repo: &str, number: u64) -> String {
        let id = format!("#{number}");
        let status = self.hub.status().clone();
        let seen = status
            .changes
            .iter()
            .find(|c| c.repo == repo && c.change == id);
        let mut line = match (seen, &status.last) {
            (Some(c), Some(last)) if c.state == "included" => format!(
                "{id} at `{}` was included in the last deploy ({} cycle, {}, {}).",
                &c.head[..c.head.len().min(12)],
                last.cycle.as_str(),
                last.result,
                last.finished_at.strftime("%Y-%m-%d %H:%M UTC")
            ),
            (Some(c), _) => format!(
                "{id} at `{}` was left out of the last deploy: {}{}.",
                &c.head[..c.head.len().min(12)],
                c.state,
                c.detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            (None, _) => format!("{id} was not part of a deploy by this server yet."),
        };
        if let Some(run) = &status.running {
            line.push_str(&format!(
                " A {} cycle is running since {}.",
                run.cycle.as_str(),
                run.started_at.strftime("%H:%M UTC")
            ));
        } else if let Some(next) = status.next_deploy {
            line.push_str(&format!(
                " Next deploy: {} cycle at {}.",
                status.next_cycle.map(Cycle::as_str).unwrap_or("partial"),
                next.strftime("%Y-%m-%d %H:%M UTC")
            ));
        }
        line
    }

    async fn reply(&self, full_name: &str, number: u64, text: &str) {
        let Some(gh) = &self.github else {
            tracing::warn!("{full_name}#{number}: no GitHub token; reply not posted: {text}");
            return;
        };
        let body = serde_json::json!({ "body": text });
        if let Err(e) = gh
            .post(
                &format!("/repos/{full_name}/issues/{number}/comments"),
                &body,
            )
            .await
        {
            tracing::warn!("{full_name}#{number}: cannot reply: {e}");
        }
    }

    fn launch(&mut self, cycle: Cycle) {
        let (cancel, cancel_rx) = watch::channel(Cancel::None);
        let hub = self.hub.clone();
        let done = self.done_tx.clone();
        let started_at = Timestamp::now();
        tracing::info!("starting a {} cycle", cycle.as_str());
        let spawned = std::thread::Builder::new()
            .name("deploy".into())
            .spawn(move || {
                let outcome = deploy(&hub, cycle, cancel_rx, started_at);
                let _ = done.send(outcome);
            });
        if let Err(e) = spawned {
            let _ = self.done_tx.send(Outcome {
                cycle,
                started_at,
                result: "error".into(),
                run_id: None,
                plan: None,
                error: Some(format!("cannot start the deploy thread: {e}")),
            });
        }
        self.covered = self.handled.iter().cloned().collect();
        self.running = Some(Running {
            cycle,
            cancel,
            restart: false,
        });
        self.hub.metrics.running.set(1);
        self.hub.status().running = Some(RunStatus {
            cycle,
            started_at,
            run_id: None,
            restarts: self.sched.restarts().unwrap_or(0),
            steps: IndexMap::new(),
        });
    }

    fn finished(&mut self, outcome: Outcome) {
        let Some(run) = self.running.take() else {
            return;
        };
        if run.restart {
            tracing::info!(
                "the partial deploy stopped ({}); starting it again",
                outcome.result
            );
            self.hub
                .metrics
                .deploy(outcome.cycle.as_str(), &outcome.result);
            self.launch(run.cycle);
            return;
        }
        self.sched.on_finished(Instant::now());
        if outcome.result == "error" {
            // Planning or fetching failed: keep the events and try again after the cooldown.
            self.sched.on_event(Instant::now());
        } else {
            for delivery in std::mem::take(&mut self.covered) {
                self.ack(&delivery);
            }
        }
        self.record(outcome);
    }

    /// Remember a finished deploy for `/status` and `/metrics`.
    fn record(&mut self, outcome: Outcome) {
        self.hub.metrics.running.set(0);
        self.hub
            .metrics
            .deploy(outcome.cycle.as_str(), &outcome.result);
        match &outcome.error {
            Some(e) => tracing::warn!("deploy {}: {e}", outcome.result),
            None => tracing::info!(
                "deploy finished: {} ({} cycle)",
                outcome.result,
                outcome.cycle.as_str()
            ),
        }
        let mut status = self.hub.status();
        status.running = None;
        if let Some(plan) = &outcome.plan {
            status.changes = changes(plan);
        }
        status.last = Some(LastDeploy {
            cycle: outcome.cycle,
            result: outcome.result,
            run_id: outcome.run_id,
            started_at: outcome.started_at,
            finished_at: Timestamp::now(),
            error: outcome.error,
        });
    }

    /// Refresh the scheduling fields of `/status` and the queue gauge.
    fn publish(&self) {
        let now = Instant::now();
        let depth = self.handled.len();
        self.hub.metrics.queue_depth.set(depth as i64);
        let approvals = self
            .hub
            .approvals_pending
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut status = self.hub.status();
        status.queue = depth;
        status.approvals_pending = approvals;
        let next = self.sched.next_due();
        status.next_deploy = next.map(wall);
        status.next_cycle = next.map(|at| self.sched.next_cycle(at.max(now)));
        status.next_full = Some(wall(self.sched.full_due().max(now)));
        status.schedule_next = self.cron_next.map(wall);
        if let Some(run) = &mut status.running {
            run.restarts = self.sched.restarts().unwrap_or(0);
        }
    }
}

/// When the last deploy ended and when the last full cycle did, by state.
fn history_times(state: &crate::state::State) -> (Option<Instant>, Option<Instant>) {
    (
        state
            .history
            .iter()
            .filter_map(|r| r.finished_at)
            .max()
            .map(instant),
        state.cycles.last_full.map(instant),
    )
}

/// The changes state says are deployed, and the ones left out for breaking a deploy (what
/// `/status` shows before this process deployed anything).
fn deployed_changes(state: &crate::state::State) -> Vec<ChangeStatus> {
    let mut out = Vec::new();
    for (repo, rs) in &state.repos {
        for c in &rs.included {
            out.push(ChangeStatus {
                repo: repo.clone(),
                change: c.id.clone(),
                head: c.head.clone(),
                author: String::new(),
                state: "included".into(),
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
            state: e.reason.to_string(),
            detail: Some(e.detail.clone()),
        });
    }
    out
}

fn changes(plan: &Plan) -> Vec<ChangeStatus> {
    let mut out = Vec::new();
    for (repo, rp) in &plan.repos {
        for c in &rp.included {
            out.push(ChangeStatus {
                repo: repo.clone(),
                change: c.id.clone(),
                head: c.head.clone(),
                author: c.author.clone(),
                state: "included".into(),
                detail: None,
            });
        }
        for e in &rp.excluded {
            out.push(ChangeStatus {
                repo: repo.clone(),
                change: e.id.clone(),
                head: e.head.clone(),
                author: e.author.clone(),
                state: serde_json::to_value(e.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| "excluded".into()),
                detail: Some(e.detail.clone()),
            });
        }
    }
    out
}

fn help_line(bot: &str) -> String {
    format!("Comment `@{bot} help` for the commands.")
}

fn help_text(bot: &str) -> String {
    format!(
        "Commands (maintainers only):\n\
         - `@{bot} deploy [SHA]`: deploy staging now with this PR included (partial cycle, no \
         test kernel); approves the PR's current head if its author is not trusted (with a SHA, \
         only if the head is that commit).\n\
         - `@{bot} trigger`: the same, as a full cycle (test kernel and result check).\n\
         - `@{bot} status`: where this PR stands and when the next deploy is.\n\
         - `@{bot} help`: this text."
    )
}

/// One deploy, on its own thread: record pending approvals, plan, apply (with blame and
/// notifications).
fn deploy(
    hub: &Hub,
    cycle: Cycle,
    cancel: watch::Receiver<Cancel>,
    started_at: Timestamp,
) -> Outcome {
    let mut outcome = Outcome {
        cycle,
        started_at,
        result: "error".into(),
        run_id: None,
        plan: None,
        error: None,
    };
    match deploy_inner(hub, cycle, cancel) {
        Ok((plan, report)) => {
            match report {
                Some(r) => {
                    outcome.result = r.result.to_string();
                    outcome.run_id = Some(r.run_id);
                }
                None => outcome.result = "nothing".into(),
            }
            outcome.plan = Some(plan);
        }
        Err(e) => outcome.error = Some(format!("{e}")),
    }
    outcome
}

fn deploy_inner(
    hub: &Hub,
    cycle: Cycle,
    cancel: watch::Receiver<Cancel>,
) -> Result<(Plan, Option<crate::apply::ApplyReport>)> {
    // The plan file as it is now: an edited plan takes effect at the next deploy.
    let config = Config::load(&hub.opts.file)?;
    let backend = LocalState::new(config.state_path());
    let lock = StateLock::acquire(&backend.path, "serve", hub.opts.lock_timeout)?;
    hub.record_approvals(&backend)?;
    let state = backend.read()?;
    let cache = crate::forge::default_cache_dir(&config);
    let snapshot = crate::forge::snapshot(&config, &cache)?;
    let plan = planner::plan(
        &config,
        &snapshot,
        state.as_ref(),
        PlanOptions {
            cycle: CycleRequest::from(cycle),
            now: Timestamp::now(),
        },
    )?;
    if plan.is_deployed() {
        return Ok((plan, None));
    }
    let opts = crate::apply::ApplyOptions {
        parallelism: hub.opts.parallelism,
        grace: hub.opts.grace,
        handle_signals: false,
        cancel: Some(cancel),
        // `approve: true` steps stop the run: a service never confirms on its own.
        auto_approve: false,
    };
    let notify = hub.opts.notify && crate::notify::wanted(&config);
    let mut reporter = StatusReporter { hub };
    let deployed = crate::deploy::apply_with_blame(
        &config,
        plan,
        &backend,
        &lock,
        crate::deploy::DeployOptions {
            apply: opts,
            notify,
        },
        &mut reporter,
        &mut crate::deploy::Quiet,
    )?;
    Ok((deployed.plan, Some(deployed.report)))
}

/// Keeps `/status` and `/metrics` current while a deploy runs, and logs each step.
struct StatusReporter<'a> {
    hub: &'a Hub,
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
                        state: "running".into(),
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
                let result = result.as_str();
                tracing::info!("{step}: {result}");
                self.hub
                    .metrics
                    .step(step, result, *duration_ms as f64 / 1000.0);
                run.steps.insert(
                    step.clone(),
                    StepStatus {
                        state: result.to_string(),
                        duration_ms: Some(*duration_ms),
                        detail: detail.clone(),
                    },
                );
            }
            _ => {}
        }
    }
}

async fn status(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return status_html(State(hub)).await.into_response();
    }
    let status = hub.status().clone();
    match serde_json::to_string_pretty(&status) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            text + "\n",
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics_text(State(hub): State<Arc<Hub>>) -> Response {
    hub.metrics
        .queue_flushes
        .set(hub.queue.flushes().try_into().unwrap_or(i64::MAX));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        hub.metrics.encode(),
    )
        .into_response()
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

async fn status_html(State(hub): State<Arc<Hub>>) -> Html<String> {
    let s = hub.status().clone();
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
        Some(run) => {
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
                    esc(&step.state),
                    esc(&step.state),
                    step.duration_ms
                        .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                        .unwrap_or_default(),
                    esc(step.detail.as_deref().unwrap_or(""))
                ));
            }
            out.push_str("</table>");
        }
        None => out.push_str("<h2>No deploy running</h2>"),
    }
    if let Some(last) = &s.last {
        out.push_str(&format!(
            "<h2>Last deploy</h2><p class=\"{}\">{} cycle: {} (run {}), {} → {}{}</p>",
            esc(&last.result),
            last.cycle.as_str(),
            esc(&last.result),
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
            esc(&c.head[..c.head.len().min(12)]),
            esc(&c.author),
            esc(&c.state),
            esc(c.detail.as_deref().unwrap_or(""))
        ));
    }
    out.push_str("</table></body></html>\n");
    Html(out)
}
