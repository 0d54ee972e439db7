//! Where accepted webhook deliveries wait for the worker: the file [`Queue`] in the state
//! directory (local backend), or the `kcideploy_webhooks` table ([`PgQueue`]) that every
//! replica of a PostgreSQL-backed `serve` writes and the leader reads.

use std::path::{Path, PathBuf};

use super::pg_queue::PgQueue;
use super::queue::{Entry, Pushed, Queue};

/// The queue `serve` uses.
#[derive(Clone, Debug)]
pub enum Deliveries {
    Files(Queue),
    Table {
        queue: PgQueue,
        /// Local files beside the state (approvals, triggers).
        dir: PathBuf,
    },
}

impl From<Queue> for Deliveries {
    fn from(queue: Queue) -> Self {
        Deliveries::Files(queue)
    }
}

impl Deliveries {
    /// Whether a delivery is known to have been received before. The table answers that
    /// when the delivery is inserted.
    pub fn seen(&self, delivery: &str) -> bool {
        match self {
            Deliveries::Files(q) => q.seen(delivery),
            Deliveries::Table { .. } => false,
        }
    }

    /// Queue `entry`; returns once it is durable (or known already).
    pub async fn push(&self, entry: Entry) -> Result<Pushed, String> {
        match self {
            Deliveries::Files(q) => q.push(entry).await,
            Deliveries::Table { queue, .. } => queue.push(entry).await,
        }
    }

    /// The pending entries, oldest first.
    pub async fn pending(&self) -> Result<Vec<Entry>, String> {
        match self {
            Deliveries::Files(q) => Ok(q.pending()),
            Deliveries::Table { queue, .. } => Ok(queue
                .pending_after(0)
                .await?
                .into_iter()
                .map(|(_, e)| e)
                .collect()),
        }
    }

    /// Whether an entry still waits to be acknowledged.
    pub async fn is_pending(&self, delivery: &str) -> bool {
        match self {
            Deliveries::Files(q) => q.is_pending(delivery),
            Deliveries::Table { queue, .. } => match queue.is_pending(delivery).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("{e}");
                    // Handled twice rather than lost.
                    true
                }
            },
        }
    }

    /// Done with an entry.
    pub async fn ack(&self, delivery: &str) -> Result<(), String> {
        match self {
            Deliveries::Files(q) => q.ack(delivery).map_err(|e| e.to_string()),
            Deliveries::Table { queue, .. } => queue.ack(delivery).await,
        }
    }

    /// Remember durably that the bot answered this delivery.
    pub async fn mark_replied(&self, delivery: &str) -> Result<(), String> {
        match self {
            Deliveries::Files(q) => q.mark_replied(delivery).map_err(|e| e.to_string()),
            Deliveries::Table { queue, .. } => queue.mark_replied(delivery).await,
        }
    }

    /// Durable writes (one disk flush or one commit each) since start.
    pub fn flushes(&self) -> u64 {
        match self {
            Deliveries::Files(q) => q.flushes(),
            Deliveries::Table { queue, .. } => queue.flushes(),
        }
    }

    /// The local directory beside the state, for what the server keeps in files.
    pub fn dir(&self) -> &Path {
        match self {
            Deliveries::Files(q) => q.dir(),
            Deliveries::Table { dir, .. } => dir,
        }
    }

    /// The table queue, when the deliveries are in PostgreSQL.
    pub fn table(&self) -> Option<&PgQueue> {
        match self {
            Deliveries::Table { queue, .. } => Some(queue),
            Deliveries::Files(_) => None,
        }
    }
}
