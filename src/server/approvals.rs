//! Approvals given with `@kcibot deploy`: kept in a file beside the queue until the next
//! deploy records them in state (under its lock), so a restart loses none.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use miette::{IntoDiagnostic, Result};

use crate::state::{Approval, Backend};

/// The approvals file and how many approvals it holds.
pub(super) struct Approvals {
    file: PathBuf,
    /// Guards the file.
    lock: Mutex<()>,
    pending: AtomicUsize,
}

impl Approvals {
    /// The approvals kept in `file` (`approvals.json` in the queue directory).
    pub(super) fn open(file: PathBuf) -> Approvals {
        let approvals = Approvals {
            file,
            lock: Mutex::new(()),
            pending: AtomicUsize::new(0),
        };
        approvals
            .pending
            .store(approvals.read().len(), Ordering::Relaxed);
        approvals
    }

    /// How many approvals wait for the next deploy.
    pub(super) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    fn read(&self) -> Vec<Approval> {
        std::fs::read(&self.file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Keep an approval on disk until a deploy records it in state.
    pub(super) fn add(&self, approval: Approval) -> std::io::Result<usize> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut list = self.read();
        list.retain(|a| !(a.repo == approval.repo && a.change == approval.change));
        list.push(approval);
        let bytes = serde_json::to_vec_pretty(&list).map_err(std::io::Error::other)?;
        crate::support::write_atomic(&self.file, &bytes)?;
        self.pending.store(list.len(), Ordering::Relaxed);
        Ok(list.len())
    }

    /// Move the approvals on disk into `state` (under its lock).
    pub(super) fn record(&self, backend: &Backend) -> Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let list = self.read();
        if list.is_empty() {
            return Ok(());
        }
        let mut state = backend.read()?.unwrap_or_default();
        for a in list {
            state
                .approvals
                .retain(|old| !(old.repo == a.repo && old.change == a.change));
            state.approvals.push(a);
        }
        backend.write(&mut state)?;
        std::fs::remove_file(&self.file).into_diagnostic()?;
        self.pending.store(0, Ordering::Relaxed);
        Ok(())
    }
}
