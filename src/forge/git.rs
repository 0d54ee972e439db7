//! The `git` forge: a plain remote whose branches matching a pattern are pending changes.
//! Network access goes through the `git` CLI (credential helpers, ssh, https); reading the
//! fetched refs and commits goes through git2.

use std::path::Path;

use jiff::Timestamp;

use super::{ForgeError, PendingChange, RepoSnapshot};
use crate::config::{Config, RepoConfig};

pub use crate::gitops::remote::{REMOTE_NAMESPACE, redact_url};

/// Fetch the repo `name` into its cache repo (within `timeouts.git_fetch`) and list pending
/// branches.
pub fn snapshot(
    config: &Config,
    name: &str,
    repo: &RepoConfig,
    cache_dir: &Path,
) -> Result<RepoSnapshot, ForgeError> {
    let url = &config.repo_url(repo);
    let cache = cache_dir.join(format!("{name}.git"));
    let (git_repo, _guard) = crate::gitops::open_cache(&cache).map_err(|e| ForgeError::Cache {
        repo: name.to_string(),
        path: cache.clone(),
        source: git2::Error::from_str(&e),
    })?;
    let refspec = format!("+refs/heads/*:{REMOTE_NAMESPACE}*");
    crate::gitops::remote::fetch(&cache, url, &[refspec], true, &config.file.timeouts).map_err(
        |error| ForgeError::Fetch {
            repo: name.to_string(),
            error,
        },
    )?;
    read(name, repo, url, &git_repo, &cache)
}

/// The base, the staging branch and the pending branches as the cache holds them (after a
/// fetch, or as last fetched).
pub(crate) fn read(
    name: &str,
    repo: &RepoConfig,
    url: &str,
    git_repo: &git2::Repository,
    cache: &Path,
) -> Result<RepoSnapshot, ForgeError> {
    let cache_err = |source| ForgeError::Cache {
        repo: name.to_string(),
        path: cache.to_path_buf(),
        source,
    };
    let base_ref = format!("{REMOTE_NAMESPACE}{}", repo.base);
    let base = git_repo
        .refname_to_id(&base_ref)
        .map_err(|_| ForgeError::NoBase {
            repo: name.to_string(),
            branch: repo.base.clone(),
            url: redact_url(url),
        })?
        .to_string();
    let remote_staging = git_repo
        .refname_to_id(&format!("{REMOTE_NAMESPACE}{}", repo.staging_branch))
        .ok()
        .map(|o| o.to_string());

    // The pattern was validated with the plan file; an invalid one matches nothing.
    let matcher = crate::config::glob(&repo.pending.branches.value)
        .map(|g| g.compile_matcher())
        .ok();
    let mut changes = Vec::new();
    let refs = git_repo
        .references_glob(&format!("{REMOTE_NAMESPACE}*"))
        .map_err(cache_err)?;
    for reference in refs {
        let reference = reference.map_err(cache_err)?;
        let Ok(full) = reference.name() else { continue };
        let branch = &full[REMOTE_NAMESPACE.len()..];
        if branch == repo.base || branch == repo.staging_branch {
            continue;
        }
        if !matcher.as_ref().is_some_and(|m| m.is_match(branch)) {
            continue;
        }
        let commit = reference.peel_to_commit().map_err(cache_err)?;
        let author = commit.author();
        changes.push(PendingChange {
            id: branch.to_string(),
            head: commit.id().to_string(),
            author: String::from_utf8_lossy(author.email_bytes()).into_owned(),
            title: commit
                .summary_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
            labels: Vec::new(),
            draft: false,
            updated_at: commit_time(&commit),
            base: None,
            source: None,
            files: None,
            checks: None,
        });
    }
    changes.sort_by(|a, b| alphanumeric_sort::compare_str(&a.id, &b.id));
    Ok(RepoSnapshot {
        base_branch: repo.base.clone(),
        base,
        remote_staging,
        changes,
        cache: cache.to_path_buf(),
        trusted: repo.pending.trusted.clone(),
    })
}

/// The commit's committer time.
pub fn commit_time(commit: &git2::Commit<'_>) -> Timestamp {
    Timestamp::from_second(commit.time().seconds()).unwrap_or(Timestamp::UNIX_EPOCH)
}
