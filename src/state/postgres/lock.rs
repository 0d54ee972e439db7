//! The lock of a PostgreSQL state: a session advisory lock (`pg_try_advisory_lock`) on a
//! connection of its own, which the server releases when that connection ends (the holder
//! exited, was killed, or its host is gone), plus a `kcideploy_lock` row that says who holds
//! it, written once the advisory lock is taken. The row alone means nothing: a row whose
//! advisory lock nobody holds is left over from a killed holder and is ignored.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio_postgres::Client;

use super::{PgState, cause, lock_key};
use crate::state::lock::{LockError, LockInfo, alive, hostname};

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

fn sql(state: &PgState, doing: &str) -> impl Fn(tokio_postgres::Error) -> LockError {
    move |e| failed(state, doing, cause(&e))
}

async fn connect(state: &PgState) -> Result<Client, LockError> {
    state.connect().await.map_err(|e| LockError::Backend {
        detail: e.to_string(),
    })
}

/// The holder the row names (when the advisory lock is held by somebody).
async fn row(client: &Client, state: &PgState) -> Result<Option<LockInfo>, LockError> {
    let row = client
        .query_opt(
            "SELECT id, pid, host, operation, created FROM kcideploy_lock WHERE name = $1",
            &[&state.name()],
        )
        .await
        .map_err(sql(state, "cannot read the lock"))?;
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
        let took: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(sql(state, "cannot take the lock"))?
            .get(0);
        if took {
            let info = LockInfo {
                id: crate::support::random_id(),
                pid: std::process::id(),
                host: hostname(),
                operation: operation.to_string(),
                created: Timestamp::now(),
            };
            client
                .execute(
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
                )
                .await
                .map_err(sql(state, "cannot record the lock's holder"))?;
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

/// Who holds the lock: the row, when the advisory lock is taken.
pub async fn holder(state: &PgState) -> Result<Option<LockInfo>, LockError> {
    let client = connect(state).await?;
    let key = lock_key(state.name());
    let free: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .map_err(sql(state, "cannot test the lock"))?
        .get(0);
    if free {
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&key])
            .await
            .map_err(sql(state, "cannot test the lock"))?;
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
    if info.id != id {
        return Err(LockError::WrongId {
            asked: id.to_string(),
            holder: info,
        });
    }
    if !force && info.host == hostname() && alive(info.pid) {
        return Err(LockError::HolderAlive { holder: info });
    }
    let client = connect(state).await?;
    client
        .execute(
            "SELECT pg_terminate_backend(backend_pid) FROM kcideploy_lock WHERE name = $1 AND id = $2",
            &[&state.name(), &id],
        )
        .await
        .map_err(sql(state, "cannot end the holder's session"))?;
    client
        .execute(
            "DELETE FROM kcideploy_lock WHERE name = $1 AND id = $2",
            &[&state.name(), &id],
        )
        .await
        .map_err(sql(state, "cannot remove the lock's row"))?;
    Ok(info)
}
