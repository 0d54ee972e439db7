//! What the HTTP handlers, the worker and the deploy thread share.

use std::sync::{Arc, Mutex, MutexGuard};

use miette::Result;

use super::approvals::Approvals;
use super::endpoint::Deliveries;
use super::metrics::Metrics;
use super::serve::ServeOptions;
use super::status::Status;
use super::triggers::Triggers;
use super::webhook::Event;
use crate::config::ForgeKind;
use crate::config::{Config, RepoConfig};
use crate::forge::github::slug;
use crate::state::Backend;

/// Whether a push to `branch` may change what staging should be: its base branch, or (git
/// forge) a pending branch.
pub(super) fn push_matters(cfg: &RepoConfig, branch: &str) -> bool {
    branch == cfg.base
        || (cfg.forge == ForgeKind::Git
            && branch != cfg.staging_branch
            && crate::config::glob(&cfg.pending.branches.value)
                .is_ok_and(|g| g.compile_matcher().is_match(branch)))
}

/// Shared by the HTTP handlers, the worker and the deploy thread.
pub(super) struct Hub {
    pub(super) config: Config,
    /// Where the plan's state is.
    pub(super) backend: Backend,
    pub(super) opts: ServeOptions,
    pub(super) queue: Deliveries,
    pub(super) metrics: Arc<Metrics>,
    pub(super) status: Mutex<Status>,
    pub(super) approvals: Approvals,
    pub(super) triggers: Triggers,
    /// The status pages' token (`server.status_token_env`), if any.
    pub(super) status_token: Option<String>,
    /// Held while the forges are fetched (a deploy, a PR preview): one fetch at a time into
    /// the cache.
    pub(super) fetching: Mutex<()>,
    /// PR previews run one at a time.
    pub(super) previews: tokio::sync::Mutex<()>,
}

impl Hub {
    pub(super) fn new(
        config: Config,
        backend: Backend,
        opts: ServeOptions,
        queue: Deliveries,
    ) -> Hub {
        let approvals = Approvals::open(queue.dir().join("approvals.json"));
        let triggers = Triggers::open(queue.dir().join("triggers.json"));
        let status_token = config
            .file
            .server
            .status_token_env
            .as_ref()
            .and_then(|name| std::env::var(name).ok())
            .filter(|t| !t.trim().is_empty());
        Hub {
            backend,
            config,
            opts,
            queue,
            metrics: Arc::new(Metrics::default()),
            status: Mutex::new(Status::default()),
            approvals,
            triggers,
            status_token,
            fetching: Mutex::new(()),
            previews: tokio::sync::Mutex::new(()),
        }
    }

    /// Where this plan's run logs are: `runs/<name>/` beside the state file.
    pub(super) fn runs_dir(&self) -> std::path::PathBuf {
        let state = self.config.state_path();
        state
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
            .join("runs")
            .join(&self.config.file.name)
    }

    pub(super) fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Move the approvals waiting on disk into `state` (under its lock).
    pub(super) fn record_approvals(&self, backend: &Backend) -> Result<()> {
        self.approvals.record(backend)
    }

    /// Whether the worker does anything with `event`: deliveries that it would only
    /// acknowledge are not queued.
    pub(super) fn acts_on(&self, event: &Event) -> bool {
        match event {
            Event::Ping => false,
            Event::PullRequest { repo, .. } => self.repo_for(repo).is_some(),
            Event::Push { repo, branch, .. } => self
                .repo_for(repo)
                .is_some_and(|(_, cfg)| push_matters(cfg, branch)),
            // A check of a repo gated on its checks; kcideploy's own status says what it
            // did, not what CI found.
            Event::Checks { repo, name, .. } => self.repo_for(repo).is_some_and(|(_, cfg)| {
                cfg.pending.require_checks.is_some() && *name != self.config.file.notify.context
            }),
            Event::PrComment {
                repo, author, body, ..
            } => {
                let bot = &self.config.file.server.bot;
                self.repo_for(repo).is_some()
                    && !author.trim_end_matches("[bot]").eq_ignore_ascii_case(bot)
                    && !super::bot::parser::parse(body, bot).is_empty()
            }
        }
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
