//! `git_push`: push a repo's staging revision to its staging branch with the git CLI
//! (refusing if the remote moved since planning), and a dated tag with retention.

use std::io::Write;
use std::path::PathBuf;

use tokio::process::Command;

use super::{Attempt, Kind, StepCtx, StepError};
use crate::apply::RunContext;
use crate::apply::process::{self, ProcessError};
use crate::config::kinds::{GitPushWith, TagFormat};
use crate::forge::git::redact_url;
use crate::gitops::remote::{GitOp, RemoteError, cause_of};

/// Run `cmd`, the git operation `op` with the remote `url`, within its `timeouts:` setting
/// (and the step's limit). stderr goes to the step log, stdout too unless `capture` (then it
/// is returned). A failure names the operation, the remote and what git said.
pub(super) async fn remote_git(
    ctx: &mut StepCtx<'_>,
    cmd: Command,
    op: GitOp,
    url: &str,
    capture: bool,
) -> Result<Vec<u8>, StepError> {
    let limit = op.limit(&ctx.run.config.file.timeouts);
    let before = ctx.log.metadata().map(|m| m.len()).unwrap_or(0);
    let done = ctx.process_within(cmd, op.command(), capture, Some(limit));
    let error = match done.await {
        Ok(finished) => return Ok(finished.stdout),
        Err(ProcessError::Cancelled) => return Err(StepError::Cancelled),
        Err(ProcessError::TimedOut { .. }) => RemoteError::timeout(op, url, limit),
        Err(ProcessError::Failed { .. }) => {
            RemoteError::new(op, url, &cause_of(&process::since(ctx.log_path, before)))
        }
        Err(other) => RemoteError::new(op, url, &other.to_string()),
    };
    Err(StepError::Failed(error.to_string()))
}

/// What a `git_push` pushes, and where.
struct Target<'a> {
    url: String,
    /// The repo's cache, the git dir pushed from.
    cache: PathBuf,
    branch: &'a str,
    /// The staging revision.
    sha: &'a str,
    /// Where the remote branch was when planned.
    remote: Option<&'a str>,
}

impl Target<'_> {
    /// git on the repo's cache.
    fn git(&self, args: Vec<String>) -> Command {
        let mut cmd = Command::new("git");
        process::clean_env(&mut cmd, process::Inherit::Git, &[]);
        cmd.arg("--git-dir")
            .arg(&self.cache)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0");
        cmd
    }
}

/// The repo's staging branch, staging revision and URL, from the plan file and the plan.
fn target<'a>(run: &'a RunContext, with: &GitPushWith) -> Result<Target<'a>, StepError> {
    let repo_cfg = run
        .config
        .file
        .repos
        .get(&with.repo)
        .ok_or_else(|| StepError::Failed(format!("unknown repo `{}`", with.repo)))?;
    let repo_plan = run
        .plan
        .repos
        .get(&with.repo)
        .ok_or_else(|| StepError::Failed(format!("repo `{}` is not in the plan", with.repo)))?;
    Ok(Target {
        url: with
            .url
            .clone()
            .unwrap_or_else(|| run.config.repo_url(repo_cfg)),
        cache: run.cache_dir.join(format!("{}.git", with.repo)),
        branch: &repo_cfg.staging_branch,
        sha: &repo_plan.staging,
        remote: repo_plan.remote_staging.as_deref(),
    })
}

/// Push; what was pushed (branch, revision, dated tag), for state and `-refresh`.
pub async fn run(
    ctx: &mut StepCtx<'_>,
    with: &GitPushWith,
) -> Result<serde_json::Value, StepError> {
    let target = target(ctx.run, with)?;
    push_branch(ctx, &target, with.force).await?;
    let tag = match (&with.tag_prefix, with.tag_format) {
        (Some(prefix), TagFormat::Dated) => {
            Some(push_tag(ctx, &target, prefix, with.tag_keep).await?)
        }
        (Some(prefix), TagFormat::Timestamp) => {
            Some(push_timestamp_tag(ctx, &target, prefix).await?)
        }
        (None, _) => None,
    };
    Ok(serde_json::json!({ "branch": target.branch, "sha": target.sha, "tag": tag }))
}

/// Drift of a push recorded as `outputs`: the branch (or the tag) on the remote at `url` no
/// longer points at the pushed revision. Each look-up within `timeouts.git_ls_remote`.
pub fn drift(
    url: &str,
    outputs: &serde_json::Value,
    timeouts: &crate::config::Timeouts,
) -> Result<Option<String>, String> {
    use crate::gitops::remote::ref_head;
    let (Some(branch), Some(sha)) = (outputs["branch"].as_str(), outputs["sha"].as_str()) else {
        return Ok(None);
    };
    let remote = redact_url(url);
    let mut refs = vec![(format!("refs/heads/{branch}"), format!("branch {branch}"))];
    if let Some(tag) = outputs["tag"].as_str() {
        refs.push((format!("refs/tags/{tag}"), format!("tag {tag}")));
    }
    for (name, what) in refs {
        let found = ref_head(url, &name, timeouts).map_err(|e| e.to_string())?;
        match found {
            None => return Ok(Some(format!("{what} no longer exists on {remote}"))),
            Some(found) if found != sha => {
                return Ok(Some(format!(
                    "{what} on {remote} is at {} instead of {}",
                    crate::support::text::short(&found),
                    crate::support::text::short(sha)
                )));
            }
            Some(_) => {}
        }
    }
    Ok(None)
}

/// Move the staging branch to the staging revision, unless it is there; with a lease on
/// where it was when planned unless `force`.
async fn push_branch(
    ctx: &mut StepCtx<'_>,
    target: &Target<'_>,
    force: bool,
) -> Result<(), StepError> {
    let Target {
        url,
        branch,
        sha,
        remote,
        ..
    } = target;
    let mut log = ctx.log;
    if *remote == Some(*sha) {
        let _ = writeln!(log, "{branch} is already at {sha}");
        return Ok(());
    }
    let lease = if force {
        "--force".to_string()
    } else {
        format!(
            "--force-with-lease=refs/heads/{branch}:{}",
            remote.unwrap_or_default()
        )
    };
    let _ = writeln!(log, "push {sha} to {} {branch}", redact_url(url));
    let cmd = target.git(vec![
        "push".into(),
        "--porcelain".into(),
        lease,
        url.clone(),
        format!("{sha}:refs/heads/{branch}"),
    ]);
    if let Err(e) = remote_git(ctx, cmd, GitOp::Push, url, false).await {
        let tail = process::tail(ctx.log_path, 20);
        if tail.contains("stale info") || tail.contains("[rejected]") {
            return Err(StepError::Failed(format!(
                "the remote branch {branch} moved since planning (expected {}); plan again, or set `force: true`",
                remote.unwrap_or("no branch")
            )));
        }
        return Err(e);
    }
    Ok(())
}

/// Tag the staging revision `<prefix>YYYYMMDD.N` (unless a tag of today points at it) and
/// delete the tags beyond the newest `keep`, in one push; the tag that names the revision.
async fn push_tag(
    ctx: &mut StepCtx<'_>,
    target: &Target<'_>,
    prefix: &str,
    keep: usize,
) -> Result<String, StepError> {
    let Target { url, sha, .. } = target;
    let ls_remote = target.git(vec![
        "ls-remote".into(),
        "--tags".into(),
        url.clone(),
        format!("refs/tags/{prefix}*"),
    ]);
    let listing = remote_git(ctx, ls_remote, GitOp::LsRemote, url, true).await?;
    let tags = parse_tags(&String::from_utf8_lossy(&listing), prefix);
    let today = ctx.run.now.strftime("%Y%m%d").to_string();
    let mut log = ctx.log;
    let mut refspecs = Vec::new();
    let mut kept = tags.clone();
    let current = tags.iter().find(|t| t.date == today && t.sha == *sha);
    let tag_name;
    if let Some(current) = current {
        let _ = writeln!(log, "a tag of today already points at {sha}");
        tag_name = current.name.clone();
    } else {
        let n = next_number(&tags, &today);
        let name = format!("{prefix}{today}.{n}");
        let _ = writeln!(log, "tag {name}");
        refspecs.push(format!("{sha}:refs/tags/{name}"));
        tag_name = name.clone();
        kept.push(DatedTag {
            name,
            date: today,
            n,
            sha: sha.to_string(),
        });
    }
    for old in beyond(&mut kept, keep) {
        let _ = writeln!(log, "delete old tag {}", old.name);
        refspecs.push(format!(":refs/tags/{}", old.name));
    }
    if refspecs.is_empty() {
        return Ok(tag_name);
    }
    let mut args = vec!["push".to_string(), "--porcelain".into(), url.clone()];
    args.extend(refspecs);
    remote_git(ctx, target.git(args), GitOp::Push, url, false).await?;
    Ok(tag_name)
}

/// Tag the staging revision `<prefix>YYYYmmddHHMMSS` from the run's one clock reading (UTC),
/// as KernelCI's production workflow tags `main`; no tag is deleted. A resumed run (same
/// clock reading) pushes the same name again, which git takes as up to date.
async fn push_timestamp_tag(
    ctx: &mut StepCtx<'_>,
    target: &Target<'_>,
    prefix: &str,
) -> Result<String, StepError> {
    let Target { url, sha, .. } = target;
    let name = format!("{prefix}{}", timestamp(ctx.run.now));
    let mut log = ctx.log;
    let _ = writeln!(log, "tag {name}");
    let args = vec![
        "push".to_string(),
        "--porcelain".into(),
        url.clone(),
        format!("{sha}:refs/tags/{name}"),
    ];
    remote_git(ctx, target.git(args), GitOp::Push, url, false).await?;
    Ok(name)
}

/// `YYYYmmddHHMMSS` of `now` in UTC.
pub(crate) fn timestamp(now: jiff::Timestamp) -> String {
    now.strftime("%Y%m%d%H%M%S").to_string()
}

/// The next `N` of `<prefix>YYYYMMDD.N` for `today`.
pub(crate) fn next_number(tags: &[DatedTag], today: &str) -> u32 {
    tags.iter()
        .filter(|t| t.date == today)
        .map(|t| t.n)
        .max()
        .unwrap_or(0)
        + 1
}

/// The tags beyond the newest `keep` (newest first by date, then number), to delete.
pub(crate) fn beyond(tags: &mut [DatedTag], keep: usize) -> &[DatedTag] {
    tags.sort_by(|a, b| (&b.date, b.n).cmp(&(&a.date, a.n)));
    &tags[keep.min(tags.len())..]
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatedTag {
    pub name: String,
    pub date: String,
    pub n: u32,
    pub sha: String,
}

/// `<sha>\trefs/tags/<prefix>YYYYMMDD.N` lines; other tags and peeled (`^{}`) lines are ignored.
pub(crate) fn parse_tags(listing: &str, prefix: &str) -> Vec<DatedTag> {
    listing
        .lines()
        .filter_map(|line| {
            let (sha, name) = line.split_once('\t')?;
            let name = name.strip_prefix("refs/tags/")?;
            let rest = name.strip_prefix(prefix)?;
            let (date, n) = rest.split_once('.')?;
            if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(DatedTag {
                name: name.to_string(),
                date: date.to_string(),
                n: n.parse().ok()?,
                sha: sha.to_string(),
            })
        })
        .collect()
}

/// `git_push`.
pub struct GitPush(pub GitPushWith);

impl Kind for GitPush {
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a> {
        Box::pin(async move { run(ctx, &self.0).await.map(Some) })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_tags;

    #[test]
    fn parses_dated_tags_only() {
        let listing = "a\trefs/tags/staging-20261124.2\nb\trefs/tags/staging-20261124.10\nc\trefs/tags/staging-2026.1\nd\trefs/tags/staging-20261124.2^{}\ne\trefs/tags/other-20261124.1\n";
        let tags = parse_tags(listing, "staging-");
        let names: Vec<(&str, u32)> = tags.iter().map(|t| (t.name.as_str(), t.n)).collect();
        assert_eq!(
            names,
            [("staging-20261124.2", 2), ("staging-20261124.10", 10)]
        );
    }
}
