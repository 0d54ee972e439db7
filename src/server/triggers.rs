//! Who or what started each deploy of this server, by run id: kept beside the queue
//! (`triggers.json`, the last [`KEEP`]) for the history page; state does not record it.

use std::path::PathBuf;
use std::sync::Mutex;

use indexmap::IndexMap;

/// How many runs' triggers are kept.
pub const KEEP: usize = 200;

pub(super) struct Triggers {
    path: PathBuf,
    map: Mutex<IndexMap<String, String>>,
}

impl Triggers {
    /// Open the file (missing or unreadable: none known).
    pub(super) fn open(path: PathBuf) -> Triggers {
        let map = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Triggers {
            path,
            map: Mutex::new(map),
        }
    }

    /// Why run `run_id` started.
    pub(super) fn get(&self, run_id: &str) -> Option<String> {
        self.lock().get(run_id).cloned()
    }

    /// Remember why `run_id` started (a resumed run keeps its first trigger).
    pub(super) fn record(&self, run_id: &str, why: &str) {
        let text = {
            let mut map = self.lock();
            if map.contains_key(run_id) {
                return;
            }
            map.insert(run_id.to_string(), why.to_string());
            while map.len() > KEEP {
                map.shift_remove_index(0);
            }
            serde_json::to_vec_pretty(&*map)
        };
        let written = text
            .map_err(std::io::Error::other)
            .and_then(|t| crate::support::write_atomic(&self.path, &t));
        if let Err(e) = written {
            tracing::warn!("cannot write {}: {e}", self.path.display());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexMap<String, String>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}
