//! What the HTTP handlers, the worker and the deploy thread share.

use std::sync::{Arc, Mutex, MutexGuard};

use miette::Result;

use super::approvals::Approvals;
use super::endpoint::Queue;
use super::metrics::Metrics;
use super::serve::ServeOptions;
use super::status::Status;
use crate::config::{Config, RepoConfig};
use crate::forge::github::slug;
use crate::state::LocalState;

/// Shared by the HTTP handlers, the worker and the deploy thread.
pub(super) struct Hub {
    pub(super) config: Config,
    pub(super) opts: ServeOptions,
    pub(super) queue: Queue,
    pub(super) metrics: Arc<Metrics>,
    pub(super) status: Mutex<Status>,
    pub(super) approvals: Approvals,
}

impl Hub {
    pub(super) fn new(config: Config, opts: ServeOptions, queue: Queue) -> Hub {
        let approvals = Approvals::open(queue.dir().join("approvals.json"));
        Hub {
            config,
            opts,
            queue,
            metrics: Arc::new(Metrics::default()),
            status: Mutex::new(Status::default()),
            approvals,
        }
    }

    pub(super) fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Move the approvals waiting on disk into `state` (under its lock).
    pub(super) fn record_approvals(&self, backend: &LocalState) -> Result<()> {
        self.approvals.record(backend)
    }

    /// The plan file's repo for a GitHub `owner/name`.
    pub(super) fn repo_for(&self, full_name: &str) -> Option<(String, &RepoConfig)> {
        self.config
            .file
            .repos
            .iter()
            .find(|(_, r)| slug(r).is_some_and(|s| s.eq_ignore_ascii_case(full_name)))
            .map(|(n, r)| (n.clone(), r))
    }
}
