//! The webhook queue in PostgreSQL, for `serve` replicas sharing one database: every replica
//! inserts the deliveries it accepts into `kcideploy_webhooks` (unique per plan and delivery
//! id, so a redelivery to either replica is one row), and the leader reads the rows not yet
//! acknowledged, in the order they were inserted.
//!
//! Inserts have group commit, as the file queue has: one writer task takes every delivery
//! that is waiting and inserts them in one statement (one transaction, one WAL flush), and
//! each is answered only once that is committed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::Client;
use tokio_postgres::types::Json;

use super::queue::{Entry, Pushed};
use crate::state::StateError;
use crate::state::postgres::{PgState, cause, error};

/// Deliveries inserted with one statement at most.
const BATCH_MAX: usize = 1024;

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

struct Job {
    entry: Entry,
    reply: oneshot::Sender<Result<Pushed, String>>,
}

/// The queue of one plan in a PostgreSQL database; clones share the writer and connection.
#[derive(Clone)]
pub struct PgQueue {
    pg: Arc<PgState>,
    /// This replica's name, recorded with what it accepted.
    replica: Arc<str>,
    client: Arc<Mutex<Option<Client>>>,
    writer: mpsc::UnboundedSender<Job>,
    /// Statements the writer ran (one commit each).
    flushes: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for PgQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgQueue({:?})", self.pg)
    }
}

impl PgQueue {
    /// The queue of `pg`'s plan; its writer runs on the process's runtime.
    pub fn new(pg: Arc<PgState>, replica: &str) -> PgQueue {
        let (writer, jobs) = mpsc::unbounded_channel();
        let queue = PgQueue {
            pg,
            replica: replica.into(),
            client: Arc::new(Mutex::new(None)),
            writer,
            flushes: Arc::default(),
        };
        let (writer_conn, for_writer) = (Arc::new(Mutex::new(None)), queue.clone());
        crate::support::rt::handle().spawn(write_loop(for_writer, writer_conn, jobs));
        queue
    }

    /// Run `work` on `slot`'s connection (made, or made again after it broke).
    async fn on<T>(
        &self,
        slot: &Mutex<Option<Client>>,
        doing: &str,
        work: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StateError> {
        let mut slot = slot.lock().await;
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = Some(self.pg.connect().await?);
        }
        let Some(client) = slot.as_mut() else {
            return Err(error(self.pg.url(), doing, "no connection"));
        };
        match tokio::time::timeout(CALL_TIMEOUT, work(client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(error(self.pg.url(), doing, cause(&e))),
            Err(_) => {
                *slot = None;
                Err(error(
                    self.pg.url(),
                    doing,
                    format!("no answer in {CALL_TIMEOUT:?}"),
                ))
            }
        }
    }

    async fn query<T>(
        &self,
        doing: &str,
        work: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, String> {
        self.on(&self.client, doing, work)
            .await
            .map_err(|e| e.to_string())
    }

    /// Queue `entry`; returns once it is committed (or known already).
    pub async fn push(&self, entry: Entry) -> Result<Pushed, String> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Job { entry, reply })
            .map_err(|_| "the queue writer has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the queue writer has stopped".to_string())?
    }

    /// The entries not yet acknowledged after `after` (a `seq`), oldest first, with their
    /// `seq`.
    pub async fn pending_after(&self, after: i64) -> Result<Vec<(i64, Entry)>, String> {
        let name = self.pg.name().to_string();
        let rows = self
            .query("read the webhook queue", async |c| {
                c.query(
                    "SELECT seq, entry, replied FROM kcideploy_webhooks \
                     WHERE name = $1 AND acked_at IS NULL AND seq > $2 ORDER BY seq",
                    &[&name, &after],
                )
                .await
            })
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.get(0);
            let Json(mut entry): Json<Entry> = match row.try_get(1) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!("webhook queue row {seq} is unreadable, skipped: {e}");
                    continue;
                }
            };
            entry.replied = row.get(2);
            out.push((seq, entry));
        }
        Ok(out)
    }

    /// Whether an entry is still waiting to be acknowledged.
    pub async fn is_pending(&self, delivery: &str) -> Result<bool, String> {
        let (name, delivery) = (self.pg.name().to_string(), delivery.to_string());
        self.query("read the webhook queue", async |c| {
            c.query_opt(
                "SELECT 1 FROM kcideploy_webhooks \
                 WHERE name = $1 AND delivery = $2 AND acked_at IS NULL",
                &[&name, &delivery],
            )
            .await
        })
        .await
        .map(|row| row.is_some())
    }

    /// Done with an entry (it stays, acknowledged, so a redelivery is still recognised).
    pub async fn ack(&self, delivery: &str) -> Result<(), String> {
        self.set(
            delivery,
            "acked_at = coalesce(acked_at, now()), acks = acks + 1",
        )
        .await
    }

    /// Remember that the bot answered this delivery.
    pub async fn mark_replied(&self, delivery: &str) -> Result<(), String> {
        self.set(delivery, "replied = true").await
    }

    /// Update a delivery's row, only while the leader row names this replica: a replica
    /// that lost the lead (and has not yet noticed) changes nothing the new leader reads.
    async fn set(&self, delivery: &str, what: &'static str) -> Result<(), String> {
        let name = self.pg.name().to_string();
        let (delivery, replica) = (delivery.to_string(), self.replica.to_string());
        let sql = format!(
            "UPDATE kcideploy_webhooks SET {what} WHERE name = $1 AND delivery = $2 \
             AND EXISTS (SELECT 1 FROM kcideploy_leader l WHERE l.name = $1 AND l.replica = $3)"
        );
        let changed = self
            .query("update the webhook queue", async |c| {
                c.execute(&sql, &[&name, &delivery, &replica]).await
            })
            .await?;
        if changed == 0 && self.leads_elsewhere().await? {
            return Err(format!(
                "delivery {delivery} left as it is: another replica leads now"
            ));
        }
        Ok(())
    }

    /// Whether the leader row names another replica.
    async fn leads_elsewhere(&self) -> Result<bool, String> {
        let (name, replica) = (self.pg.name().to_string(), self.replica.to_string());
        self.query("read the leader", async |c| {
            c.query_opt(
                "SELECT 1 FROM kcideploy_leader WHERE name = $1 AND replica <> $2",
                &[&name, &replica],
            )
            .await
        })
        .await
        .map(|row| row.is_some())
    }

    /// Forget acknowledged deliveries older than `keep` (a redelivery after that is taken
    /// as new); how many rows went.
    pub async fn prune(&self, keep: Duration) -> Result<u64, String> {
        let name = self.pg.name().to_string();
        let seconds = keep.as_secs_f64();
        self.query("prune the webhook queue", async |c| {
            c.execute(
                "DELETE FROM kcideploy_webhooks WHERE name = $1 AND acked_at IS NOT NULL \
                 AND acked_at < now() - make_interval(secs => $2)",
                &[&name, &seconds],
            )
            .await
        })
        .await
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Statements the writer committed since start.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Insert what waits, in batches; answer each job once its batch is committed.
async fn write_loop(
    queue: PgQueue,
    conn: Arc<Mutex<Option<Client>>>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let mut batch = Vec::new();
    while jobs.recv_many(&mut batch, BATCH_MAX).await > 0 {
        let answers = insert(&queue, &conn, &batch).await;
        for (job, answer) in batch.drain(..).zip(answers) {
            let _ = job.reply.send(answer);
        }
    }
}

/// Insert `batch` in one statement: each is queued, a duplicate, or failed with the batch.
async fn insert(
    queue: &PgQueue,
    conn: &Mutex<Option<Client>>,
    batch: &[Job],
) -> Vec<Result<Pushed, String>> {
    let name = queue.pg.name().to_string();
    let replica = queue.replica.to_string();
    let deliveries: Vec<String> = batch.iter().map(|j| j.entry.delivery.clone()).collect();
    let entries: Vec<Json<&Entry>> = batch.iter().map(|j| Json(&j.entry)).collect();
    let inserted = queue
        .on(conn, "queue webhook deliveries", async |c| {
            c.query(
                "INSERT INTO kcideploy_webhooks (name, delivery, entry, accepted_by) \
                 SELECT $1, d, e, $4 FROM unnest($2::text[], $3::jsonb[]) AS t(d, e) \
                 ON CONFLICT (name, delivery) DO NOTHING RETURNING delivery",
                &[&name, &deliveries, &entries, &replica],
            )
            .await
        })
        .await;
    queue
        .flushes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match inserted {
        Ok(rows) => {
            let new: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
            // A delivery twice in one batch: the first is queued, the other a duplicate.
            let mut answered = std::collections::HashSet::new();
            deliveries
                .iter()
                .map(|d| {
                    if new.contains(d) && answered.insert(d.clone()) {
                        Ok(Pushed::Queued)
                    } else {
                        Ok(Pushed::Duplicate)
                    }
                })
                .collect()
        }
        Err(e) => {
            let text = e.to_string();
            deliveries.iter().map(|_| Err(text.clone())).collect()
        }
    }
}
