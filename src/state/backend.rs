//! The state backend a plan uses ([`crate::config::BackendSetting`]): its state file
//! ([`LocalState`]) or a PostgreSQL database ([`PgState`]). Callers hold a [`Backend`] and
//! never ask which: the same read, write, lock, holder and force-unlock for both. Both keep
//! a local path: run logs, checkouts and the journal of step process groups (which only
//! this host can act on) stay beside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::journal::Entry;
use super::lock::FileLock;
use super::postgres::{PgLock, PgState};
use super::{LocalState, LockError, LockInfo, State, StateError};
use crate::config::{BackendSetting, Config};
use crate::support::rt;

/// Where a plan's state lives.
#[derive(Debug, Clone)]
pub enum Backend {
    Local(LocalState),
    Postgres(Arc<PgState>),
}

/// Proof that this process holds the state's lock; released on drop.
#[derive(Debug)]
pub struct StateLock {
    pub info: LockInfo,
    _held: Held,
}

#[derive(Debug)]
enum Held {
    File(FileLock),
    Postgres(PgLock),
}

/// Where an apply records its steps' ends as rows (PostgreSQL), besides the journal file.
#[derive(Debug, Clone)]
pub struct StepRows(Arc<PgState>);

impl StepRows {
    /// The step's end, committed when this returns.
    pub async fn append(&self, entry: &Entry) -> Result<(), StateError> {
        self.0.append_step_end(entry).await
    }
}

impl Backend {
    /// The backend `config` names (`-backend-config`, `KCIDEPLOY_BACKEND`, `state.backend`).
    pub fn open(config: &Config) -> Result<Backend, StateError> {
        Backend::of(config.backend()?, &config.file.name, config.state_path())
    }

    /// The backend `setting` names for plan `name`, whose local state path is `path`.
    pub fn of(setting: BackendSetting, name: &str, path: PathBuf) -> Result<Backend, StateError> {
        Ok(match setting {
            BackendSetting::Local => Backend::Local(LocalState::new(path)),
            BackendSetting::Postgres(url) => {
                Backend::Postgres(Arc::new(PgState::new(url, name, &path)?))
            }
        })
    }

    /// The local state file backend at `path`.
    pub fn local(path: impl Into<PathBuf>) -> Backend {
        Backend::Local(LocalState::new(path))
    }

    /// The local state path (the state file itself, for the local backend).
    pub fn path(&self) -> &Path {
        match self {
            Backend::Local(l) => &l.path,
            Backend::Postgres(p) => p.local_path(),
        }
    }

    /// The journal of step process groups (and, for the local backend, step ends).
    pub fn journal_path(&self) -> PathBuf {
        LocalState::new(self.path()).journal_path()
    }

    /// Where the state is, for messages (a URL never shows its password).
    pub fn describe(&self) -> String {
        match self {
            Backend::Local(l) => format!("state file {}", l.path.display()),
            Backend::Postgres(p) => format!("PostgreSQL {} (plan {})", p.url(), p.name()),
        }
    }

    /// The state (step ends not yet in it folded in), or `None` when there is none.
    pub fn read(&self) -> Result<Option<State>, StateError> {
        match self {
            Backend::Local(l) => l.read(),
            Backend::Postgres(p) => rt::wait(p.read()),
        }
    }

    pub async fn read_async(&self) -> Result<Option<State>, StateError> {
        match self {
            Backend::Local(l) => l.read(),
            Backend::Postgres(p) => p.read().await,
        }
    }

    /// Write `state`, its serial incremented (PostgreSQL: only over the serial it was read
    /// at; a stale writer gets [`StateError::Stale`]).
    pub fn write(&self, state: &mut State) -> Result<(), StateError> {
        match self {
            Backend::Local(l) => l.write(state),
            Backend::Postgres(p) => rt::wait(p.write(state)),
        }
    }

    pub async fn write_async(&self, state: &mut State) -> Result<(), StateError> {
        match self {
            Backend::Local(l) => l.write(state),
            Backend::Postgres(p) => p.write(state).await,
        }
    }

    /// Take the state's lock for `operation`, waiting up to `timeout` for its holder.
    pub fn lock(&self, operation: &str, timeout: Duration) -> Result<StateLock, LockError> {
        let held = match self {
            Backend::Local(l) => Held::File(FileLock::acquire(&l.path, operation, timeout)?),
            Backend::Postgres(p) => Held::Postgres(rt::wait(p.lock(operation, timeout))?),
        };
        let info = match &held {
            Held::File(f) => f.info.clone(),
            Held::Postgres(p) => p.info.clone(),
        };
        Ok(StateLock { info, _held: held })
    }

    /// Who holds the lock, if anybody.
    pub fn holder(&self) -> Result<Option<LockInfo>, LockError> {
        match self {
            Backend::Local(l) => super::lock::holder(&l.path),
            Backend::Postgres(p) => rt::wait(p.holder()),
        }
    }

    /// Remove the lock `id` of a holder gone for good (see [`super::lock::force_unlock`]).
    pub fn force_unlock(&self, id: &str, force: bool) -> Result<LockInfo, LockError> {
        match self {
            Backend::Local(l) => super::lock::force_unlock(&l.path, id, force),
            Backend::Postgres(p) => rt::wait(p.force_unlock(id, force)),
        }
    }

    /// Where an apply's step ends go as rows, besides the journal (PostgreSQL only).
    pub fn step_rows(&self) -> Option<StepRows> {
        match self {
            Backend::Local(_) => None,
            Backend::Postgres(p) => Some(StepRows(p.clone())),
        }
    }

    /// State now holds every step end recorded so far (the journal is emptied).
    pub async fn fold_step_ends(&self) -> Result<(), StateError> {
        match self {
            Backend::Local(_) => Ok(()),
            Backend::Postgres(p) => p.fold_step_ends().await,
        }
    }
}
