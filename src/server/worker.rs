//! The worker: feeds queued deliveries to the policy [`Scheduler`] (and `@kcibot` comments to
//! [`super::bot`]), starts deploys on a thread of their own when the scheduler says so, and
//! acknowledges deliveries once a deploy that started after them has finished.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use jiff::Timestamp;
use miette::Result;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::bot::Comment;
use super::clock::{instant, wall, when};
use super::endpoint::Entry;
use super::hub::Hub;
use super::run_deploy::deploy;
use super::status::{
    ChangeStatus, DeployResult, LastDeploy, RunStatus, WaitStatus, deployed_changes,
};
use super::webhook::Event;
use crate::apply::process::Cancel;
use crate::config::Cycle;
use crate::forge::github::GitHub;
use crate::policy::scheduler::{Reaction, Scheduler};
use crate::support::cron::Cron;

/// Deliveries taken from the endpoint at once (then `/status` is refreshed once for all).
const ARRIVED_MAX: usize = 256;

/// The result of one deploy thread.
pub(super) struct Outcome {
    pub(super) cycle: Cycle,
    /// The deploy was a rollback to this run.
    pub(super) rollback: Option<String>,
    pub(super) started_at: Timestamp,
    pub(super) result: DeployResult,
    pub(super) run_id: Option<String>,
    /// The pending changes as the deploy saw them.
    pub(super) changes: Option<Vec<ChangeStatus>>,
    pub(super) error: Option<String>,
}

struct Running {
    cycle: Cycle,
    /// A rollback to this run (started again as one when restarted).
    rollback: Option<String>,
    cancel: watch::Sender<Cancel>,
    /// Start again from the beginning when it has stopped.
    restart: bool,
}

pub(super) enum Handled {
    /// Needs a deploy: stays queued until one that started after it finishes.
    Keep,
    /// Needs nothing more.
    Ack,
}

pub(super) struct Worker {
    pub(super) hub: Arc<Hub>,
    pub(super) sched: Scheduler,
    /// Deliveries fed to the scheduler and not yet acknowledged.
    handled: BTreeSet<String>,
    /// Deliveries the running deploy includes.
    covered: Vec<String>,
    /// PRs (`owner/name`, number) where a maintainer asked for the next deploy.
    pub(super) requested: BTreeSet<(String, u64)>,
    /// PRs where a maintainer asked for the running deploy: told if it fails to run.
    pub(super) asked: BTreeSet<(String, u64)>,
    running: Option<Running>,
    done_tx: mpsc::UnboundedSender<Outcome>,
    done_rx: Option<mpsc::UnboundedReceiver<Outcome>>,
    cron: Option<Cron>,
    cron_next: Option<Instant>,
    pub(super) github: Option<Arc<GitHub>>,
    /// `@kcibot rollback`: the next deploy deploys again what this run deployed.
    pub(super) rollback: Option<String>,
    /// Events for the next deploy: how many, and the last in words.
    events: (usize, Option<String>),
    /// An explicit request for the next deploy, in words (who asked).
    pub(super) request: Option<String>,
    /// Why the running deploy started.
    trigger: String,
    /// A run that a killed process (this replica's predecessor) left running: resumed first.
    interrupted: Option<(String, Cycle)>,
}

impl Worker {
    pub(super) fn new(hub: Arc<Hub>, cron: Option<Cron>) -> Result<Worker> {
        let state = hub.backend.read()?;
        let (last_finished, last_full) = state.as_ref().map(history_times).unwrap_or_default();
        let sched = Scheduler::new(&hub.config.file.policy, last_finished, last_full);
        let interrupted = state
            .as_ref()
            .and_then(|s| s.current_run.as_ref())
            .filter(|run| run.result == crate::state::RunResult::Running)
            .map(|run| (run.id.clone(), run.cycle));
        if let Some(state) = &state {
            show_state(&hub, state);
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
            requested: BTreeSet::new(),
            asked: BTreeSet::new(),
            running: None,
            done_tx,
            done_rx: Some(done_rx),
            cron,
            cron_next: None,
            github,
            rollback: None,
            events: (0, None),
            request: None,
            trigger: String::new(),
            interrupted,
        };
        w.next_cron();
        // `/status` says what comes next from the first request on.
        w.publish();
        Ok(w)
    }

    /// Tell the scheduler what state says about the last deploys.
    fn observe_state(&mut self) {
        match self.hub.backend.read() {
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

    pub(super) async fn run(
        mut self,
        mut entries: mpsc::UnboundedReceiver<Entry>,
        mut stop: watch::Receiver<u32>,
    ) {
        let Some(mut done_rx) = self.done_rx.take() else {
            return;
        };
        // What a previous process accepted and did not finish.
        let waiting = match self.hub.queue.pending().await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!("cannot read the webhook queue: {e}");
                Vec::new()
            }
        };
        for entry in waiting {
            if self.handled.insert(entry.delivery.clone()) {
                self.handle(entry).await;
            }
        }
        if let Some((id, cycle)) = self.interrupted.take() {
            tracing::info!("run {id} was interrupted (its process died): resuming it");
            self.request
                .get_or_insert_with(|| format!("resuming run {id}, interrupted"));
            self.sched.request(Instant::now(), cycle);
        }
        let (mut arrived, mut open) = (Vec::new(), true);
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
                    self.launch(cycle, false);
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
                // What arrived together is handled together, and published once.
                n = entries.recv_many(&mut arrived, ARRIVED_MAX), if open => {
                    open = n > 0;
                    for entry in arrived.drain(..) {
                        // The start-up scan may have handled (and acknowledged) it already.
                        if !self.handled.contains(&entry.delivery)
                            && self.hub.queue.is_pending(&entry.delivery).await
                            && self.handled.insert(entry.delivery.clone())
                        {
                            self.handle(entry).await;
                        }
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or(far)), if due.is_some() => {}
                _ = tokio::time::sleep_until(self.cron_next.unwrap_or(far)), if self.cron_next.is_some() => {
                    if self.sched.running() == Some(Cycle::Full) {
                        tracing::info!("policy.schedule: a full cycle is running already");
                    } else {
                        tracing::info!("policy.schedule: full cycle");
                        self.request.get_or_insert_with(|| "policy.schedule (full cycle)".into());
                        self.sched.request(Instant::now(), Cycle::Full);
                    }
                    self.next_cron();
                }
                Some(outcome) = done_rx.recv() => self.finished(outcome).await,
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
                Some((name, _)) => {
                    self.preview(name, &repo, number, &action);
                    self.event(&format!("{repo}#{number} {action}"))
                }
                None => self.unknown_repo(&repo),
            },
            Event::Push { repo, branch, .. } => match self.hub.repo_for(&repo) {
                Some((_, cfg)) if super::hub::push_matters(cfg, &branch) => {
                    self.event(&format!("push to {repo} {branch}"))
                }
                Some(_) => Handled::Ack,
                None => self.unknown_repo(&repo),
            },
            Event::Checks {
                repo,
                head,
                event,
                name,
                conclusion,
            } => match self.hub.repo_for(&repo) {
                Some(_) => self.event(&format!(
                    "{event} `{name}` {conclusion} on {repo}@{}",
                    crate::support::text::short(&head)
                )),
                None => self.unknown_repo(&repo),
            },
            Event::PrComment {
                repo,
                number,
                author,
                author_id,
                association,
                body,
                ..
            } => {
                let comment = Comment {
                    full_name: &repo,
                    number,
                    author: &author,
                    author_id,
                    association: &association,
                    body: &body,
                };
                self.comment(&entry, &comment).await
            }
        };
        if let Handled::Ack = handled {
            self.ack(&entry.delivery).await;
        }
    }

    /// Post the PR's plan preview (in the background), when PR comments are wanted.
    fn preview(&self, name: String, slug: &str, number: u64, action: &str) {
        let wanted = super::preview::wanted(action)
            && self.hub.opts.notify
            && self.hub.config.file.notify.enabled;
        if let (true, Some(github)) = (wanted, &self.github) {
            super::preview::spawn(
                self.hub.clone(),
                github.clone(),
                name,
                slug.to_string(),
                number,
            );
        }
    }

    pub(super) fn unknown_repo(&self, repo: &str) -> Handled {
        tracing::info!("event for {repo}, which is not a repo of this plan: ignored");
        Handled::Ack
    }

    async fn ack(&mut self, delivery: &str) {
        self.handled.remove(delivery);
        if let Err(e) = self.hub.queue.ack(delivery).await {
            tracing::warn!("cannot acknowledge delivery {delivery}: {e}");
        }
    }

    /// An event that may change what staging should be.
    fn event(&mut self, what: &str) -> Handled {
        self.events = (self.events.0 + 1, Some(what.to_string()));
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

    pub(super) fn restart(&mut self) {
        if let Some(run) = &mut self.running {
            run.restart = true;
            let _ = run.cancel.send(Cancel::Graceful);
        }
    }

    /// Why a deploy starts now, in words; forgets the events and request it covers.
    fn why(&mut self, cycle: Cycle, restart: bool) -> String {
        let (n, last) = std::mem::take(&mut self.events);
        let why = match (self.request.take(), last) {
            (Some(request), _) => request,
            (None, Some(last)) if n > 1 => format!("{n} events, the last: {last}"),
            (None, Some(last)) => last,
            // A restart for a request or an event names it; else it keeps its reason.
            (None, None) if restart => return self.trigger.clone(),
            (None, None) if cycle == Cycle::Full => {
                "a full cycle is due (policy.full_cycle_interval)".into()
            }
            (None, None) => "events queued before serve started".into(),
        };
        if restart {
            format!("restarted for {why}")
        } else {
            why
        }
    }

    fn launch(&mut self, cycle: Cycle, restart: bool) {
        let (cancel, cancel_rx) = watch::channel(Cancel::None);
        self.trigger = self.why(cycle, restart);
        let hub = self.hub.clone();
        let done = self.done_tx.clone();
        let started_at = Timestamp::now();
        let rollback = self.rollback.take();
        match &rollback {
            Some(run) => tracing::info!("starting a rollback to run {run}"),
            None => tracing::info!("starting a {} cycle", cycle.as_str()),
        }
        // Planning and the deploy loop are synchronous: a blocking thread of the runtime.
        let to = rollback.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = deploy(&hub, cycle, to, cancel_rx, started_at);
            let _ = done.send(outcome);
        });
        self.covered = self.handled.iter().cloned().collect();
        self.asked.append(&mut self.requested);
        self.running = Some(Running {
            cycle,
            rollback,
            cancel,
            restart: false,
        });
        self.hub.metrics.running.set(1);
        self.hub.status().running = Some(RunStatus {
            cycle,
            started_at,
            trigger: self.trigger.clone(),
            run_id: None,
            restarts: self.sched.restarts().unwrap_or(0),
            graph: Vec::new(),
            steps: IndexMap::new(),
        });
    }

    async fn finished(&mut self, outcome: Outcome) {
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
                .deploy(outcome.cycle.as_str(), outcome.result.as_str());
            // A rollback stopped by an event is started again as a rollback.
            if self.rollback.is_none() {
                self.rollback = run.rollback;
            }
            self.launch(run.cycle, true);
            return;
        }
        self.sched.on_finished(Instant::now());
        let failed = outcome.result == DeployResult::Error;
        if failed {
            // Planning or fetching failed: keep the events and try again after the cooldown.
            self.sched.on_event(Instant::now());
            if self.events.1.is_none() {
                self.events.1 = Some(format!(
                    "a retry of a deploy that failed ({})",
                    self.trigger
                ));
            }
        } else {
            for delivery in std::mem::take(&mut self.covered) {
                self.ack(&delivery).await;
            }
        }
        let run_id = self
            .hub
            .status()
            .running
            .as_ref()
            .and_then(|r| r.run_id.clone());
        let cycle = outcome.cycle;
        self.record(outcome);
        let asked = std::mem::take(&mut self.asked);
        if failed {
            // The steps never reported on these PRs: say so there.
            self.tell_failure(&asked, cycle, run_id.as_deref()).await;
        }
    }

    /// Remember a finished deploy for `/status` and `/metrics`.
    fn record(&mut self, outcome: Outcome) {
        self.hub.metrics.running.set(0);
        self.hub
            .metrics
            .deploy(outcome.cycle.as_str(), outcome.result.as_str());
        match &outcome.error {
            Some(e) => tracing::warn!("deploy {}: {e}", outcome.result),
            None => tracing::info!(
                "deploy finished: {} ({} cycle{})",
                outcome.result,
                outcome.cycle.as_str(),
                outcome
                    .rollback
                    .as_deref()
                    .map(|r| format!(", rollback to run {r}"))
                    .unwrap_or_default()
            ),
        }
        if let Some(id) = &outcome.run_id {
            self.hub.triggers.record(id, &self.trigger);
        }
        let mut status = self.hub.status();
        status.last_run = status.running.take();
        if let Some(changes) = outcome.changes {
            status.changes = changes;
        }
        status.last = Some(LastDeploy {
            cycle: outcome.cycle,
            result: outcome.result,
            run_id: outcome.run_id,
            started_at: outcome.started_at,
            finished_at: Timestamp::now(),
            error: outcome.error,
            trigger: Some(self.trigger.clone()),
        });
    }

    /// Refresh the scheduling fields of `/status` and the queue gauge.
    fn publish(&self) {
        let now = Instant::now();
        let depth = self.handled.len();
        self.hub.metrics.queue_depth.set(depth as i64);
        let approvals = self.hub.approvals.pending();
        let mut status = self.hub.status();
        status.queue = depth;
        status.approvals_pending = approvals;
        let next = self.sched.next_due();
        status.next_deploy = next.map(wall);
        status.next_cycle = next.map(|at| self.sched.next_cycle(at.max(now)));
        status.next_full = Some(wall(self.sched.full_due().max(now)));
        status.schedule_next = self.cron_next.map(wall);
        let w = self.sched.waiting(now);
        status.waiting = WaitStatus {
            settle_until: w.settle_until.map(wall),
            cooldown_until: w.cooldown_until.map(wall),
            requested: w.requested,
            max_restarts: w.max_restarts,
        };
        if let Some(run) = &mut status.running {
            run.restarts = self.sched.restarts().unwrap_or(0);
        }
    }
}

/// What state says of the last deploy and the changes it saw, on the status pages.
pub(super) fn show_state(hub: &Hub, state: &crate::state::State) {
    let mut status = hub.status();
    status.last = state.history.last().and_then(|run| {
        Some(LastDeploy {
            cycle: run.cycle,
            result: DeployResult::Run(run.result),
            run_id: Some(run.id.clone()),
            started_at: run.started_at,
            finished_at: run.finished_at?,
            error: None,
            trigger: hub.triggers.get(&run.id),
        })
    });
    status.changes = deployed_changes(state);
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
