//! The run journal, `<state>.journal` beside the state file: what happens to a run's steps,
//! written the moment it happens, where the state file learns it only when the run ends
//! (readers fold the step ends in: [`fold`], in `LocalState::read`). A step's
//! process group (leader pid and start time), written by the process itself before its
//! program runs; that leader reaped; a step's exit with its result. One JSON object per line,
//! each written with one `write` to the file opened for appending, which a kill of kcideploy
//! cannot undo; a step's exit is also synced to disk, so that a crash of the machine does not
//! lose it either (a crash leaves no process of a group to stop: those lines are not synced).
//! A line torn by a kill is cut off when the journal is next opened.
//!
//! The next apply, under the lock, reads it: it stops the groups of steps that were still
//! running (their leader never reaped), and the exits are in the state it reads, so a step
//! that exited 0 is not run again. Once the state file holds all of it, the journal is
//! emptied. Syncs are shared: lines of steps that end together need one ([`Journal::append`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{RunStep, State, StepRecord, StepResult};

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    /// A step's process started in its own group (`pgid` is the leader's pid), before its
    /// program ran. `start_time` is the leader's start in clock ticks after boot (field 22 of
    /// `/proc/<pid>/stat`): with the pid it names one process, never a later one that got
    /// the same pid. `owner` is the kcideploy that started it.
    Spawned {
        run: String,
        step: String,
        owner: Process,
        pgid: i32,
        start_time: u64,
    },
    /// The leader of that group was waited for: the step's process is over.
    Reaped {
        run: String,
        step: String,
        pgid: i32,
        start_time: u64,
    },
    /// A step ended (after its retries): what its records in state get.
    Exited {
        run: String,
        /// The step's input digest.
        digest: String,
        step: RunStep,
        finished_at: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outputs: Option<serde_json::Value>,
        /// The step's resolved settings (see `StepRecord::params`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        params: Option<std::collections::BTreeMap<String, String>>,
    },
}

/// One process: its pid and start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: i32,
    pub start_time: u64,
}

/// A process group the journal says was started and not reaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub run: String,
    pub step: String,
    /// The kcideploy that started it.
    pub owner: Process,
    pub pgid: i32,
    pub start_time: u64,
}

/// The groups of `entries` whose leader was never reaped: steps running when the run ended.
pub fn unreaped(entries: &[Entry]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for entry in entries {
        match entry {
            Entry::Spawned {
                run,
                step,
                owner,
                pgid,
                start_time,
            } => groups.push(Group {
                run: run.clone(),
                step: step.clone(),
                owner: *owner,
                pgid: *pgid,
                start_time: *start_time,
            }),
            Entry::Reaped {
                pgid, start_time, ..
            } => groups.retain(|g| !(g.pgid == *pgid && g.start_time == *start_time)),
            Entry::Exited { .. } => {}
        }
    }
    groups
}

/// The journal of a state file, open for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Lines written through this handle so far.
    written: AtomicU64,
    /// How many of them a finished sync covers; held while syncing (group commit: those
    /// that wait for a sync in progress find their line covered by the next one, or by a
    /// sync that started after their write).
    synced: Mutex<u64>,
    /// Syncs made.
    syncs: AtomicU64,
}

impl Journal {
    /// Open (or create) the journal at `path`; a last line left half-written is cut off.
    pub fn open(path: &Path) -> std::io::Result<Journal> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)?;
        if text.last().is_some_and(|b| *b != b'\n') {
            let keep = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            file.set_len(keep as u64)?;
            file.seek(SeekFrom::End(0))?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            written: AtomicU64::new(0),
            synced: Mutex::new(0),
            syncs: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `entry` as one line and sync it. Lines of several threads that end together
    /// share one sync: a line is on disk when this returns, whichever sync took it there.
    pub fn append(&self, entry: &Entry) -> std::io::Result<()> {
        let line = self.note(entry)?;
        self.sync_through(line)
    }

    /// Sync every line written through this handle so far: one sync for all of them, none
    /// when a sync since their writes covered them.
    pub fn sync(&self) -> std::io::Result<()> {
        self.sync_through(self.written.load(Ordering::SeqCst))
    }

    fn sync_through(&self, line: u64) -> std::io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= line {
            return Ok(());
        }
        // Every line counted here was written before the sync starts: it covers them.
        let upto = self.written.load(Ordering::SeqCst);
        self.file.sync_data()?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        *synced = upto;
        Ok(())
    }

    /// How many syncs [`Journal::append`] and [`Journal::sync`] made.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Append `entry` as one line without waiting for the disk: it survives a kill of
    /// kcideploy, not a crash of the machine (which ends the processes it is about too).
    /// Returns the line's number among those written through this handle.
    pub fn note(&self, entry: &Entry) -> std::io::Result<u64> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        (&self.file).write_all(&line)?;
        Ok(self.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Empty the journal (state holds what it said).
    pub fn clear(&self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()
    }

    /// The file descriptor a process writes its own [`SpawnedLine`] to, before its program
    /// runs (it is closed on exec).
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// The entries of the journal at `path` (none when there is no journal). A line that does
/// not parse is skipped with a warning naming it: the journal only adds to state.
pub fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    for (n, line) in text[..complete].split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(entry) => entries.push(entry),
            Err(e) => tracing::warn!("{}:{}: skipped: {e}", path.display(), n + 1),
        }
    }
    Ok(entries)
}

/// How a step that ran ended, besides its run record.
pub struct Ended<'a> {
    pub digest: &'a str,
    pub run_id: &'a str,
    pub finished_at: Timestamp,
    pub outputs: Option<&'a serde_json::Value>,
    /// The step's resolved settings (kept with a success).
    pub params: Option<&'a std::collections::BTreeMap<String, String>>,
}

/// A step that ran, in state: its record (a success or a failure) and its run's record.
pub fn record_outcome(state: &mut State, ended: Ended<'_>, step: RunStep) {
    if matches!(step.result, StepResult::Success | StepResult::Failed) {
        let last = state.steps.get(&step.name);
        let success = step.result == StepResult::Success;
        let record = StepRecord {
            digest: ended.digest.to_string(),
            result: step.result,
            run_id: ended.run_id.to_string(),
            finished_at: Some(ended.finished_at),
            duration_ms: step.duration_ms,
            outputs: last_good_outputs(step.result, ended.outputs, last),
            params: match success {
                true => ended.params.cloned(),
                false => last.and_then(|r| r.params.clone()),
            },
            params_run: match success {
                true => Some(ended.run_id.to_string()),
                false => last.and_then(|r| r.params_run.clone()),
            },
        };
        state.steps.insert(step.name.clone(), record);
    }
    record_step(state, step);
}

/// Put `entry` in the record of the current run (a resumed run keeps what a step did
/// before it: a success is not replaced by `done_before`).
pub fn record_step(state: &mut State, entry: RunStep) {
    let Some(run) = state.current_run.as_mut() else {
        return;
    };
    match run.steps.iter_mut().find(|s| s.name == entry.name) {
        Some(existing)
            if entry.result == StepResult::DoneBefore && existing.result == StepResult::Success => {
        }
        Some(existing) => *existing = entry,
        None => run.steps.push(entry),
    }
}

/// Fold the journal's step exits of the unfinished run into `state`, in their order: during
/// an apply state is written when the run starts and ends, and a step's end goes only to the
/// journal, so state and journal together are what happened. A step that exited 0 is then
/// done and does not run again. Folding twice changes nothing. Returns how many were folded.
pub fn fold(state: &mut State, entries: &[Entry]) -> usize {
    let Some(run_id) = state.current_run.as_ref().map(|r| r.id.clone()) else {
        return 0;
    };
    let mut folded = 0;
    for entry in entries {
        if let Entry::Exited {
            run,
            digest,
            step,
            finished_at,
            outputs,
            params,
        } = entry
            && *run == run_id
        {
            let ended = Ended {
                digest,
                run_id: &run_id,
                finished_at: *finished_at,
                outputs: outputs.as_ref(),
                params: params.as_ref(),
            };
            record_outcome(state, ended, step.clone());
            folded += 1;
        }
    }
    folded
}

/// What a step's record keeps as its outputs: a success's own; after a failure, those of the
/// last success (the pipe-cleaner's rotation and the summaries the next cycle compares with),
/// which the failure is recorded next to, never in place of.
fn last_good_outputs(
    result: StepResult,
    outputs: Option<&serde_json::Value>,
    last: Option<&StepRecord>,
) -> Option<serde_json::Value> {
    if result == StepResult::Success {
        outputs.cloned()
    } else {
        last.and_then(|r| r.outputs.clone())
    }
}

/// Width of the pid slot of a [`SpawnedLine`] (`i32::MAX` has 10 digits).
const PGID_WIDTH: usize = 10;
/// Width of the start time slot (`u64::MAX` has 20 digits).
const START_WIDTH: usize = 20;

/// The [`Entry::Spawned`] line of one process, made before the process exists and
/// completed by the process itself, after `fork` and before `exec`, without allocating: the
/// numbers go into slots of spaces (JSON whitespace) at fixed offsets.
#[derive(Debug, Clone)]
pub struct SpawnedLine {
    bytes: Vec<u8>,
    pgid_end: usize,
    start_end: usize,
}

impl SpawnedLine {
    pub fn new(run: &str, step: &str, owner: Process) -> SpawnedLine {
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        let mut bytes = format!(
            r#"{{"event":"spawned","run":{},"step":{},"owner":{},"pgid":"#,
            quote(run),
            quote(step),
            serde_json::to_string(&owner).unwrap_or_default()
        )
        .into_bytes();
        bytes.extend([b' '; PGID_WIDTH]);
        let pgid_end = bytes.len();
        bytes.extend(br#","start_time":"#);
        bytes.extend([b' '; START_WIDTH]);
        let start_end = bytes.len();
        bytes.extend(b"}\n");
        SpawnedLine {
            bytes,
            pgid_end,
            start_end,
        }
    }

    /// The line for `pgid` and `start_time`. Async-signal-safe: no allocation.
    pub fn fill(&mut self, pgid: i32, start_time: u64) -> &[u8] {
        put_digits(
            &mut self.bytes[self.pgid_end - PGID_WIDTH..self.pgid_end],
            pgid.max(0) as u64,
        );
        put_digits(
            &mut self.bytes[self.start_end - START_WIDTH..self.start_end],
            start_time,
        );
        &self.bytes
    }
}

/// `n` right-aligned in `slot`, spaces before it.
pub fn put_digits(slot: &mut [u8], mut n: u64) {
    for b in slot.iter_mut() {
        *b = b' ';
    }
    for b in slot.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn exited(step: &str) -> Entry {
        Entry::Exited {
            run: "r1".into(),
            digest: "d".into(),
            step: RunStep {
                name: step.into(),
                result: StepResult::Success,
                attempts: 1,
                duration_ms: 5,
                detail: None,
                log: None,
            },
            finished_at: Timestamp::UNIX_EPOCH,
            outputs: Some(serde_json::json!({"id": "x"})),
            params: None,
        }
    }

    #[test]
    fn a_spawned_line_filled_after_fork_is_the_entry() {
        let owner = Process {
            pid: 1,
            start_time: 2,
        };
        let mut line = SpawnedLine::new("r\"1", "s0", owner);
        let bytes = line.fill(4_194_304, 123_456_789).to_vec();
        assert!(bytes.ends_with(b"}\n"));
        let entry: Entry = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            entry,
            Entry::Spawned {
                run: "r\"1".into(),
                step: "s0".into(),
                owner,
                pgid: 4_194_304,
                start_time: 123_456_789
            }
        );
        let again: Entry = serde_json::from_slice(line.fill(7, u64::MAX)).expect("json");
        assert!(matches!(
            again,
            Entry::Spawned {
                pgid: 7,
                start_time: u64::MAX,
                ..
            }
        ));
    }

    #[test]
    fn a_torn_line_is_cut_and_the_rest_replays_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json.journal");
        let journal = Journal::open(&path).expect("open");
        journal.append(&exited("a")).expect("append");
        let owner = Process {
            pid: 1,
            start_time: 2,
        };
        let spawned = SpawnedLine::new("r1", "b", owner).fill(10, 20).to_vec();
        (&journal.file).write_all(&spawned).expect("spawned");
        drop(journal);
        // A kill in the middle of a line.
        let mut f = OpenOptions::new().append(true).open(&path).expect("f");
        f.write_all(br#"{"event":"exited","run":"r1""#)
            .expect("torn");
        assert_eq!(
            read(&path).expect("read").len(),
            2,
            "the torn line is not read"
        );
        let journal = Journal::open(&path).expect("reopen");
        journal
            .append(&Entry::Reaped {
                run: "r1".into(),
                step: "b".into(),
                pgid: 10,
                start_time: 20,
            })
            .expect("append");
        let entries = read(&path).expect("read");
        assert_eq!(entries.len(), 3, "{entries:?}");
        assert_eq!(entries[0], exited("a"));
        assert!(unreaped(&entries).is_empty());
        assert_eq!(unreaped(&entries[..2]).len(), 1);
        journal.clear().expect("clear");
        assert!(read(&path).expect("read").is_empty());
        assert!(read(&dir.path().join("none")).expect("none").is_empty());
    }

    #[test]
    fn lines_that_end_together_share_one_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json.journal");
        let journal = Journal::open(&path).expect("open");
        journal.append(&exited("first")).expect("append");
        assert_eq!(journal.syncs(), 1);
        std::thread::scope(|scope| {
            // A sync in progress (held here) while three steps end.
            let held = journal.synced.lock().expect("lock");
            let writers: Vec<_> = ["a", "b", "c"]
                .map(|name| scope.spawn(|| journal.append(&exited(name))))
                .into_iter()
                .collect();
            while journal.written.load(Ordering::SeqCst) < 4 {
                std::thread::yield_now();
            }
            drop(held);
            for w in writers {
                w.join().expect("join").expect("append");
            }
        });
        assert_eq!(journal.syncs(), 2, "one sync for the three lines");
        assert_eq!(*journal.synced.lock().expect("lock"), 4);
        assert_eq!(read(&path).expect("read").len(), 4);
        // Alone, a line gets its own sync.
        journal.append(&exited("d")).expect("append");
        assert_eq!(journal.syncs(), 3);
    }

    #[test]
    fn one_sync_covers_the_lines_written_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(&dir.path().join("s.json.journal")).expect("open");
        journal.sync().expect("nothing to sync");
        assert_eq!(journal.syncs(), 0);
        for name in ["a", "b", "c"] {
            journal.note(&exited(name)).expect("note");
        }
        journal.sync().expect("sync");
        journal.sync().expect("again");
        assert_eq!(journal.syncs(), 1, "the second sync had nothing to do");
        assert_eq!(*journal.synced.lock().expect("lock"), 3);
    }

    fn record(result: StepResult, outputs: Option<serde_json::Value>) -> StepRecord {
        StepRecord {
            digest: "d".into(),
            result,
            run_id: "r1".into(),
            finished_at: None,
            duration_ms: 0,
            outputs,
            params: None,
            params_run: None,
        }
    }

    #[test]
    fn a_failure_keeps_the_outputs_of_the_last_success() {
        let good = json!({"next_index": 1});
        let after_success = record(StepResult::Success, Some(good.clone()));
        assert_eq!(
            last_good_outputs(StepResult::Failed, None, Some(&after_success)),
            Some(good.clone())
        );
        // And a second failure too (the record after the first one holds them).
        let after_failure = record(StepResult::Failed, Some(good.clone()));
        assert_eq!(
            last_good_outputs(StepResult::Failed, None, Some(&after_failure)),
            Some(good)
        );
        assert_eq!(last_good_outputs(StepResult::Failed, None, None), None);
    }

    #[test]
    fn a_success_records_its_own_outputs_even_none() {
        let last = record(StepResult::Success, Some(json!({"next_index": 1})));
        let now = json!({"next_index": 2});
        assert_eq!(
            last_good_outputs(StepResult::Success, Some(&now), Some(&last)),
            Some(now)
        );
        assert_eq!(
            last_good_outputs(StepResult::Success, None, Some(&last)),
            None
        );
    }
}
