//! State: what is deployed and what happened. JSON, `serial` + `lineage` like Terraform.
//! `plan` only reads it; writes go through [`write_atomic`] (temp file, fsync, rename), after
//! the state they replace is copied to `<state>.backup` the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::Cycle;

mod backend;
pub mod journal;
pub mod lock;
pub mod migrate;
pub mod postgres;
pub mod render;
mod results;

pub use backend::{Backend, StateLock, StepRows};
pub use lock::{LockError, LockInfo};
pub use results::{ExclusionCause, RoundResult, RunResult, StepResult, VerdictKind};

/// The state format version this build reads and writes.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// Everything kcideploy remembers about one deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format_version: u32,
    /// Increments on every write.
    pub serial: u64,
    /// Set when the state is created; never changes.
    pub lineage: String,
    /// Deployed revision per repo.
    #[serde(default)]
    pub repos: BTreeMap<String, RepoState>,
    /// When the last cycles finished.
    #[serde(default)]
    pub cycles: CycleTimes,
    /// Per-step record of the last run (input digest and result), for resuming.
    #[serde(default)]
    pub steps: BTreeMap<String, StepRecord>,
    /// The run in progress, or the last one if it did not succeed (resumable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_run: Option<RunRecord>,
    /// Finished runs, oldest first; the newest [`HISTORY_KEEP`] are kept.
    #[serde(default)]
    pub history: Vec<RunRecord>,
    /// Changes left out until their head moves (blamed for a failure).
    #[serde(default)]
    pub exclusions: Vec<Exclusion>,
    /// The last bisections, oldest first.
    #[serde(default)]
    pub blames: Vec<BlameRecord>,
    /// Maintainers' approvals of changes by untrusted authors, each bound to a head SHA.
    #[serde(default)]
    pub approvals: Vec<Approval>,
}

/// A maintainer's approval of a change at one head (a new push needs a new approval).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub repo: String,
    pub change: String,
    pub head: String,
    /// Who approved (a GitHub login).
    pub by: String,
    pub at: Timestamp,
}

/// A change left out at a given head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exclusion {
    pub id: String,
    pub repo: String,
    pub change: String,
    pub head: String,
    pub reason: ExclusionCause,
    /// The step that failed with it.
    pub step: String,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    pub at: Timestamp,
    pub run_id: String,
}

/// One bisection: what was tried and what it concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlameRecord {
    pub run_id: String,
    /// The failed step.
    pub step: String,
    pub at: Timestamp,
    /// Candidates, as `<repo> <change>`, in merge order.
    pub candidates: Vec<String>,
    pub rounds: Vec<BlameRound>,
    pub verdict: VerdictKind,
    /// The changes blamed (one, or two for a pair).
    #[serde(default)]
    pub culprits: Vec<String>,
    pub summary: String,
}

/// One run of the failed step's subgraph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlameRound {
    /// 0 is the flake check (the same inputs again).
    pub n: u32,
    /// The candidates merged in this round.
    pub included: Vec<String>,
    pub result: RoundResult,
    pub log_dir: String,
    /// How each step of the round ended (the executor's records, as in a run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<RunStep>,
}

/// How many bisections state keeps.
pub const BLAMES_KEEP: usize = 20;

/// How many finished runs state keeps.
pub const HISTORY_KEEP: usize = 50;

/// One apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    /// Digest of the saved plan it ran (the plan's fingerprint digest).
    pub plan_digest: String,
    /// Digest of what the run deploys (cycle, staging revisions, plan file); a later apply
    /// with the same inputs resumes this run.
    pub inputs_digest: String,
    pub cycle: Cycle,
    /// State serial when the run started.
    pub start_serial: u64,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    pub result: RunResult,
    #[serde(default)]
    pub steps: Vec<RunStep>,
    /// How the run was asked for: `-target`, `-replace`, a rollback.
    #[serde(flatten)]
    pub scope: RunScope,
    /// What the run deploys, per repo (a rollback plans these again).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revisions: BTreeMap<String, RunRevision>,
    /// The image id of each image-building step once the run ended (by step).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// The digests each `kubernetes` step pinned (by step, then `pin_images` key) once the
    /// run ended: a rollback pins them again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pins: BTreeMap<String, BTreeMap<String, String>>,
}

/// A run's `-target` and `-replace` steps, and the run it rolls back to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunScope {
    /// `-target`: the run was partial, restricted to these steps and what they need.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// `-replace`: these steps ran although nothing they depend on changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replace: Vec<String>,
    /// `rollback`: the run deploys the revisions this earlier run recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
    /// `promote`: the run deploys what this staging run passed (`<plan> run <id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<String>,
}

impl RunScope {
    /// The run whose revisions pin the repos: a rollback's or a promotion's.
    pub fn pinned_by(&self) -> Option<&str> {
        self.rollback_of
            .as_deref()
            .or(self.promoted_from.as_deref())
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
            && self.replace.is_empty()
            && self.rollback_of.is_none()
            && self.promoted_from.is_none()
    }
}

/// One repo in a run: the staging revision it deploys, the base and the changes in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRevision {
    pub staging: String,
    pub base: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included: Vec<ChangeRef>,
}

/// A step's outcome within a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStep {
    pub name: String,
    pub result: StepResult,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// What runs now for one repo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoState {
    /// The deployed staging revision (a commit SHA).
    pub deployed: String,
    /// The base SHA it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The changes merged into it: (id, head SHA).
    #[serde(default)]
    pub included: Vec<ChangeRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<Timestamp>,
}

/// A pending change at a given head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRef {
    pub id: String,
    pub head: String,
}

/// When the last partial and full cycles finished.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CycleTimes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_partial: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full: Option<Timestamp>,
}

impl CycleTimes {
    pub fn last(&self, cycle: Cycle) -> Option<Timestamp> {
        match cycle {
            Cycle::Partial => self.last_partial,
            Cycle::Full => self.last_full,
        }
    }
}

/// The last run of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Digest of the step's inputs when it ran.
    pub digest: String,
    /// `Success` or `Failed`.
    pub result: StepResult,
    /// The run it belonged to.
    #[serde(default)]
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    #[serde(default)]
    pub duration_ms: u64,
    /// What the step made the last time it succeeded (image id and tags, containers; the
    /// pipe-cleaner's rotation and summaries), for drift detection and the next run. A failure
    /// since keeps them: `result`, `run_id` and `finished_at` then describe the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<serde_json::Value>,
    /// The step's resolved settings in its last success (the plan compares with them), and
    /// that run's id; kept through failures as `outputs` are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_run: Option<String>,
}

impl State {
    /// A new, empty state with a fresh lineage.
    pub fn new() -> State {
        State {
            format_version: STATE_FORMAT_VERSION,
            serial: 0,
            lineage: new_lineage(),
            repos: BTreeMap::new(),
            cycles: CycleTimes::default(),
            steps: BTreeMap::new(),
            current_run: None,
            history: Vec::new(),
            exclusions: Vec::new(),
            blames: Vec::new(),
            approvals: Vec::new(),
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

/// A random identifier for a new state's lineage.
fn new_lineage() -> String {
    crate::support::random_hex::<16>()
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StateError {
    #[error("cannot read state file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {} is not valid state JSON: {source}", path.display())]
    #[diagnostic(help(
        "the state file is written by kcideploy only; restore the state before its last write from {}.backup (move it over the state file), or move the state file away to start from nothing",
        path.display()
    ))]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("state file {} has format version {found}; this kcideploy reads version {STATE_FORMAT_VERSION}", path.display())]
    #[diagnostic(help("use a newer kcideploy"))]
    Version { path: PathBuf, found: u32 },
    #[error("state file {} has serial {}, the largest there is: it cannot be written again", path.display(), u64::MAX)]
    #[diagnostic(help(
        "kcideploy adds one per write, it never gets there: the file was edited. Set `serial` to a smaller number (saved plans made since are then refused)"
    ))]
    SerialExhausted { path: PathBuf },
    #[error("cannot write state file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("PostgreSQL state at {url}: {detail}")]
    Postgres { url: String, detail: String },
    #[error("PostgreSQL state at {url}, plan `{name}`: refused a stale write (this writer read serial {expected} of lineage {lineage}; the database has {})", match found { Some((s, l)) => format!("serial {s} of lineage {l}"), None => "no state".into() })]
    #[diagnostic(help(
        "another kcideploy wrote the state since this one read it; nothing was lost: run the command again"
    ))]
    Stale {
        url: String,
        name: String,
        expected: u64,
        lineage: String,
        found: Option<(u64, String)>,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Backend(#[from] crate::config::BackendError),
}

/// Local file backend.
#[derive(Debug, Clone)]
pub struct LocalState {
    pub path: PathBuf,
}

impl LocalState {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LocalState { path: path.into() }
    }

    /// The state, or `None` when nothing was ever deployed (no file), with the step ends
    /// of its unfinished run that only the journal has yet folded in ([`journal::fold`]).
    pub fn read(&self) -> Result<Option<State>, StateError> {
        let Some(mut state) = self.read_file()? else {
            return Ok(None);
        };
        if state.current_run.is_some() {
            let path = self.journal_path();
            let entries =
                journal::read(&path).map_err(|source| StateError::Read { path, source })?;
            journal::fold(&mut state, &entries);
        }
        Ok(Some(state))
    }

    /// The state file alone, without what the journal adds.
    pub fn read_file(&self) -> Result<Option<State>, StateError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        parse_state(&self.path, &text).map(Some)
    }

    /// The run journal beside the state file (see [`journal`]).
    pub fn journal_path(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".journal");
        PathBuf::from(name)
    }

    /// Where the state before the last write is kept.
    pub fn backup_path(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".backup");
        PathBuf::from(name)
    }

    /// Replace the state file atomically; `serial` is incremented first (refused at
    /// `u64::MAX`: a wrapped serial would let a saved plan of serial 1 apply again). The state
    /// it replaces, when it is valid state, is kept in [`LocalState::backup_path`] first.
    pub fn write(&self, state: &mut State) -> Result<(), StateError> {
        let write_error = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        state.serial = state
            .serial
            .checked_add(1)
            .ok_or_else(|| StateError::SerialExhausted {
                path: self.path.clone(),
            })?;
        let mut json =
            serde_json::to_vec_pretty(state).map_err(|e| write_error(std::io::Error::other(e)))?;
        json.push(b'\n');
        self.back_up().map_err(write_error)?;
        crate::support::write_atomic(&self.path, &json).map_err(write_error)
    }

    /// Copy the state file to the backup, atomically, unless it is missing or not valid
    /// state (a good backup is not replaced by a broken file).
    fn back_up(&self) -> std::io::Result<()> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if parse_state(&self.path, &text).is_err() {
            return Ok(());
        }
        crate::support::write_atomic(&self.backup_path(), text.as_bytes())
    }
}

fn parse_state(path: &Path, text: &str) -> Result<State, StateError> {
    #[derive(Deserialize)]
    struct Probe {
        format_version: u32,
    }
    let probe: Probe = serde_json::from_str(text).map_err(|source| StateError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    if probe.format_version != STATE_FORMAT_VERSION {
        return Err(StateError::Version {
            path: path.to_path_buf(),
            found: probe.format_version,
        });
    }
    serde_json::from_str(text).map_err(|source| StateError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_no_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = LocalState::new(dir.path().join("none.json"));
        assert_eq!(backend.read().expect("read"), None);
    }

    #[test]
    fn write_increments_serial_and_keeps_lineage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = LocalState::new(dir.path().join("sub/s.json"));
        let mut state = State::new();
        let lineage = state.lineage.clone();
        backend.write(&mut state).expect("write");
        backend.write(&mut state).expect("write");
        let read = backend.read().expect("read").expect("some");
        assert_eq!(read.serial, 2);
        assert_eq!(read.lineage, lineage);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("ls")
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".kcideploy-tmp")
            })
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind");
    }

    #[test]
    fn newer_format_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        std::fs::write(
            &path,
            r#"{"format_version": 7, "serial": 1, "lineage": "x"}"#,
        )
        .expect("w");
        let err = LocalState::new(&path).read().unwrap_err();
        assert!(err.to_string().contains("format version 7"), "{err}");
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        std::fs::write(&path, "{not json").expect("w");
        assert!(matches!(
            LocalState::new(&path).read(),
            Err(StateError::Parse { .. })
        ));
    }
}
