//! One apply at a time per state: an OS file lock (released by the kernel when the holder
//! dies, even by `kill -9`) on `<state>.lock`, which also records who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Who holds the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub id: String,
    pub pid: u32,
    pub host: String,
    pub operation: String,
    pub created: Timestamp,
}

impl LockInfo {
    /// This process, taking the lock now for `operation`, under a new id.
    pub(crate) fn taken_now(operation: &str) -> LockInfo {
        LockInfo {
            id: crate::support::random_id(),
            pid: std::process::id(),
            host: hostname(),
            operation: operation.to_string(),
            created: Timestamp::now(),
        }
    }
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lock {} held by pid {} on {} for `{}` since {}",
            self.id, self.pid, self.host, self.operation, self.created
        )
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LockError {
    #[error("the state is locked: {}", holder.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "holder unknown".into()))]
    #[diagnostic(help(
        "wait for that run, retry with -lock-timeout DURATION, or if it is gone for good: kcideploy force-unlock {} -f {}",
        holder.as_ref().map(|h| h.id.as_str()).unwrap_or("ID"),
        plan_file.as_deref().unwrap_or("PLAN.yaml")
    ))]
    Locked {
        holder: Option<LockInfo>,
        /// The plan file, for the exact force-unlock command.
        plan_file: Option<String>,
    },
    #[error("cannot lock the state at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock the state: {detail}")]
    Backend { detail: String },
    #[error("the lock at {} is not held", path.display())]
    NotLocked { path: PathBuf },
    #[error("lock ID mismatch: asked to unlock {asked}, but the {holder}")]
    WrongId { asked: String, holder: LockInfo },
    #[error("the {holder} is still running on this host (pid {} is alive): the lock was not removed", holder.pid)]
    #[diagnostic(help(
        "wait for it or stop it (kill {}); only if you are sure that removing the lock under a live run is right, add --force",
        holder.pid
    ))]
    HolderAlive { holder: LockInfo },
}

impl LockError {
    /// Name the plan file in the advice (the lock knows only the state file).
    pub fn for_plan(self, plan_file: &Path) -> LockError {
        match self {
            LockError::Locked { holder, .. } => LockError::Locked {
                holder,
                plan_file: Some(plan_file.display().to_string()),
            },
            other => other,
        }
    }
}

/// Proof that this process holds the lock of a state file; released on drop.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
    pub info: LockInfo,
}

/// The lock file of a state file.
pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    state.with_file_name(name)
}

pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}

fn read_info(file: &mut File) -> Option<LockInfo> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

impl FileLock {
    /// Take the lock of `state`, waiting up to `timeout` for another holder to let go.
    pub fn acquire(
        state: &Path,
        operation: &str,
        timeout: Duration,
    ) -> Result<FileLock, LockError> {
        let path = lock_path(state);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            match file.try_lock() {
                Ok(()) => {
                    // force-unlock may have removed the file we opened: lock the current one.
                    let same = match (file.metadata(), std::fs::metadata(&path)) {
                        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                        _ => false,
                    };
                    if !same {
                        continue;
                    }
                    let info = LockInfo::taken_now(operation);
                    let json =
                        serde_json::to_vec(&info).map_err(|e| io(std::io::Error::other(e)))?;
                    file.set_len(0).map_err(io)?;
                    file.rewind().map_err(io)?;
                    file.write_all(&json).map_err(io)?;
                    file.sync_all().map_err(io)?;
                    return Ok(FileLock { file, path, info });
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    if start.elapsed() >= timeout {
                        return Err(LockError::Locked {
                            holder: read_info(&mut file),
                            plan_file: None,
                        });
                    }
                    std::thread::sleep(pause.min(timeout.saturating_sub(start.elapsed())));
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Remove the file only while it is still ours (force-unlock may have replaced it).
        let ours = match (self.file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

/// Who holds the lock of `state`, if anybody.
pub fn holder(state: &Path) -> Result<Option<LockInfo>, LockError> {
    let path = lock_path(state);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LockError::Io { path, source }),
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            Ok(None)
        }
        Err(_) => Ok(read_info(&mut file)),
    }
}

/// Remove the lock `id` of `state`, for a holder that is gone for good. A holder that still
/// runs on this host (its pid is alive) is refused unless `force`: both runs would then
/// apply at once. (A lock held from another host cannot be checked and is removed.)
pub fn force_unlock(state: &Path, id: &str, force: bool) -> Result<LockInfo, LockError> {
    let path = lock_path(state);
    let Some(info) = holder(state)? else {
        return Err(LockError::NotLocked { path });
    };
    let info = may_remove(info, id, force)?;
    std::fs::remove_file(&path).map_err(|source| LockError::Io { path, source })?;
    Ok(info)
}

/// The holder `info`, when `force-unlock ID` may remove its lock: `id` names it, and it
/// does not run on this host (its pid alive) unless `force`. Both backends ask this.
pub fn may_remove(info: LockInfo, id: &str, force: bool) -> Result<LockInfo, LockError> {
    if info.id != id {
        return Err(LockError::WrongId {
            asked: id.to_string(),
            holder: info,
        });
    }
    if !force && info.host == hostname() && alive(info.pid) {
        return Err(LockError::HolderAlive { holder: info });
    }
    Ok(info)
}

/// Whether a process with this pid exists (signal 0: nothing is sent).
pub(crate) fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        // It exists but is not ours to signal.
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_naming_the_holder_then_succeeds_after_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("s.json");
        let first = FileLock::acquire(&state, "apply", Duration::ZERO).expect("first");
        let err = FileLock::acquire(&state, "apply", Duration::from_millis(50)).unwrap_err();
        let LockError::Locked {
            holder: Some(holder),
            ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(holder, &first.info);
        assert_eq!(
            super::holder(&state).expect("holder"),
            Some(first.info.clone())
        );
        drop(first);
        assert!(!lock_path(&state).exists(), "lock file left behind");
        assert_eq!(super::holder(&state).expect("holder"), None);
        FileLock::acquire(&state, "apply", Duration::ZERO).expect("after release");
    }

    #[test]
    fn force_unlock_checks_the_id_and_refuses_a_live_holder_unless_forced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("s.json");
        let first = FileLock::acquire(&state, "apply", Duration::ZERO).expect("first");
        assert!(matches!(
            force_unlock(&state, "nope", true),
            Err(LockError::WrongId { .. })
        ));
        // The holder is this very process: alive on this host.
        assert!(matches!(
            force_unlock(&state, &first.info.id, false),
            Err(LockError::HolderAlive { .. })
        ));
        assert!(super::holder(&state).expect("holder").is_some(), "kept");
        let removed = force_unlock(&state, &first.info.id, true).expect("force");
        assert_eq!(removed.id, first.info.id);
        let second =
            FileLock::acquire(&state, "apply", Duration::ZERO).expect("after force-unlock");
        drop(first); // must not remove the new holder's file
        assert_eq!(
            super::holder(&state).expect("holder"),
            Some(second.info.clone())
        );
    }
}
