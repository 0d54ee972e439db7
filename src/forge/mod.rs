//! Forges: where pending changes come from. A forge turns a repo's configuration into a
//! [`RepoSnapshot`]; everything after that (planning) is deterministic.

pub mod git;
pub mod github;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::{Config, ForgeKind};

/// A pull request or a pending branch, as the forge saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    /// `pr/12` (git forge: the branch name) or `#12` (github).
    pub id: String,
    /// Head commit SHA.
    pub head: String,
    /// Head commit author email (git) or PR author login (github).
    pub author: String,
    /// First line of the head commit message, or the PR title.
    pub title: String,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub draft: bool,
    /// Head commit time (git) or the PR's `updated_at` (github).
    pub updated_at: Timestamp,
    /// The branch the change asks to be merged into (github: the PR's base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// github: `user/branch` of the PR head (what `pending.skip` matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// github: the PR's changed files from the API (all pages), used for attribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// github with `pending.require_checks`: the head's check runs and commit statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<Check>>,
}

/// One check run (by name) or commit status (by context) on a change's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub state: CheckState,
    /// GitHub's word: a check run's conclusion or status (`timed_out`, `in_progress`), a
    /// commit status's state (`error`).
    pub detail: String,
}

/// Where a check stands, for gating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// Succeeded, or neutral or skipped.
    Passed,
    /// Queued or in progress; a pending status.
    Running,
    /// Failed, cancelled, timed out, needs action; a failed or errored status.
    Failed,
}

/// One repo's inputs to planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoSnapshot {
    /// Base branch name and its SHA.
    pub base_branch: String,
    pub base: String,
    /// The staging branch's SHA on the remote, if it exists.
    pub remote_staging: Option<String>,
    /// Pending changes in the forge's order (git: natural sort of branch names).
    pub changes: Vec<PendingChange>,
    /// The local cache repository holding every commit above.
    pub cache: PathBuf,
    /// github: the trusted logins, from `trusted`, `trusted_file` and `trusted_team`
    /// (`None`: every author is trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted: Option<Vec<String>>,
}

/// Everything the forges said, per repo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgeSnapshot {
    pub repos: IndexMap<String, RepoSnapshot>,
    /// Where the cache repositories are.
    #[serde(default)]
    pub cache_dir: PathBuf,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ForgeError {
    /// `git fetch` failed or ran out of time; the error names the remote and the cause.
    #[error("cannot fetch repo `{repo}`: {error}")]
    #[diagnostic(help(
        "check the repo's `url` in the plan file, that `git fetch` works from this machine, \
         and `timeouts.git_fetch` for a slow remote"
    ))]
    Fetch {
        repo: String,
        error: crate::gitops::remote::RemoteError,
    },
    #[error("repo `{repo}`: base branch `{branch}` does not exist at {url}")]
    NoBase {
        repo: String,
        branch: String,
        url: String,
    },
    #[error("repo `{repo}`: {message}")]
    Github { repo: String, message: String },
    /// A GitHub API call failed.
    #[error("repo `{repo}`: {error}")]
    GithubApi {
        repo: String,
        error: Box<github::GitHubError>,
    },
    #[error(
        "repo `{repo}` was never fetched: no cache repository at {}",
        path.display()
    )]
    #[diagnostic(help(
        "fetch once with network (`kcideploy plan`), or pass the `--cache-dir` it used"
    ))]
    NotCached { repo: String, path: PathBuf },
    #[error("repo `{repo}`: cache repository {}: {source}", path.display())]
    Cache {
        repo: String,
        path: PathBuf,
        source: git2::Error,
    },
}

/// Fetch every repo of the plan file and list its pending changes.
pub fn snapshot(config: &Config, cache_dir: &Path) -> Result<ForgeSnapshot, ForgeError> {
    let mut snap = ForgeSnapshot {
        cache_dir: cache_dir.to_path_buf(),
        ..ForgeSnapshot::default()
    };
    for (name, repo) in &config.file.repos {
        let repo_snap = match repo.forge {
            ForgeKind::Git => git::snapshot(config, name, repo, cache_dir)?,
            ForgeKind::Github => github::snapshot(config, name, repo, cache_dir)?,
        };
        snap.repos.insert(name.clone(), repo_snap);
    }
    Ok(snap)
}

/// What the last fetch left in the cache, without the network: each repo's base and staging
/// branches as last fetched and, for the git forge, its pending branches as last fetched. A
/// github repo's pull requests come from the API, so it has none: its base revision.
pub fn cached_snapshot(config: &Config, cache_dir: &Path) -> Result<ForgeSnapshot, ForgeError> {
    let mut snap = ForgeSnapshot {
        cache_dir: cache_dir.to_path_buf(),
        ..ForgeSnapshot::default()
    };
    for (name, repo) in &config.file.repos {
        let cache = cache_dir.join(format!("{name}.git"));
        if !cache.is_dir() {
            return Err(ForgeError::NotCached {
                repo: name.clone(),
                path: cache,
            });
        }
        let (git_repo, _guard) =
            crate::gitops::open_cache(&cache).map_err(|e| ForgeError::Cache {
                repo: name.clone(),
                path: cache.clone(),
                source: git2::Error::from_str(&e),
            })?;
        let url = config.repo_url(repo);
        let mut repo_snap = git::read(name, repo, &url, &git_repo, &cache)?;
        if repo.forge == ForgeKind::Github {
            repo_snap.changes.clear();
        }
        snap.repos.insert(name.clone(), repo_snap);
    }
    Ok(snap)
}

/// Default cache directory for a plan: beside its state file.
pub fn default_cache_dir(config: &Config) -> PathBuf {
    let state = config.state_path();
    state
        .parent()
        .unwrap_or(Path::new("."))
        .join("cache")
        .join(&config.file.name)
}
