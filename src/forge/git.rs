//! The `git` forge: a plain remote whose branches matching a pattern are pending changes.
//! Network access goes through the `git` CLI (credential helpers, ssh, https); reading the
//! fetched refs and commits goes through git2.

use std::path::Path;
use std::process::Command;

use jiff::Timestamp;

use super::{ForgeError, PendingChange, RepoSnapshot};
use crate::config::RepoConfig;

/// Where fetched branches land in the cache repository.
pub const REMOTE_NAMESPACE: &str = "refs/kcideploy/remote/";

/// Fetch `url` into the cache repo of `name` and list pending branches.
pub fn snapshot(
    name: &str,
    repo: &RepoConfig,
    url: &str,
    cache_dir: &Path,
) -> Result<RepoSnapshot, ForgeError> {
    let cache = cache_dir.join(format!("{name}.git"));
    let cache_err = |source| ForgeError::Cache {
        repo: name.to_string(),
        path: cache.clone(),
        source,
    };
    let (git_repo, _guard) = crate::gitops::open_cache(&cache).map_err(|e| ForgeError::Cache {
        repo: name.to_string(),
        path: cache.clone(),
        source: git2::Error::from_str(&e),
    })?;
    fetch(name, url, &cache)?;

    let base_ref = format!("{REMOTE_NAMESPACE}{}", repo.base);
    let base = git_repo
        .refname_to_id(&base_ref)
        .map_err(|_| ForgeError::NoBase {
            repo: name.to_string(),
            branch: repo.base.clone(),
            url: url.to_string(),
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
        });
    }
    changes.sort_by(|a, b| alphanumeric_sort::compare_str(&a.id, &b.id));
    Ok(RepoSnapshot {
        base_branch: repo.base.clone(),
        base,
        remote_staging,
        changes,
        cache,
        trusted: repo.pending.trusted.clone(),
    })
}

/// The commit's committer time.
pub fn commit_time(commit: &git2::Commit<'_>) -> Timestamp {
    Timestamp::from_second(commit.time().seconds()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `git fetch --prune` every branch of `url` into the cache's remote namespace.
pub(crate) fn fetch(name: &str, url: &str, cache: &Path) -> Result<(), ForgeError> {
    let refspec = format!("+refs/heads/*:{REMOTE_NAMESPACE}*");
    let output = Command::new("git")
        .arg("--git-dir")
        .arg(cache)
        .args([
            "fetch",
            "--prune",
            "--no-tags",
            "--quiet",
            "--no-write-fetch-head",
        ])
        .arg(url)
        .arg(&refspec)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .output()
        .map_err(|e| ForgeError::Fetch {
            repo: name.to_string(),
            url: redact_url(url),
            message: format!("cannot run `git`: {e}"),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(ForgeError::Fetch {
            repo: name.to_string(),
            url: redact_url(url),
            message: redact_url(stderr.trim()),
        });
    }
    Ok(())
}

/// Hide credentials embedded in URLs (`https://user:token@host`).
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***@");
                out.push_str(&authority[at + 1..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("fatal: https://x-access-token:ghp_secret@github.com/k/r.git not found"),
            "fatal: https://***@github.com/k/r.git not found"
        );
        assert_eq!(redact_url("/tmp/local/repo"), "/tmp/local/repo");
        assert_eq!(redact_url("ssh://git@host/x"), "ssh://***@host/x");
    }
}
