//! Leadership among `serve` replicas on one PostgreSQL database: the replica whose
//! connection holds the plan's leader advisory lock is the leader, and runs the worker
//! (scheduler, bot, deploys); the others accept webhooks into the shared queue and serve
//! `/status` and `/metrics`. The lock is a session lock: when the leader dies its connection
//! closes and PostgreSQL releases it, and a follower, which tries every
//! [`CAMPAIGN_EVERY`], takes it. A leader that loses its connection stops deploying at once
//! (the process exits): another replica may be leader by then.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::state::postgres::{PgState, cause};

/// How often a follower tries to become leader, and the leader checks its connection.
pub const CAMPAIGN_EVERY: Duration = Duration::from_secs(1);
/// How long one check may take before the connection is taken for dead.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Who this replica is, as `/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Replica {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub listen: String,
    pub since: String,
}

/// This replica's role.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// Another replica leads (the one named, when its row could be read), or none could be
    /// reached yet.
    Follower(Option<Replica>),
    Leader,
    /// The leader's connection broke: it must stop.
    Deposed(String),
}

/// The advisory lock key of a plan's leadership.
fn leader_key(name: &str) -> i64 {
    crate::state::postgres::lock_key(&format!("leader:{name}"))
}

/// Campaign for leadership until the process ends; the role is published on the returned
/// channel. The first attempt is made before this returns: a lone replica leads from the
/// start.
pub async fn campaign(pg: Arc<PgState>, me: Replica) -> watch::Receiver<Role> {
    let (tx, rx) = watch::channel(Role::Follower(None));
    let mut conn: Option<Client> = None;
    let first = try_lead(&pg, &me, &mut conn).await;
    let mut said = false;
    let leads = publish(&tx, &me, first, &mut conn, &mut said);
    crate::support::rt::handle().spawn(async move {
        if !leads {
            loop {
                tokio::time::sleep(CAMPAIGN_EVERY).await;
                let attempt = try_lead(&pg, &me, &mut conn).await;
                if publish(&tx, &me, attempt, &mut conn, &mut said) {
                    break;
                }
            }
        }
        let why = match &conn {
            Some(client) => hold(client).await,
            None => "no connection".to_string(),
        };
        tracing::error!("leadership lost: {why}");
        let _ = tx.send(Role::Deposed(why));
    });
    rx
}

/// Publish what an attempt found; whether this replica now leads.
fn publish(
    tx: &watch::Sender<Role>,
    me: &Replica,
    attempt: Result<Result<(), Option<Replica>>, String>,
    conn: &mut Option<Client>,
    said: &mut bool,
) -> bool {
    match attempt {
        Ok(Ok(())) => {
            tracing::info!("this replica ({}) is now the leader", me.id);
            let _ = tx.send(Role::Leader);
            true
        }
        Ok(Err(leader)) => {
            *said = false;
            tx.send_if_modified(|role| {
                let new = Role::Follower(leader);
                let changed = *role != new;
                *role = new;
                changed
            });
            false
        }
        Err(e) => {
            *conn = None;
            if !*said {
                tracing::warn!("cannot campaign for leadership: {e}");
                *said = true;
            }
            false
        }
    }
}

/// One attempt on `conn` (connected first when it is not): `Ok` when it now holds the
/// leader lock, or the leader's row when another replica holds it.
async fn try_lead(
    pg: &PgState,
    me: &Replica,
    conn: &mut Option<Client>,
) -> Result<Result<(), Option<Replica>>, String> {
    if conn.as_ref().is_none_or(Client::is_closed) {
        *conn = Some(pg.connect().await.map_err(|e| e.to_string())?);
    }
    let Some(client) = conn.as_ref() else {
        return Err("no connection".into());
    };
    let key = leader_key(pg.name());
    let attempt = async {
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await?;
        if !row.get::<_, bool>(0) {
            return Ok(Some(leader_row(client, pg.name()).await?));
        }
        client
            .execute(
                "INSERT INTO kcideploy_leader (name, replica, host, pid, listen, since) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET \
                 replica = $2, host = $3, pid = $4, listen = $5, since = $6",
                &[
                    &pg.name(),
                    &me.id,
                    &me.host,
                    &i64::from(me.pid),
                    &me.listen,
                    &me.since,
                ],
            )
            .await?;
        Ok(None)
    };
    match tokio::time::timeout(CHECK_TIMEOUT, attempt).await {
        Ok(Ok(None)) => Ok(Ok(())),
        Ok(Ok(Some(leader))) => Ok(Err(leader)),
        Ok(Err(e)) => Err(format!("{}: {}", pg.url(), cause(&e))),
        Err(_) => Err(format!("{}: no answer in {CHECK_TIMEOUT:?}", pg.url())),
    }
}

/// Keep the leader's connection alive; returns why it is lost.
async fn hold(client: &Client) -> String {
    loop {
        tokio::time::sleep(CAMPAIGN_EVERY).await;
        match tokio::time::timeout(CHECK_TIMEOUT, client.simple_query("SELECT 1")).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("the connection holding the lock broke: {}", cause(&e)),
            Err(_) => return format!("the connection did not answer in {CHECK_TIMEOUT:?}"),
        }
    }
}

/// The leader as its row says.
async fn leader_row(client: &Client, name: &str) -> Result<Option<Replica>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT replica, host, pid, listen, since FROM kcideploy_leader WHERE name = $1",
            &[&name],
        )
        .await?;
    Ok(row.map(|row| Replica {
        id: row.get(0),
        host: row.get(1),
        pid: u32::try_from(row.get::<_, i64>(2)).unwrap_or_default(),
        listen: row.get(3),
        since: row.get(4),
    }))
}
