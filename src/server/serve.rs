//! `kcideploy serve`: the webhook endpoint, `/status` and `/metrics` on one listener
//! ([`super::routes`]), and a worker ([`super::worker`]) that feeds queued events to the
//! policy scheduler, answers `@kcibot` commands ([`super::bot`]) and runs deploys on a thread
//! of their own (the same code as `apply`: plan, apply, blame, notify; [`super::run_deploy`]).
//!
//! Nothing is lost: a queued delivery stays on disk until a deploy started after it has
//! finished (or until it needs no deploy), so a restart replays it. A comment the bot has
//! answered is marked so, and is not answered twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use miette::{IntoDiagnostic, Result};
use tokio::sync::{mpsc, watch};

use super::endpoint::{App, Deliveries, Queue};
use super::hub::Hub;
use super::pg_queue::PgQueue;
use super::routes;
use super::worker::Worker;
use crate::config::Config;
use crate::exit::ExitStatus;
use crate::state::Backend;
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

/// Run the service until SIGTERM/SIGINT.
pub fn serve(opts: ServeOptions) -> Result<ExitStatus> {
    let config = Config::load(&opts.file)?;
    let backend = Backend::open(&config)?;
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
    let state_path = backend.path().to_path_buf();
    let queue_dir = state_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join(format!("{}.webhooks", config.file.name));
    let queue: Deliveries = match &backend {
        Backend::Local(_) => Queue::open(&queue_dir)
            .into_diagnostic()
            .map_err(|e| e.wrap_err(format!("cannot open the queue {}", queue_dir.display())))?
            .into(),
        Backend::Postgres(pg) => {
            std::fs::create_dir_all(&queue_dir)
                .into_diagnostic()
                .map_err(|e| e.wrap_err(format!("cannot create {}", queue_dir.display())))?;
            Deliveries::Table {
                queue: PgQueue::new(pg.clone(), &replica_id(&opts.listen)),
                dir: queue_dir,
            }
        }
    };
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
    let placeholders = super::bot::placeholders(&config.file.server);
    if !placeholders.is_empty() {
        tracing::warn!(
            "server.maintainers with the placeholder id 0 cannot command @{} until their \
             GitHub user id is set: {}",
            config.file.server.bot,
            placeholders.join(", ")
        );
    }
    let hub = Arc::new(Hub::new(config, backend, opts, queue));
    // On the process's one runtime.
    crate::support::rt::block_on(run(hub, secret.into_bytes(), cron))
}

/// This replica's name: host, pid and where it listens.
fn replica_id(listen: &str) -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host}:{}:{listen}", std::process::id())
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
        // Replicas: the leader reads what any replica queued from the table.
        sink: hub.queue.table().is_none().then(|| sink.clone()),
        acts_on: Some(Box::new({
            let hub = hub.clone();
            move |event| hub.acts_on(event)
        })),
    });
    let router = routes::router(hub.clone(), app);
    {
        let mut s = hub.status();
        s.plan = hub.config.file.name.clone();
        s.listening = addr.to_string();
        s.started_at = Some(Timestamp::now());
    }
    let stop_rx = signals()?;
    // One serve: the state is read (the status has the last deploy) before the address is
    // announced. Replicas: once this one leads.
    let (candidate, leads) = match &hub.backend {
        Backend::Local(_) => (None, true),
        Backend::Postgres(pg) => {
            let c = super::replicas::start(&hub, pg.clone(), addr).await;
            let leads = c.leads();
            (Some(c), leads)
        }
    };
    let (worker, cron) = if leads {
        (Some(Worker::new(hub.clone(), cron)?), None)
    } else {
        (None, cron)
    };
    println!("kcideploy serve: listening on http://{addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let cap = super::listener::connection_cap(super::listener::raise_open_files());
    let server = tokio::spawn(super::listener::serve(
        listener,
        router,
        cap,
        stop_rx.clone(),
    ));
    let mut stop_rx = stop_rx;
    let worker = match (worker, candidate) {
        (None, Some(candidate)) => {
            let leads =
                super::replicas::follow_until_leader(&hub, candidate, sink, &mut stop_rx).await;
            // The new leader reads the state as it is now.
            if leads {
                Some(Worker::new(hub.clone(), cron)?)
            } else {
                None
            }
        }
        (Some(worker), Some(c)) => {
            // It leads already: this starts the feed and the fence, or it was stopped.
            let leads = super::replicas::follow_until_leader(&hub, c, sink, &mut stop_rx).await;
            leads.then_some(worker)
        }
        (Some(worker), None) => {
            hub.metrics.leader.set(1);
            Some(worker)
        }
        (None, None) => None,
    };
    if let Some(worker) = worker {
        // A task of the runtime, not the future this thread blocks on: a delivery handed to
        // it wakes a runtime worker (often the one that queued it), not this thread too.
        tokio::spawn(worker.run(entries, stop_rx))
            .await
            .map_err(|e| miette::miette!("the deploy worker failed: {e}"))?;
    }
    match server.await {
        Ok(Ok(())) => Ok(ExitStatus::Success),
        Ok(Err(e)) => Err(miette::miette!("the HTTP server failed: {e}")),
        Err(e) => Err(miette::miette!("the HTTP server task failed: {e}")),
    }
}

/// Count SIGTERM/SIGINT: the first stops cleanly, the second kills running steps.
fn signals() -> Result<watch::Receiver<u32>> {
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
    Ok(stop_rx)
}
