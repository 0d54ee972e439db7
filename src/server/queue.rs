//! The durable webhook queue, with group commit: one writer thread appends the deliveries
//! that arrived together to a segment file (JSON lines) with one `fdatasync`, and each is
//! answered only once it is on disk. Concurrent deliveries share one disk flush instead of
//! queueing behind each other's.
//!
//! Layout under the queue directory:
//! - `pending/<nanos>-<seq>.jsonl`: segments, appended to until [`SEGMENT_MAX`] entries and
//!   never after a restart (a torn last line of a crash was never acknowledged, and is
//!   skipped); a full segment is removed when every entry in it is acknowledged;
//! - `replied/<delivery>`: the bot answered that comment (a replay does not answer twice);
//! - `seen.log`: delivery ids of acknowledged entries (the last [`SEEN_KEEP`]), so GitHub's
//!   redeliveries are recognised after a restart and acknowledged entries of a segment that
//!   still holds others are not replayed.
//!
//! Delivery is at least once: the log is not fsynced, so an entry acknowledged just before a
//! crash may be replayed (a repeated event only schedules a deploy again; the bot does not
//! answer a comment twice).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use serde::{Deserialize, Serialize};

/// Delivery ids remembered for deduplication.
pub const SEEN_KEEP: usize = 100_000;

/// Deliveries written with one fdatasync at most.
const BATCH_MAX: usize = 4096;

/// Entries per segment file before a new one is started.
const SEGMENT_MAX: usize = 2048;

/// One queued delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub delivery: String,
    pub event: String,
    pub received: jiff::Timestamp,
    /// What matters of the payload.
    pub payload: super::webhook::Event,
    /// The bot answered this comment already (a restart does not answer twice).
    #[serde(default)]
    pub replied: bool,
}

/// What became of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// On disk.
    Queued,
    /// This delivery id was received before.
    Duplicate,
}

struct Job {
    entry: Entry,
    reply: tokio::sync::oneshot::Sender<Result<Pushed, String>>,
}

#[derive(Default)]
struct Index {
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    /// Segment → entries not yet acknowledged.
    remaining: HashMap<PathBuf, usize>,
    /// Delivery → its segment, for pending entries.
    segment_of: HashMap<String, PathBuf>,
    seen_log: Option<std::fs::File>,
    /// The segment being appended to (kept until it is full even when all is acknowledged).
    active: Option<PathBuf>,
    /// Batches written (one `fdatasync` each).
    flushes: u64,
}

impl Index {
    fn remember(&mut self, delivery: &str) {
        if self.seen.insert(delivery.to_string()) {
            self.seen_order.push_back(delivery.to_string());
            while self.seen_order.len() > SEEN_KEEP {
                if let Some(old) = self.seen_order.pop_front()
                    && !self.segment_of.contains_key(&old)
                {
                    self.seen.remove(&old);
                }
            }
        }
    }
}

/// The queue; clones share the same writer and index.
#[derive(Clone)]
pub struct Queue {
    dir: PathBuf,
    index: Arc<Mutex<Index>>,
    writer: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("dir", &self.dir).finish()
    }
}

fn safe(delivery: &str) -> String {
    delivery
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("pending"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
}

fn read_segment(path: &Path) -> Vec<Entry> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| match serde_json::from_str(line) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!("{}: unreadable entry skipped: {e}", path.display());
                None
            }
        })
        .collect()
}

impl Queue {
    /// Open (or create) the queue in `dir` and start its writer thread.
    pub fn open(dir: &Path) -> std::io::Result<Queue> {
        std::fs::create_dir_all(dir.join("pending"))?;
        std::fs::create_dir_all(dir.join("replied"))?;
        let mut index = Index::default();
        let log_path = dir.join("seen.log");
        let old: Vec<String> = std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        let keep = &old[old.len().saturating_sub(SEEN_KEEP)..];
        if keep.len() < old.len() {
            crate::support::write_atomic(&log_path, (keep.join("\n") + "\n").as_bytes())?;
        }
        for d in keep {
            index.remember(d);
        }
        // Acknowledged deliveries are in the log; what is left of a segment waits.
        let acked: HashSet<&String> = keep.iter().collect();
        for segment in segments(dir) {
            let entries: Vec<Entry> = read_segment(&segment)
                .into_iter()
                .filter(|e| !acked.contains(&e.delivery))
                .collect();
            if entries.is_empty() {
                let _ = std::fs::remove_file(&segment);
                continue;
            }
            for e in &entries {
                index.remember(&e.delivery);
                index.segment_of.insert(e.delivery.clone(), segment.clone());
            }
            index.remaining.insert(segment, entries.len());
        }
        index.seen_log = Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)?,
        );
        let index = Arc::new(Mutex::new(index));
        let (writer, jobs) = mpsc::channel();
        let (w_dir, w_index) = (dir.to_path_buf(), index.clone());
        std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || write_loop(&w_dir, &w_index, jobs))?;
        Ok(Queue {
            dir: dir.to_path_buf(),
            index,
            writer,
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a delivery was received before (GitHub redelivers).
    pub fn seen(&self, delivery: &str) -> bool {
        self.index().seen.contains(delivery)
    }

    /// Whether an entry is still waiting to be acknowledged.
    pub fn is_pending(&self, delivery: &str) -> bool {
        self.index().segment_of.contains_key(delivery)
    }

    /// Queue `entry`; returns once it is on disk (or known already).
    pub async fn push(&self, entry: Entry) -> Result<Pushed, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writer
            .send(Job { entry, reply })
            .map_err(|_| "the queue writer has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the queue writer has stopped".to_string())?
    }

    /// [`Queue::push`] from synchronous code.
    pub fn push_blocking(&self, entry: Entry) -> Result<Pushed, String> {
        crate::support::rt::block_on(self.push(entry))
    }

    /// The pending entries, oldest first.
    pub fn pending(&self) -> Vec<Entry> {
        let index = self.index();
        let mut out = Vec::new();
        for segment in segments(&self.dir) {
            for mut e in read_segment(&segment) {
                if index.segment_of.get(&e.delivery) != Some(&segment) {
                    continue;
                }
                e.replied = self.dir.join("replied").join(safe(&e.delivery)).exists();
                out.push(e);
            }
        }
        out
    }

    /// Batches written since the queue was opened (one disk flush each).
    pub fn flushes(&self) -> u64 {
        self.index().flushes
    }

    /// How many entries wait.
    pub fn len(&self) -> usize {
        self.index().segment_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Done with an entry; its segment goes when all its entries are done.
    pub fn ack(&self, delivery: &str) -> std::io::Result<()> {
        let mut index = self.index();
        let Some(segment) = index.segment_of.remove(delivery) else {
            return Ok(());
        };
        if let Some(log) = &mut index.seen_log {
            // Not fsynced: losing the tail only lets a very late redelivery in again.
            let _ = writeln!(log, "{delivery}");
        }
        let _ = std::fs::remove_file(self.dir.join("replied").join(safe(delivery)));
        let left = index.remaining.get_mut(&segment).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left == Some(0) && index.active.as_ref() != Some(&segment) {
            index.remaining.remove(&segment);
            std::fs::remove_file(&segment)?;
        }
        Ok(())
    }

    /// Remember durably that the bot answered this delivery.
    pub fn mark_replied(&self, delivery: &str) -> std::io::Result<()> {
        crate::support::write_atomic(&self.dir.join("replied").join(safe(delivery)), b"")
    }

    /// The queue's directory (the bot keeps approvals to record beside it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The segment being appended to.
struct Active {
    path: PathBuf,
    file: std::fs::File,
    entries: usize,
}

/// Start a new segment: create it and make its name durable (directory fsync).
fn new_segment(dir: &Path, seq: u64) -> std::io::Result<Active> {
    let path = dir.join("pending").join(format!(
        "{:020}-{seq:08}.jsonl",
        jiff::Timestamp::now().as_nanosecond()
    ));
    let file = std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    std::fs::File::open(dir.join("pending"))?.sync_all()?;
    Ok(Active {
        path,
        file,
        entries: 0,
    })
}

fn write_loop(dir: &Path, index: &Mutex<Index>, jobs: mpsc::Receiver<Job>) {
    let mut seq: u64 = 0;
    let mut active: Option<Active> = None;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Repeated deliveries (also within the batch) are answered at once.
        let mut fresh = Vec::with_capacity(batch.len());
        {
            let mut idx = index.lock().unwrap_or_else(|p| p.into_inner());
            for job in batch {
                if idx.seen.contains(&job.entry.delivery) {
                    let _ = job.reply.send(Ok(Pushed::Duplicate));
                } else {
                    idx.remember(&job.entry.delivery);
                    fresh.push(job);
                }
            }
        }
        if fresh.is_empty() {
            continue;
        }
        let mut bytes = Vec::new();
        for job in &fresh {
            if serde_json::to_writer(&mut bytes, &job.entry).is_ok() {
                bytes.push(b'\n');
            }
        }
        // One append and one fdatasync per batch; a new segment now and then, so that
        // acknowledged entries' segments can go.
        if active.as_ref().is_some_and(|a| a.entries >= SEGMENT_MAX) {
            retire(index, active.take());
        }
        let written = (|| -> std::io::Result<PathBuf> {
            if active.is_none() {
                seq += 1;
                let a = new_segment(dir, seq)?;
                index.lock().unwrap_or_else(|p| p.into_inner()).active = Some(a.path.clone());
                active = Some(a);
            }
            let a = active
                .as_mut()
                .ok_or_else(|| std::io::Error::other("no segment"))?;
            a.file.write_all(&bytes)?;
            a.file.sync_data()?;
            a.entries += fresh.len();
            Ok(a.path.clone())
        })();
        let mut idx = index.lock().unwrap_or_else(|p| p.into_inner());
        match written {
            Ok(path) => {
                idx.flushes += 1;
                *idx.remaining.entry(path.clone()).or_default() += fresh.len();
                for job in &fresh {
                    idx.segment_of
                        .insert(job.entry.delivery.clone(), path.clone());
                }
                drop(idx);
                for job in fresh {
                    let _ = job.reply.send(Ok(Pushed::Queued));
                }
            }
            Err(e) => {
                for job in &fresh {
                    idx.seen.remove(&job.entry.delivery);
                }
                drop(idx);
                // The segment may hold a torn line now: start a new one (readers skip it).
                active = None;
                for job in fresh {
                    let _ = job.reply.send(Err(format!("cannot write the queue: {e}")));
                }
            }
        }
    }
}

/// A full segment is no longer appended to; remove it if nothing in it waits.
fn retire(index: &Mutex<Index>, segment: Option<Active>) {
    let Some(a) = segment else { return };
    let mut idx = index.lock().unwrap_or_else(|p| p.into_inner());
    idx.active = None;
    if idx.remaining.get(&a.path).is_none_or(|n| *n == 0) {
        idx.remaining.remove(&a.path);
        let _ = std::fs::remove_file(&a.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(delivery: &str) -> Entry {
        Entry {
            delivery: delivery.into(),
            event: "ping".into(),
            received: jiff::Timestamp::now(),
            payload: super::super::webhook::Event::Ping,
            replied: false,
        }
    }

    #[test]
    fn segments_survive_reopening_and_go_when_every_entry_is_acknowledged() {
        let dir = tempfile::tempdir().expect("dir");
        let q = Queue::open(dir.path()).expect("open");
        assert_eq!(q.push_blocking(entry("a")), Ok(Pushed::Queued));
        assert_eq!(q.push_blocking(entry("b")), Ok(Pushed::Queued));
        assert_eq!(q.push_blocking(entry("a")), Ok(Pushed::Duplicate));
        q.mark_replied("b").expect("mark");
        drop(q);

        let q = Queue::open(dir.path()).expect("reopen");
        let pending = q.pending();
        let ids: Vec<(&str, bool)> = pending
            .iter()
            .map(|e| (e.delivery.as_str(), e.replied))
            .collect();
        assert_eq!(ids, [("a", false), ("b", true)]);
        q.ack("a").expect("ack");
        assert_eq!(q.len(), 1);
        q.ack("b").expect("ack");
        assert!(q.is_empty());
        assert_eq!(segments(dir.path()).len(), 0, "segments removed");
        drop(q);

        // Acknowledged deliveries are still recognised after a restart.
        let q = Queue::open(dir.path()).expect("reopen");
        assert!(q.seen("a") && q.seen("b"));
        assert_eq!(q.push_blocking(entry("b")), Ok(Pushed::Duplicate));
        assert!(q.pending().is_empty());
    }

    #[test]
    fn acknowledged_entries_of_a_kept_segment_are_not_replayed() {
        let dir = tempfile::tempdir().expect("dir");
        let q = Queue::open(dir.path()).expect("open");
        for d in ["a", "b", "c"] {
            assert_eq!(q.push_blocking(entry(d)), Ok(Pushed::Queued));
        }
        q.ack("b").expect("ack");
        drop(q);
        let q = Queue::open(dir.path()).expect("reopen");
        let ids: Vec<String> = q.pending().into_iter().map(|e| e.delivery).collect();
        assert_eq!(ids, ["a", "c"]);
        // A torn last line (a crash during the append) is skipped, the rest is read.
        let segment = segments(dir.path()).pop().expect("segment");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&segment)
            .expect("open");
        f.write_all(b"{\"delivery\": \"tor").expect("write");
        drop(q);
        let q = Queue::open(dir.path()).expect("reopen");
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn concurrent_pushes_share_segments() {
        let dir = tempfile::tempdir().expect("dir");
        let q = Queue::open(dir.path()).expect("open");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("rt");
        let results = runtime.block_on(async {
            let tasks: Vec<_> = (0..200)
                .map(|i| {
                    let q = q.clone();
                    tokio::spawn(async move { q.push(entry(&format!("d-{i}"))).await })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.expect("task"));
            }
            out
        });
        assert!(results.iter().all(|r| *r == Ok(Pushed::Queued)));
        assert_eq!(q.pending().len(), 200);
        let on_disk: usize = segments(dir.path())
            .iter()
            .map(|s| read_segment(s).len())
            .sum();
        assert_eq!(on_disk, 200);
    }
}
