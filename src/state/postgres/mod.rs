//! The PostgreSQL backend. One row per plan (`kcideploy_state`, keyed by the plan's name)
//! holds the state without its run history, written by compare-and-swap on `serial`; each
//! finished run is a row of `kcideploy_runs`, inserted once and updated only if it changes;
//! each step end is a row of `kcideploy_step_ends` inserted (and committed) the moment the
//! step ends, the journal's role, so a kill loses none; the lock is a session advisory lock
//! plus a `kcideploy_lock` row naming its holder ([`lock`]). Every call has a timeout and
//! every error names the server (the URL, without password) and the cause.

mod lock;
pub mod schema;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::types::Json;
use tokio_postgres::{Client, Config as PgConfig};

pub use lock::PgLock;

use super::journal::{self, Entry};
use super::{HISTORY_KEEP, RunRecord, STATE_FORMAT_VERSION, State, StateError};
use crate::config::PgUrl;

/// How long connecting may take unless the URL says (`connect_timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one statement may run on the server (`statement_timeout`).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one call (its statements and round trips) may take on this side.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The state of one plan in a PostgreSQL database.
pub struct PgState {
    url: PgUrl,
    config: PgConfig,
    /// The plan's name: the key of its rows.
    name: String,
    /// The local state path: run logs and the journal of process groups stay beside it.
    local: PathBuf,
    client: Mutex<Option<Client>>,
    /// Step ends waiting for their commit ([`PgState::append_step_end`]).
    ends: std::sync::Mutex<Vec<Waiting>>,
    /// Held by the appender that commits the waiting step ends.
    committing: Mutex<()>,
}

/// A step end waiting for the commit that records it, and where its outcome goes.
struct Waiting {
    run: String,
    value: serde_json::Value,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

fn lock_ignoring_poison<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for PgState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgState({}, {})", self.url, self.name)
    }
}

/// An error of the PostgreSQL backend: the server and what was being done, and the cause.
pub fn error(url: &PgUrl, doing: &str, cause: impl std::fmt::Display) -> StateError {
    StateError::Postgres {
        url: url.to_string(),
        detail: format!("{doing}: {cause}"),
    }
}

/// A tokio-postgres error with the server's own message when there is one.
pub fn cause(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The advisory lock key of a plan's state.
pub fn lock_key(name: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("kcideploy-state:{name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

impl PgState {
    /// The state of plan `name` at `url` (nothing is connected yet).
    pub fn new(url: PgUrl, name: &str, local: &Path) -> Result<PgState, StateError> {
        let mut config =
            PgConfig::from_str(&url.url).map_err(|e| error(&url, "the URL does not parse", e))?;
        if let Some(password) = url.password() {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_options().is_none() {
            config.options(format!(
                "-c statement_timeout={}",
                STATEMENT_TIMEOUT.as_millis()
            ));
        }
        config.tcp_user_timeout(CALL_TIMEOUT);
        config.application_name("kcideploy");
        Ok(PgState {
            url,
            config,
            name: name.to_string(),
            local: local.to_path_buf(),
            client: Mutex::new(None),
            ends: std::sync::Mutex::new(Vec::new()),
            committing: Mutex::new(()),
        })
    }

    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn local_path(&self) -> &Path {
        &self.local
    }

    /// A new connection, the schema migrated; its connection task runs on the process's
    /// runtime until the client is dropped.
    pub async fn connect(&self) -> Result<Client, StateError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = {
            use rustls_platform_verifier::ConfigVerifierExt;
            let config = rustls::ClientConfig::with_platform_verifier()
                .map_err(|e| error(&self.url, "cannot set up TLS", e))?;
            tokio_postgres_rustls::MakeRustlsConnect::new(config)
        };
        let connecting = tokio::time::timeout(CALL_TIMEOUT, self.config.connect(tls));
        let (mut client, connection) = connecting
            .await
            .map_err(|_| error(&self.url, "cannot connect", "timed out"))?
            .map_err(|e| error(&self.url, "cannot connect", cause(&e)))?;
        let url = self.url.clone();
        crate::support::rt::handle().spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("PostgreSQL connection to {url} ended: {}", cause(&e));
            }
        });
        let version = within(schema::migrate(&mut client))
            .await
            .map_err(|e| error(&self.url, "cannot apply the schema migrations", e))?;
        if version > schema::MIGRATIONS.len() as i64 {
            return Err(error(
                &self.url,
                "the database schema is newer than this kcideploy",
                format!(
                    "version {version}, this build knows {}: use a newer kcideploy",
                    schema::MIGRATIONS.len()
                ),
            ));
        }
        Ok(client)
    }

    /// Run `work` with this backend's connection (made, or made again after it broke).
    async fn with_client<T>(
        &self,
        doing: &str,
        work: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StateError> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = Some(self.connect().await?);
        }
        let Some(client) = slot.as_mut() else {
            return Err(error(&self.url, doing, "no connection"));
        };
        let out = tokio::time::timeout(CALL_TIMEOUT, work(client)).await;
        match out {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(error(&self.url, doing, cause(&e))),
            Err(_) => {
                *slot = None;
                Err(error(
                    &self.url,
                    doing,
                    format!("no answer in {CALL_TIMEOUT:?}"),
                ))
            }
        }
    }

    /// The state, with the step ends of its unfinished run folded in; `None` when there is
    /// no row for this plan.
    pub async fn read(&self) -> Result<Option<State>, StateError> {
        let name = self.name.clone();
        let rows = self
            .with_client("cannot read the state", async |client| {
                let tx = client
                    .build_transaction()
                    .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await?;
                let Some(row) = tx
                    .query_opt("SELECT body FROM kcideploy_state WHERE name = $1", &[&name])
                    .await?
                else {
                    return Ok(None);
                };
                let body: serde_json::Value = row.get(0);
                let runs = tx
                    .query(
                        "SELECT record FROM kcideploy_runs WHERE name = $1 ORDER BY seq DESC LIMIT $2",
                        &[&name, &(HISTORY_KEEP as i64)],
                    )
                    .await?;
                let runs: Vec<serde_json::Value> = runs.iter().rev().map(|r| r.get(0)).collect();
                let run_id = body
                    .get("current_run")
                    .and_then(|r| r.get("id"))
                    .and_then(|id| id.as_str())
                    .map(str::to_string);
                let mut ends = Vec::new();
                if let Some(run_id) = run_id {
                    let rows = tx
                        .query(
                            "SELECT entry FROM kcideploy_step_ends
                             WHERE name = $1 AND run_id = $2 AND NOT folded ORDER BY seq",
                            &[&name, &run_id],
                        )
                        .await?;
                    ends = rows.iter().map(|r| r.get(0)).collect();
                }
                tx.commit().await?;
                Ok(Some((body, runs, ends)))
            })
            .await?;
        let Some((body, runs, ends)) = rows else {
            return Ok(None);
        };
        self.assemble(body, runs, ends).map(Some)
    }

    /// The state from its row, its runs' rows and the step ends to fold in.
    fn assemble(
        &self,
        body: serde_json::Value,
        runs: Vec<serde_json::Value>,
        ends: Vec<serde_json::Value>,
    ) -> Result<State, StateError> {
        let parse = |what: &str, e: serde_json::Error| error(&self.url, what, e);
        let found = body
            .get("format_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if found > u64::from(STATE_FORMAT_VERSION) {
            return Err(error(
                &self.url,
                "the state has a newer format",
                format!("version {found}; this kcideploy reads version {STATE_FORMAT_VERSION}"),
            ));
        }
        let mut state: State = serde_json::from_value(body)
            .map_err(|e| parse("the state row is not valid state", e))?;
        for run in runs {
            let run: RunRecord = serde_json::from_value(run)
                .map_err(|e| parse("a run row is not a valid run", e))?;
            state.history.push(run);
        }
        let mut entries = Vec::with_capacity(ends.len());
        for end in ends {
            match serde_json::from_value::<Entry>(end) {
                Ok(entry) => entries.push(entry),
                Err(e) => tracing::warn!("{}: a step end row was skipped: {e}", self.url),
            }
        }
        journal::fold(&mut state, &entries);
        Ok(state)
    }

    /// Write `state` if the stored serial is still the one it was read at (compare-and-
    /// swap); `serial` is incremented first. A stale writer is refused and nothing changes.
    pub async fn write(&self, state: &mut State) -> Result<(), StateError> {
        let expected = state.serial;
        let next = expected
            .checked_add(1)
            .filter(|n| i64::try_from(*n).is_ok())
            .ok_or_else(|| error(&self.url, "cannot write the state", "serial exhausted"))?;
        self.write_at(state, expected, next).await
    }

    /// Write `state` with serial `next` over the row of serial `expected` (0: no row):
    /// [`PgState::write`], and `state migrate`, which keeps the serial it copies.
    pub async fn write_at(
        &self,
        state: &mut State,
        expected: u64,
        next: u64,
    ) -> Result<(), StateError> {
        if i64::try_from(next).is_err() {
            return Err(error(
                &self.url,
                "cannot write the state",
                "serial too large",
            ));
        }
        let mut body = serde_json::to_value(&*state)
            .map_err(|e| error(&self.url, "cannot encode the state", e))?;
        if let Some(obj) = body.as_object_mut() {
            obj.insert("history".into(), serde_json::Value::Array(Vec::new()));
            obj.insert("serial".into(), serde_json::Value::from(next));
        }
        let runs: Vec<(String, serde_json::Value)> = state
            .history
            .iter()
            .map(|r| Ok((r.id.clone(), serde_json::to_value(r)?)))
            .collect::<Result<_, serde_json::Error>>()
            .map_err(|e| error(&self.url, "cannot encode a run", e))?;
        let (name, lineage) = (self.name.clone(), state.lineage.clone());
        let format = STATE_FORMAT_VERSION as i32;
        let outcome = self
            .with_client("cannot write the state", async |client| {
                let tx = client.transaction().await?;
                let (expected_i, next_i) = (expected as i64, next as i64);
                let written = if expected == 0 {
                    tx.execute(
                        "INSERT INTO kcideploy_state (name, lineage, serial, format_version, body)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
                        &[&name, &lineage, &next_i, &format, &Json(&body)],
                    )
                    .await?
                } else {
                    tx.execute(
                        "UPDATE kcideploy_state SET serial = $3, format_version = $4, body = $5,
                         written_at = now() WHERE name = $1 AND lineage = $2 AND serial = $6",
                        &[&name, &lineage, &next_i, &format, &Json(&body), &expected_i],
                    )
                    .await?
                };
                if written != 1 {
                    let row = tx
                        .query_opt(
                            "SELECT serial, lineage FROM kcideploy_state WHERE name = $1",
                            &[&name],
                        )
                        .await?;
                    tx.rollback().await?;
                    return Ok(Err(row.map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))));
                }
                for (run_id, record) in &runs {
                    tx.execute(
                        "INSERT INTO kcideploy_runs (name, run_id, seq, record)
                         VALUES ($1, $2, nextval('kcideploy_runs_seq'), $3)
                         ON CONFLICT (name, run_id) DO UPDATE
                         SET record = excluded.record, seq = excluded.seq
                         WHERE kcideploy_runs.record IS DISTINCT FROM excluded.record",
                        &[&name, run_id, &Json(record)],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(Ok(()))
            })
            .await?;
        match outcome {
            Ok(()) => {
                state.serial = next;
                Ok(())
            }
            Err(found) => Err(StateError::Stale {
                url: self.url.to_string(),
                name: self.name.clone(),
                expected,
                lineage: state.lineage.clone(),
                found: found.map(|(s, l)| (s as u64, l)),
            }),
        }
    }

    /// Record a step's end as a row, committed before this returns (the journal's role).
    /// Ends that arrive while a commit is in progress share the next one (group commit, as
    /// the journal's syncs): one INSERT and one WAL flush for all of them.
    pub async fn append_step_end(&self, entry: &Entry) -> Result<(), StateError> {
        let Entry::Exited { run, .. } = entry else {
            return Ok(());
        };
        let value =
            serde_json::to_value(entry).map_err(|e| error(&self.url, "cannot encode", e))?;
        let (done, mut result) = tokio::sync::oneshot::channel();
        lock_ignoring_poison(&self.ends).push(Waiting {
            run: run.clone(),
            value,
            done,
        });
        let _turn = self.committing.lock().await;
        if let Ok(out) = result.try_recv() {
            return out.map_err(|e| error(&self.url, "cannot record a step's end", e));
        }
        // Ours is still waiting: commit it, with whatever else waits.
        let batch = std::mem::take(&mut *lock_ignoring_poison(&self.ends));
        let (runs, values): (Vec<String>, Vec<Json<serde_json::Value>>) = batch
            .iter()
            .map(|w| (w.run.clone(), Json(w.value.clone())))
            .unzip();
        let name = self.name.clone();
        let out = self
            .with_client("cannot record a step's end", async |client| {
                client
                    .execute(
                        "INSERT INTO kcideploy_step_ends (name, run_id, entry)
                         SELECT $1, r, e FROM unnest($2::text[], $3::jsonb[]) WITH ORDINALITY AS t(r, e, n)
                         ORDER BY n",
                        &[&name, &runs, &values],
                    )
                    .await
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        for waiting in batch {
            let _ = waiting.done.send(out.clone());
        }
        match result.try_recv() {
            Ok(out) => out.map_err(|e| StateError::Postgres {
                url: self.url.to_string(),
                detail: e,
            }),
            Err(_) => Err(error(&self.url, "cannot record a step's end", "lost")),
        }
    }

    /// Mark the step ends folded (state holds them now): the journal emptied. The rows stay.
    pub async fn fold_step_ends(&self) -> Result<(), StateError> {
        let name = self.name.clone();
        self.with_client("cannot mark the step ends folded", async |client| {
            client
                .execute(
                    "UPDATE kcideploy_step_ends SET folded = true WHERE name = $1 AND NOT folded",
                    &[&name],
                )
                .await
        })
        .await
        .map(|_| ())
    }

    /// Take the lock, waiting up to `timeout` for its holder to let go.
    pub async fn lock(
        &self,
        operation: &str,
        timeout: Duration,
    ) -> Result<PgLock, super::LockError> {
        lock::acquire(self, operation, timeout).await
    }

    pub async fn holder(&self) -> Result<Option<super::LockInfo>, super::LockError> {
        lock::holder(self).await
    }

    pub async fn force_unlock(
        &self,
        id: &str,
        force: bool,
    ) -> Result<super::LockInfo, super::LockError> {
        lock::force_unlock(self, id, force).await
    }
}

/// `work` with the call timeout.
pub(super) async fn within<T>(
    work: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(cause(&e)),
        Err(_) => Err(format!("no answer in {CALL_TIMEOUT:?}")),
    }
}
