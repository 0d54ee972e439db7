//! The lock of a PostgreSQL state: a session advisory lock (`pg_try_advisory_lock`) on a
//! connection of its own, which the server releases when that connection ends (the holder
//! exited, was killed, or its host is gone), plus a `kcideploy_lock` row that says who holds
//! it, written once the advisory lock is taken. The row alone means nothing: a row whose
//! advisory lock nobody holds is left over from a killed holder and is ignored.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio_postgres::Client;

use super::{PgState, lock_key};
use crate::state::lock::{LockError, LockInfo};

/// The lock, held while this lives: its connection holds the advisory lock.
pub struct PgLock {
    client: Option<Client>,
    key: i64,
    name: String,
    pub info: LockInfo,
}

impl std::fmt::Debug for PgLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgLock({})", self.info)
    }
}

fn failed(state: &PgState, doing: &str, e: impl std::fmt::Display) -> LockError {
    LockError::Backend {
        detail: format!("PostgreSQL at {}: {doing}: {e}", state.url()),
    }
}

/// `work` within the backend's call timeout; an error names the server and what failed.
async fn timed<T>(
    state: &PgState,
    doing: &str,
    work: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, LockError> {
    super::within(work)
        .await
        .map_err(|e| failed(state, doing, e))
}

/// The database session holding the advisory lock `key`, if any (`pg_locks` shows a bigint
/// key as its high and low 32 bits, `classid` and `objid`, with `objsubid` 1).
async fn holding_session(
    state: &PgState,
    client: &Client,
    key: i64,
) -> Result<Option<i32>, LockError> {
    let row = timed(
        state,
        "cannot read the lock",
        client.query_opt(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
             AND classid = (($1::bigint >> 32) & 4294967295)::oid \
             AND objid = ($1::bigint & 4294967295)::oid \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&key],
        ),
    )
    .await?;
    Ok(row.map(|r| r.get(0)))
}

async fn connect(state: &PgState) -> Result<Client, LockError> {
    state.connect().await.map_err(|e| LockError::Backend {
        detail: e.to_string(),
    })
}

/// The holder the row names (when the advisory lock is held by somebody).
async fn row(client: &Client, state: &PgState) -> Result<Option<LockInfo>, LockError> {
    let row = timed(
        state,
        "cannot read the lock",
        client.query_opt(
            "SELECT id, pid, host, operation, created FROM kcideploy_lock WHERE name = $1",
            &[&state.name()],
        ),
    )
    .await?;
    Ok(row.map(|r| LockInfo {
        id: r.get(0),
        pid: u32::try_from(r.get::<_, i64>(1)).unwrap_or(0),
        host: r.get(2),
        operation: r.get(3),
        created: r
            .get::<_, String>(4)
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH),
    }))
}

pub async fn acquire(
    state: &PgState,
    operation: &str,
    timeout: Duration,
) -> Result<PgLock, LockError> {
    let client = connect(state).await?;
    let key = lock_key(state.name());
    let start = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let took: bool = timed(
            state,
            "cannot take the lock",
            client.query_one("SELECT pg_try_advisory_lock($1)", &[&key]),
        )
        .await?
        .get(0);
        if took {
            let info = LockInfo::taken_now(operation);
            timed(
                state,
                "cannot record the lock's holder",
                client.execute(
                    "INSERT INTO kcideploy_lock (name, id, pid, host, operation, created, backend_pid)
                     VALUES ($1, $2, $3, $4, $5, $6, pg_backend_pid())
                     ON CONFLICT (name) DO UPDATE SET id = excluded.id, pid = excluded.pid,
                     host = excluded.host, operation = excluded.operation,
                     created = excluded.created, backend_pid = excluded.backend_pid",
                    &[
                        &state.name(),
                        &info.id,
                        &i64::from(info.pid),
                        &info.host,
                        &info.operation,
                        &info.created.to_string(),
                    ],
                ),
            )
            .await?;
            return Ok(PgLock {
                client: Some(client),
                key,
                name: state.name().to_string(),
                info,
            });
        }
        if start.elapsed() >= timeout {
            return Err(LockError::Locked {
                holder: row(&client, state).await?,
                plan_file: None,
            });
        }
        tokio::time::sleep(pause.min(timeout.saturating_sub(start.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let (key, name, id) = (self.key, self.name.clone(), self.info.id.clone());
        let release = async move {
            let work = async {
                client
                    .execute(
                        "DELETE FROM kcideploy_lock WHERE name = $1 AND id = $2",
                        &[&name, &id],
                    )
                    .await?;
                client
                    .execute("SELECT pg_advisory_unlock($1)", &[&key])
                    .await
            };
            // The connection closing releases the lock too, when this does not answer.
            let _ = tokio::time::timeout(Duration::from_secs(5), work).await;
        };
        // Released before the drop returns (the next acquire in this process must find it
        // free), from a thread of its own: the drop may run in async code.
        let handle = crate::support::rt::handle();
        std::thread::scope(|scope| {
            let _ = scope.spawn(|| handle.block_on(release)).join();
        });
    }
}

/// Who holds the lock: the row, when a session holds the advisory lock (read from
/// `pg_locks`, without taking the lock: a test by taking it would make a concurrent
/// `apply` fail).
pub async fn holder(state: &PgState) -> Result<Option<LockInfo>, LockError> {
    let client = connect(state).await?;
    let key = lock_key(state.name());
    if holding_session(state, &client, key).await?.is_none() {
        return Ok(None);
    }
    Ok(row(&client, state).await?.or_else(|| {
        Some(LockInfo {
            id: "unknown".into(),
            pid: 0,
            host: "unknown-host".into(),
            operation: "(holder not recorded yet)".into(),
            created: Timestamp::UNIX_EPOCH,
        })
    }))
}

/// Remove the lock `id`: end the holder's database session (which releases the advisory
/// lock) and its row. A holder alive on this host is refused unless `force`.
pub async fn force_unlock(state: &PgState, id: &str, force: bool) -> Result<LockInfo, LockError> {
    let Some(info) = holder(state).await? else {
        return Err(LockError::NotLocked {
            path: format!("{} (plan {})", state.url(), state.name()).into(),
        });
    };
    let info = crate::state::lock::may_remove(info, id, force)?;
    let client = connect(state).await?;
    // The session that holds the lock now, as the server sees it (the row's could be stale).
    if let Some(session) = holding_session(state, &client, lock_key(state.name())).await? {
        timed(
            state,
            "cannot end the holder's session",
            client.execute("SELECT pg_terminate_backend($1)", &[&session]),
        )
        .await?;
    }
    timed(
        state,
        "cannot remove the lock's row",
        client.execute(
            "DELETE FROM kcideploy_lock WHERE name = $1 AND id = $2",
            &[&state.name(), &id],
        ),
    )
    .await?;
    Ok(info)
}
