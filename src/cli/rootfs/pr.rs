//! The promotion's git and GitHub side: the configuration repo's base branch fetched into a
//! cache beside state, the rewritten file committed on it, the commit pushed as a branch of
//! that repo (named after the file's new content, so promoting the same URLs again reuses
//! it) and a PR opened against the base through the GitHub REST API (`POST
//! /repos/{owner}/{repo}/pulls`), unless one is open from that branch already. Every network
//! operation has its `timeouts:` limit; the token goes to the API host only.

use std::path::PathBuf;

use miette::{IntoDiagnostic, Result};
use serde_json::json;
use sha2::Digest;

use crate::config::rootfs::RootfsConfig;
use crate::forge::github::{GitHub, slug};
use crate::gitops::remote;
use crate::workspace::Workspace;

/// The configuration file on the base branch.
pub struct Base {
    pub branch: String,
    pub sha: String,
    pub text: String,
    git_dir: PathBuf,
    url: String,
}

const BASE_REF: &str = "refs/kcideploy/rootfs-base";

/// Fetch `rootfs.repo`'s base branch and read `rootfs.file` there.
pub fn fetch_base(ws: &Workspace, rootfs: &RootfsConfig) -> Result<Base> {
    let name = &rootfs.repo.value;
    let repo_cfg = ws
        .config
        .file
        .repos
        .get(name)
        .ok_or_else(|| miette::miette!("rootfs.repo: no repo `{name}`"))?;
    let url = ws.config.repo_url(repo_cfg);
    let git_dir = ws
        .cache_dir
        .join("promote-rootfs")
        .join(format!("{name}.git"));
    if !git_dir.join("HEAD").exists() {
        git2::Repository::init_bare(&git_dir)
            .map_err(|e| miette::miette!("cannot make {}: {e}", git_dir.display()))?;
    }
    let branch = repo_cfg.base.clone();
    let refspec = format!("+refs/heads/{branch}:{BASE_REF}");
    remote::fetch(&git_dir, &url, &[refspec], false, &ws.config.file.timeouts).into_diagnostic()?;
    let repo = git2::Repository::open_bare(&git_dir).into_diagnostic()?;
    let sha = repo.refname_to_id(BASE_REF).into_diagnostic()?.to_string();
    let file = &rootfs.file;
    let bytes = crate::gitops::files::file_at(&git_dir, &sha, file)
        .into_diagnostic()?
        .ok_or_else(|| {
            miette::miette!(
                "rootfs.file: `{file}` is not in `{name}` at {branch} ({})",
                crate::support::text::short(&sha)
            )
        })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| miette::miette!("rootfs.file: `{file}` of `{name}` is not UTF-8 text"))?;
    Ok(Base {
        branch,
        sha,
        text,
        git_dir,
        url,
    })
}

/// Commit `text` as `rootfs.file` on the base, push it as a branch, open the PR (or find
/// the one open from that branch): what happened, for people.
pub fn open(
    ws: &Workspace,
    rootfs: &RootfsConfig,
    base: &Base,
    text: &str,
    title: &str,
    body: &str,
) -> Result<String> {
    let name = &rootfs.repo.value;
    let Some(slug) = ws.config.file.repos.get(name).and_then(slug) else {
        miette::bail!(
            help = "set `github_repo: owner/name` on the repo",
            "rootfs.repo `{name}` is not a GitHub repository: the PR cannot be opened"
        );
    };
    let digest = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    let branch = format!("kcideploy/rootfs-{}", &digest[..12]);
    let repo = git2::Repository::open_bare(&base.git_dir).into_diagnostic()?;
    let parent = git2::Oid::from_str(&base.sha).into_diagnostic()?;
    let message =
        format!("{title}\n\nBy kcideploy promote-rootfs: the URLs that passed on staging.\n");
    let author = ("kcideploy", "kcideploy@users.noreply.github.com");
    let now = jiff::Timestamp::now().as_second();
    let commit = crate::gitops::scratch::commit(
        &repo,
        Some(parent),
        &[(rootfs.file.as_str(), Some(text))],
        author,
        now,
        &message,
    )
    .into_diagnostic()?
    .to_string();
    let timeouts = &ws.config.file.timeouts;
    remote::push_branch(&base.git_dir, &base.url, &commit, &branch, timeouts).into_diagnostic()?;
    let gh = GitHub::new(&ws.config, &ws.cache_dir).into_diagnostic()?;
    let owner = slug.split('/').next().unwrap_or_default();
    crate::support::rt::block_on(async {
        let open = gh
            .get_all(&format!(
                "/repos/{slug}/pulls?state=open&head={owner}:{branch}"
            ))
            .await
            .into_diagnostic()?;
        if let Some(pr) = open.first() {
            return Ok(format!(
                "PR #{} is open from `{branch}` already: {} (the branch holds these URLs)",
                pr["number"],
                pr["html_url"].as_str().unwrap_or_default()
            ));
        }
        let request = json!({ "title": title, "head": branch, "base": base.branch, "body": body });
        let pr = gh
            .post(&format!("/repos/{slug}/pulls"), &request)
            .await
            .into_diagnostic()?;
        Ok(format!(
            "Opened PR #{} against `{slug}` {} from `{branch}`: {}",
            pr["number"],
            base.branch,
            pr["html_url"].as_str().unwrap_or_default()
        ))
    })
}
