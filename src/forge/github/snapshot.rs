//! The `github` forge's snapshot: a repo's open PRs and their files through the REST API,
//! the trusted logins, and every PR head fetched as `refs/pull/N/head` with the git CLI.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde_json::Value;

use super::{GitHub, GitHubError, slug};
use crate::config::{Config, RepoConfig};
use crate::forge::git::{REMOTE_NAMESPACE, redact_url};
use crate::forge::{ForgeError, PendingChange, RepoSnapshot};
use crate::gitops::remote::fetch;

/// The PRs of one repo, their files, and their heads fetched into the cache.
pub fn snapshot(
    config: &Config,
    name: &str,
    repo: &RepoConfig,
    cache_dir: &Path,
) -> Result<RepoSnapshot, ForgeError> {
    let err = |message: String| ForgeError::Github {
        repo: name.to_string(),
        message,
    };
    let api = |error: GitHubError| ForgeError::GithubApi {
        repo: name.to_string(),
        error: Box::new(error),
    };
    let slug = slug(repo).ok_or_else(|| {
        err("set `github_repo: owner/name` (the url is not a github.com URL)".into())
    })?;
    let team = match &repo.pending.trusted_team {
        Some(team) => Some(
            team.split_once('/')
                .ok_or_else(|| err(format!("pending.trusted_team `{team}` is not org/team")))?,
        ),
        None => None,
    };
    let client = GitHub::new(config, cache_dir).map_err(api)?;
    let (mut changes, members) =
        crate::support::rt::block_on(list(&client, &slug, team)).map_err(api)?;

    // The effective trusted list.
    let mut trusted = repo.pending.trusted.clone();
    if let Some(file) = &repo.pending.trusted_file {
        let logins = super::read_trusted_file(&config.dir, file).map_err(err)?;
        trusted.get_or_insert_with(Vec::new).extend(logins);
    }
    if let Some(members) = members {
        trusted.get_or_insert_with(Vec::new).extend(members);
    }
    let (cache, base, remote_staging) = fetch_heads(config, name, repo, cache_dir, &mut changes)?;
    if repo.pending.require_checks.is_some() {
        let own = config.file.notify.context.as_str();
        crate::support::rt::block_on(async {
            for c in changes.iter_mut() {
                c.checks = Some(super::checks::read(&client, &slug, &c.head, own).await?);
            }
            Ok(())
        })
        .map_err(api)?;
    }
    Ok(RepoSnapshot {
        base_branch: repo.base.clone(),
        base,
        remote_staging,
        changes,
        cache,
        trusted,
    })
}

/// The open PRs of `slug` with their files, in number order, and the members of the
/// trusted team (`org`, `team`).
async fn list(
    client: &GitHub,
    slug: &str,
    team: Option<(&str, &str)>,
) -> Result<(Vec<PendingChange>, Option<Vec<String>>), GitHubError> {
    let prs = client
        .get_all(&format!("/repos/{slug}/pulls?state=open&per_page=100"))
        .await?;
    let members = match team {
        Some((org, team)) => Some(
            client
                .get_all(&format!("/orgs/{org}/teams/{team}/members?per_page=100"))
                .await?
                .iter()
                .filter_map(|m| m["login"].as_str().map(String::from))
                .collect::<Vec<_>>(),
        ),
        None => None,
    };
    let mut changes = unique(prs.iter().filter_map(pending_change));
    changes.sort_by_key(|(n, _)| *n);
    let mut out = Vec::new();
    for (n, mut change) in changes {
        let files = client
            .get_all(&format!("/repos/{slug}/pulls/{n}/files?per_page=100"))
            .await?;
        change.files = Some(
            files
                .iter()
                .filter_map(|f| f["filename"].as_str().map(String::from))
                .collect(),
        );
        out.push(change);
    }
    Ok((out, members))
}

/// Each PR once, as first listed: a PR opened while the list is paged shifts the pages, so
/// GitHub lists the PR at a page boundary twice.
fn unique(changes: impl Iterator<Item = (u64, PendingChange)>) -> Vec<(u64, PendingChange)> {
    let mut seen = std::collections::HashSet::new();
    changes.filter(|(n, _)| seen.insert(*n)).collect()
}

/// A PR object of the REST API as a pending change (without its files). `updated_at` is
/// replaced by the head commit's committer date once the head is fetched.
fn pending_change(pr: &Value) -> Option<(u64, PendingChange)> {
    let number = pr["number"].as_u64()?;
    let change = PendingChange {
        id: format!("#{number}"),
        head: pr["head"]["sha"].as_str().unwrap_or_default().to_string(),
        author: pr["user"]["login"].as_str().unwrap_or_default().to_string(),
        title: pr["title"].as_str().unwrap_or_default().to_string(),
        labels: pr["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["name"].as_str().map(String::from))
            .collect(),
        draft: pr["draft"].as_bool().unwrap_or(false),
        updated_at: pr["updated_at"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or(Timestamp::UNIX_EPOCH),
        base: pr["base"]["ref"].as_str().map(String::from),
        source: pr["head"]["label"]
            .as_str()
            .map(|l| l.replacen(':', "/", 1)),
        files: None,
        checks: None,
    };
    Some((number, change))
}

/// Fetch the base and staging branches and every PR head through the git CLI; a PR whose
/// fetched head is not the API's head moved meanwhile, and gets what was fetched. A PR's age
/// is its head commit's committer date: its `updated_at` moves with every comment and commit
/// status, kcideploy's own included. Returns the cache repository, the base SHA and the
/// remote staging SHA.
fn fetch_heads(
    config: &Config,
    name: &str,
    repo: &RepoConfig,
    cache_dir: &Path,
    changes: &mut [PendingChange],
) -> Result<(PathBuf, String, Option<String>), ForgeError> {
    let url = config.repo_url(repo);
    let cache = cache_dir.join(format!("{name}.git"));
    let (git_repo, _guard) =
        crate::gitops::open_cache(&cache).map_err(|message| ForgeError::Github {
            repo: name.to_string(),
            message,
        })?;
    let remote_ref = |branch: &str| format!("{REMOTE_NAMESPACE}{branch}");
    let mut refspecs = vec![
        format!("+refs/heads/{}:{}", repo.base, remote_ref(&repo.base)),
        format!(
            "+refs/heads/{}:{}",
            repo.staging_branch,
            remote_ref(&repo.staging_branch)
        ),
    ];
    for c in changes.iter() {
        let n = c.id.trim_start_matches('#');
        refspecs.push(format!("+refs/pull/{n}/head:refs/kcideploy/pull/{n}"));
    }
    let timeouts = &config.file.timeouts;
    fetch_refs(
        name,
        &url,
        &cache,
        &refspecs,
        &repo.staging_branch,
        timeouts,
    )?;
    let base = git_repo
        .refname_to_id(&remote_ref(&repo.base))
        .map_err(|_| ForgeError::NoBase {
            repo: name.to_string(),
            branch: repo.base.clone(),
            url: redact_url(&url),
        })?
        .to_string();
    let remote_staging = git_repo
        .refname_to_id(&remote_ref(&repo.staging_branch))
        .ok()
        .map(|o| o.to_string());
    for c in changes.iter_mut() {
        let n = c.id.trim_start_matches('#');
        if let Ok(oid) = git_repo.refname_to_id(&format!("refs/kcideploy/pull/{n}")) {
            c.head = oid.to_string();
            if let Ok(commit) = git_repo.find_commit(oid) {
                c.updated_at = crate::forge::git::commit_time(&commit);
            }
        }
    }
    Ok((cache, base, remote_staging))
}

/// Fetch refspecs within `timeouts.git_fetch`; a missing staging branch is not an error (it
/// is made by the first push). A remote that did not answer is not asked twice.
fn fetch_refs(
    name: &str,
    url: &str,
    cache: &Path,
    refspecs: &[String],
    staging: &str,
    timeouts: &crate::config::Timeouts,
) -> Result<(), ForgeError> {
    let fail = |error| ForgeError::Fetch {
        repo: name.to_string(),
        error,
    };
    match fetch(cache, url, refspecs, false, timeouts) {
        Ok(()) => return Ok(()),
        Err(e) if e.timed_out => return Err(fail(e)),
        Err(_) => {}
    }
    // Again without the staging branch, which may not exist yet.
    let without: Vec<String> = refspecs
        .iter()
        .filter(|s| !s.starts_with(&format!("+refs/heads/{staging}:")))
        .cloned()
        .collect();
    fetch(cache, url, &without, false, timeouts).map_err(fail)
}
