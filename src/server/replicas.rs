//! `serve` replicas on one PostgreSQL database: every replica accepts webhooks into the
//! shared table and serves the status pages; the one that wins the [`super::leader`] lock
//! feeds the table's deliveries to its worker, which schedules and runs deploys as a single
//! `serve` does. A new leader starts with what the table holds unacknowledged and resumes
//! an interrupted run ([`super::worker`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{mpsc, watch};

use super::endpoint::Entry;
use super::hub::Hub;
use super::leader::{Replica, Role, campaign};
use super::pg_queue::PgQueue;
use super::status::{ReplicaRole, ReplicaStatus};
use crate::state::postgres::PgState;

/// How often a follower reads the state again for its status pages.
const FOLLOWER_REFRESH: Duration = Duration::from_secs(5);
/// How often the leader looks for deliveries other replicas queued.
pub const POLL_EVERY: Duration = Duration::from_millis(200);
/// How long acknowledged deliveries are kept to recognise GitHub's redeliveries.
pub const KEEP_ACKED: Duration = Duration::from_secs(30 * 86_400);
/// How often the leader forgets older ones.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A replica campaigning for the lead.
pub(super) struct Candidate {
    me: Replica,
    role: watch::Receiver<Role>,
}

impl Candidate {
    /// Whether it leads now.
    pub(super) fn leads(&self) -> bool {
        *self.role.borrow() == Role::Leader
    }
}

/// This replica, listening on `addr`, campaigns for the lead (its first attempt made when
/// this returns).
pub(super) async fn start(hub: &Hub, pg: Arc<PgState>, addr: SocketAddr) -> Candidate {
    let me = me(hub, addr);
    let role = campaign(pg, me.clone()).await;
    let leader = match &*role.borrow() {
        Role::Follower(leader) => Some(leader.clone()),
        _ => None,
    };
    if let Some(leader) = leader {
        publish(hub, &me, ReplicaRole::Follower, leader);
        show_state(hub).await;
    }
    Candidate { me, role }
}

fn me(hub: &Hub, addr: SocketAddr) -> Replica {
    Replica {
        id: match hub.queue.table() {
            Some(q) => q.replica().to_string(),
            None => format!("{}", std::process::id()),
        },
        host: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        pid: std::process::id(),
        listen: addr.to_string(),
        since: Timestamp::now().to_string(),
    }
}

/// Serve as a follower until this replica leads (`true`) or the process is stopped
/// (`false`). Once leading, the table's deliveries go to `sink`, and losing the lead ends
/// the process.
pub(super) async fn follow_until_leader(
    hub: &Arc<Hub>,
    candidate: Candidate,
    sink: mpsc::UnboundedSender<Entry>,
    stop: &mut watch::Receiver<u32>,
) -> bool {
    let Candidate { me, mut role } = candidate;
    loop {
        let now = role.borrow_and_update().clone();
        match now {
            Role::Leader => {
                publish(hub, &me, ReplicaRole::Leader, Some(me.clone()));
                hub.metrics.leader.set(1);
                if let Some(table) = hub.queue.table() {
                    crate::support::rt::handle().spawn(feed(table.clone(), sink));
                }
                crate::support::rt::handle().spawn(fence(role));
                return true;
            }
            Role::Follower(leader) => {
                publish(hub, &me, ReplicaRole::Follower, leader);
                show_state(hub).await;
            }
            // Lost before the worker started: nothing to give up but the process.
            Role::Deposed(why) => deposed(&why),
        }
        tokio::select! {
            changed = role.changed() => if changed.is_err() { deposed("the campaign ended") },
            _ = stop.changed() => return false,
            () = tokio::time::sleep(FOLLOWER_REFRESH) => {}
        }
    }
}

/// The last deploy and the changes it saw, as the leader recorded them in state.
async fn show_state(hub: &Hub) {
    match hub.backend.read_async().await {
        Ok(Some(state)) => super::worker::show_state(hub, &state),
        Ok(None) => {}
        Err(e) => tracing::warn!("cannot read the state: {e}"),
    }
}

fn publish(hub: &Hub, me: &Replica, role: ReplicaRole, leader: Option<Replica>) {
    hub.status().replica = Some(ReplicaStatus {
        id: me.id.clone(),
        role,
        leader,
    });
}

/// Send every unacknowledged delivery of the table to the worker, each once, as they come.
/// Every poll reads all the rows not yet acknowledged, not only those after the last one
/// seen: replicas commit concurrently, so a row can become visible after a later one.
async fn feed(table: PgQueue, sink: mpsc::UnboundedSender<Entry>) {
    let mut sent: HashSet<String> = HashSet::new();
    let mut said = false;
    let mut pruned = tokio::time::Instant::now();
    loop {
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = tokio::time::Instant::now();
            match table.prune(KEEP_ACKED).await {
                Ok(n) if n > 0 => tracing::info!("forgot {n} acknowledged deliveries"),
                Ok(_) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
        match table.pending_after(0).await {
            Ok(entries) => {
                said = false;
                let waiting: HashSet<String> =
                    entries.iter().map(|(_, e)| e.delivery.clone()).collect();
                for (_, entry) in entries {
                    if !sent.contains(&entry.delivery) && sink.send(entry).is_err() {
                        return;
                    }
                }
                // What was acknowledged since is forgotten; the rest stays sent.
                sent = waiting;
            }
            Err(e) if !said => {
                tracing::warn!("cannot read the webhook queue: {e}");
                said = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// End the process when the lead is lost: another replica may lead by now, and two leaders
/// must never deploy at once. The running deploy's steps die with it (they are killed when
/// their parent dies), and the new leader resumes the run.
async fn fence(mut role: watch::Receiver<Role>) {
    while role.changed().await.is_ok() {
        let lost = match &*role.borrow() {
            Role::Deposed(why) => Some(why.clone()),
            _ => None,
        };
        if let Some(why) = lost {
            deposed(&why);
        }
    }
}

/// The lead is lost: end the process (status 1) before it can do anything more.
fn deposed(why: &str) -> ! {
    eprintln!("kcideploy serve: this replica lost the lead ({why}); exiting");
    std::process::exit(i32::from(crate::exit::ExitStatus::Error.code()));
}
