//! The pipe-cleaner: push a test kernel (an upstream tree's tip, the staging patches and a
//! marker commit, tagged `staging-<tree>-YYYYMMDD.N`), find its checkout, wait for its
//! results, compare them with the previous run of the same tree. As in the real staging
//! cycle, `phase: push` and `phase: check` put the pipeline's restart between the two: its
//! trigger polls the watched branches once, at start-up.

use std::time::Instant;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::process::Command;

use super::git_push::{DatedTag, beyond, parse_tags};
use super::kernelci::{check, failed};
use super::{Attempt, Kind, StepCtx, StepError};
use crate::apply::process;
use crate::config::kinds::{PipeCleanerPhase, PipeCleanerWith, UpstreamTree};
use crate::gitops::remote::GitOp;
use crate::support::text::short;

/// Who makes the marker commit and the tag, as kernel.py does.
const BOT_NAME: &str = "kernelci.org bot";
const BOT_EMAIL: &str = "bot@kernelci.org";

/// The test kernel a run pushed: its tree, branch, marker commit and dated tag.
pub(super) struct TestKernel {
    pub tree: String,
    pub branch: String,
    pub sha: String,
    pub tag: String,
}

impl TestKernel {
    pub fn short(&self) -> &str {
        short(&self.sha)
    }

    /// What a push records (the check phase reads it back).
    fn outputs(&self, next_index: usize) -> Value {
        json!({
            "tree": self.tree,
            "next_index": next_index,
            "branch": self.branch,
            "commit": self.sha,
            "tag": self.tag,
        })
    }

    fn from_outputs(v: &Value) -> Option<TestKernel> {
        let s = |k: &str| v[k].as_str().map(str::to_string);
        Some(TestKernel {
            tree: s("tree")?,
            branch: s("branch")?,
            sha: s("commit")?,
            tag: s("tag")?,
        })
    }
}

/// Run the step's phase: push the next tree's test kernel, check the results of the one
/// pushed in this run, or both.
pub async fn pipe_cleaner(
    ctx: &mut StepCtx<'_>,
    with: &PipeCleanerWith,
) -> Result<Value, StepError> {
    let deadline = Instant::now() + ctx.limit;
    let (kernel, mut outputs) = match with.phase {
        PipeCleanerPhase::Watch => return super::pipe_watch::watch(ctx, with, deadline).await,
        PipeCleanerPhase::Check => {
            let (step, kernel) = pushed_in_this_run(ctx, with)?;
            let mut outputs = kernel.outputs(0);
            if let Some(o) = outputs.as_object_mut() {
                o.remove("next_index");
            }
            outputs["push_step"] = json!(step);
            (kernel, outputs)
        }
        PipeCleanerPhase::Push | PipeCleanerPhase::Both => {
            let (kernel, next_index) = push(ctx, with).await?;
            let outputs = kernel.outputs(next_index);
            (kernel, outputs)
        }
    };
    if with.phase == PipeCleanerPhase::Push {
        return Ok(outputs);
    }
    let checked = check(ctx, with, &kernel, deadline).await?;
    for (k, v) in checked.as_object().into_iter().flatten() {
        outputs[k] = v.clone();
    }
    Ok(outputs)
}

/// Push the next tree's test kernel (the rotation is in this step's last outputs); the
/// kernel and the next rotation index.
async fn push(
    ctx: &mut StepCtx<'_>,
    with: &PipeCleanerWith,
) -> Result<(TestKernel, usize), StepError> {
    let previous = &ctx.run.previous_outputs.get(ctx.name);
    let last = previous.and_then(|p| p["next_index"].as_u64()).unwrap_or(0);
    let index = last as usize % with.trees.len().max(1);
    let tree = with
        .trees
        .get(index)
        .ok_or_else(|| failed("no tree in with.trees"))?;
    let branch = format!("staging-{}", tree.name);
    watched(ctx, with, &branch)?;
    let kernel = push_test_kernel(ctx, with, tree, branch).await?;
    Ok((kernel, index + 1))
}

/// The kernel the `push_step` pushed in this run.
fn pushed_in_this_run(
    ctx: &StepCtx<'_>,
    with: &PipeCleanerWith,
) -> Result<(String, TestKernel), StepError> {
    let step = with.push_step.clone().unwrap_or_default();
    let outputs = ctx.run.outputs_in_this_run(&step).ok_or_else(|| {
        failed(format!(
            "step `{step}` pushed no kernel in this run ({}): a check step checks the kernel its push step pushed in the same run",
            ctx.run.run_id
        ))
    })?;
    let kernel = TestKernel::from_outputs(&outputs).ok_or_else(|| {
        failed(format!(
            "the outputs of step `{step}` name no pushed kernel: {outputs}"
        ))
    })?;
    Ok((step, kernel))
}

/// With `watched_by`: refuse to push a branch that the trees file at the repo's staging
/// revision does not list (the deployed trigger would never build it).
fn watched(ctx: &StepCtx<'_>, with: &PipeCleanerWith, branch: &str) -> Result<(), StepError> {
    let Some(w) = &with.watched_by else {
        return Ok(());
    };
    let dir = ctx.run.checkout(&w.repo).map_err(failed)?;
    let revision = ctx
        .run
        .plan
        .repos
        .get(&w.repo)
        .map_or("?", |r| short(&r.staging));
    let at = format!("{}:{} (staging revision {revision})", w.repo, w.file);
    let text = std::fs::read_to_string(dir.join(&w.file)).map_err(|e| {
        failed(format!(
            "cannot read {at}, the branches the pipeline's trigger watches: {e}"
        ))
    })?;
    let branches =
        watched_branches(&text, &with.api_tree).map_err(|e| failed(format!("{at}: {e}")))?;
    if branches.iter().any(|b| b == branch) {
        ctx.progress(format!("{branch} is watched ({at})"));
        return Ok(());
    }
    let listed = match branches.is_empty() {
        true => "no branch".to_string(),
        false => branches.join(", "),
    };
    Err(failed(format!(
        "the pipeline's trigger does not watch {branch}: the build_configs of tree `{}` in {at} list {listed}; add one with `branch: '{branch}'` there, or remove that tree from with.trees",
        with.api_tree
    )))
}

/// The branches that the `build_configs` of a pipeline trees file (`config/trees/*.yaml`)
/// list for `tree` (the trigger runs with `--trees=<tree>`), merge keys applied.
pub fn watched_branches(text: &str, tree: &str) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    struct TreesFile {
        #[serde(default)]
        build_configs: IndexMap<String, BuildConfig>,
    }
    #[derive(Deserialize)]
    struct BuildConfig {
        #[serde(default)]
        tree: Option<String>,
        #[serde(default)]
        branch: Option<String>,
    }
    let file: TreesFile = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    Ok(file
        .build_configs
        .into_values()
        .filter(|c| c.tree.as_deref() == Some(tree))
        .filter_map(|c| c.branch)
        .collect())
}

/// Run git; stdout when `capture`.
async fn git(ctx: &mut StepCtx<'_>, args: &[&str], capture: bool) -> Result<String, StepError> {
    let cmd = git_command(args);
    let shown = format!("git {}", args.first().copied().unwrap_or(""));
    let out = ctx.process(cmd, &shown, capture).await?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Run git's `op` with the remote `url` within its `timeouts:` setting; stdout when `capture`.
async fn git_remote(
    ctx: &mut StepCtx<'_>,
    args: &[&str],
    (op, url): (GitOp, &str),
    capture: bool,
) -> Result<String, StepError> {
    let out = super::git_push::remote_git(ctx, git_command(args), op, url, capture).await?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// git as the bot (the marker commit's and the tag's identity, as kernel.py's), no terminal
/// prompt, from a clean environment.
fn git_command(args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    process::clean_env(&mut cmd, process::Inherit::Git, &[]);
    cmd.args(["-c", &format!("user.name={BOT_NAME}")])
        .args(["-c", &format!("user.email={BOT_EMAIL}")])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0");
    cmd
}

/// The test kernel revision (upstream tip + staging patches + a marker commit), made in a
/// worktree of the kernel cache and pushed with its dated tag.
async fn push_test_kernel(
    ctx: &mut StepCtx<'_>,
    with: &PipeCleanerWith,
    tree: &UpstreamTree,
    branch: String,
) -> Result<TestKernel, StepError> {
    let push_url = with
        .push_url
        .as_deref()
        .ok_or_else(|| failed("no with.push_url"))?;
    let push_url = ctx.run.config.resolve_url(push_url);
    let upstream_url = ctx.run.config.resolve_url(&tree.url);
    let cache = ctx.run.cache_dir.join(format!(
        "kernel-{}.git",
        crate::config::names::file_name(ctx.name)
    ));
    let (_repo, _guard) = crate::gitops::open_cache(&cache).map_err(failed)?;
    let cache_s = cache.display().to_string();
    let upstream_ref = format!("refs/kcideploy/upstream/{}", tree.name);
    ctx.progress(format!("fetching {} {}", tree.name, tree.branch));
    git_remote(
        ctx,
        &[
            "--git-dir",
            &cache_s,
            "fetch",
            "--quiet",
            "--no-tags",
            &upstream_url,
            &format!("+refs/heads/{}:{upstream_ref}", tree.branch),
        ],
        (GitOp::Fetch, &upstream_url),
        false,
    )
    .await?;
    let work = tempfile::Builder::new()
        .prefix(".pipe-cleaner-")
        .tempdir_in(&ctx.run.cache_dir)
        .map_err(failed)?;
    let wt = work.path().join("linux");
    let wt_s = wt.display().to_string();
    // A killed run may have left a worktree entry behind.
    git(ctx, &["--git-dir", &cache_s, "worktree", "prune"], false).await?;
    git(
        ctx,
        &[
            "--git-dir",
            &cache_s,
            "worktree",
            "add",
            "--quiet",
            "--detach",
            "--force",
            &wt_s,
            &upstream_ref,
        ],
        false,
    )
    .await?;
    let result = match apply_patches(ctx, with, &wt_s).await {
        Ok(()) => mark_and_push(ctx, with, &tree.name, &wt_s, &push_url, &branch).await,
        Err(e) => Err(e),
    };
    let _ = git(
        ctx,
        &[
            "--git-dir",
            &cache_s,
            "worktree",
            "remove",
            "--force",
            &wt_s,
        ],
        false,
    )
    .await;
    let (sha, tag) = result?;
    Ok(TestKernel {
        tree: tree.name.clone(),
        branch,
        sha,
        tag,
    })
}

/// The staging patches (`*.patch`, `*.mbx`, `*.mbox`, `*.diff` in name order), with `git am`;
/// all must apply.
async fn apply_patches(
    ctx: &mut StepCtx<'_>,
    with: &PipeCleanerWith,
    wt: &str,
) -> Result<(), StepError> {
    let Some(p) = &with.patches else {
        return Ok(());
    };
    let dir = ctx.run.checkout(&p.repo).map_err(failed)?.join(&p.dir);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| failed(format!("cannot read the patches directory {}: {e}", p.dir)))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| ["patch", "mbx", "mbox", "diff"].iter().any(|e| x == *e))
        })
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    if files.is_empty() {
        return Ok(());
    }
    ctx.progress(format!("applying {} staging patch(es)", files.len()));
    let mut args = vec!["-C", wt, "am", "--3way", "--quiet"];
    args.extend(files.iter().map(String::as_str));
    if let Err(e) = git(ctx, &args, false).await {
        let _ = git(ctx, &["-C", wt, "am", "--abort"], false).await;
        return Err(failed(format!(
            "the staging patches in {} do not apply: {e}",
            p.dir
        )));
    }
    Ok(())
}

/// `N` of the day's next `<prefix>YYYYMMDD.N` tag: from 0, as kernel.py counts the day's
/// tags (the first of the day is `.0`); after the day's highest when some were deleted.
fn day_number(tags: &[DatedTag], today: &str) -> u32 {
    tags.iter()
        .filter(|t| t.date == today)
        .map(|t| t.n + 1)
        .max()
        .unwrap_or(0)
}

/// The marker commit (one file named after the branch, holding the tag, by the bot, as
/// kernel.py makes it), the annotated dated tag, and the push of both, deleting the tags
/// beyond the newest `tag_keep`; returns (commit, tag).
async fn mark_and_push(
    ctx: &mut StepCtx<'_>,
    with: &PipeCleanerWith,
    tree: &str,
    wt: &str,
    push_url: &str,
    branch: &str,
) -> Result<(String, String), StepError> {
    let prefix = format!("staging-{tree}-");
    let pattern = format!("refs/tags/{prefix}*");
    let ls_remote = ["ls-remote", "--tags", push_url, &pattern];
    let listing = git_remote(ctx, &ls_remote, (GitOp::LsRemote, push_url), true).await?;
    let tags = parse_tags(&listing, &prefix);
    let today = ctx.run.now.strftime("%Y%m%d").to_string();
    let n = day_number(&tags, &today);
    let tag = format!("{prefix}{today}.{n}");
    std::fs::write(std::path::Path::new(wt).join(branch), &tag)
        .map_err(|e| failed(format!("cannot write the marker file {branch}: {e}")))?;
    git(ctx, &["-C", wt, "add", "--", branch], false).await?;
    let author = format!("{BOT_NAME} <{BOT_EMAIL}>");
    let run = format!("kcideploy run {}", ctx.run.run_id);
    let commit = ["-C", wt, "commit", "--quiet", "--author", &author];
    git(
        ctx,
        &[&commit[..], &["-m", &tag, "-m", &run]].concat(),
        false,
    )
    .await?;
    let sha = git(ctx, &["-C", wt, "rev-parse", "HEAD"], true).await?;
    git(
        ctx,
        &["-C", wt, "tag", "--force", "-a", &tag, "-m", &tag],
        false,
    )
    .await?;
    ctx.progress(format!("pushing {branch} and {tag}"));
    let mut refspecs = vec![
        format!("HEAD:refs/heads/{branch}"),
        format!("refs/tags/{tag}:refs/tags/{tag}"),
    ];
    let mut all = tags.clone();
    all.push(DatedTag {
        name: tag.clone(),
        date: today,
        n,
        sha: sha.clone(),
    });
    refspecs.extend(
        beyond(&mut all, with.tag_keep)
            .iter()
            .map(|t| format!(":refs/tags/{}", t.name)),
    );
    let mut args = vec!["-C", wt, "push", "--quiet", "--force", push_url];
    args.extend(refspecs.iter().map(String::as_str));
    let pushed = git_remote(ctx, &args, (GitOp::Push, push_url), false).await;
    // The cache keeps no tag: the remote's are counted each time.
    let _ = git(ctx, &["-C", wt, "tag", "--delete", &tag], true).await;
    pushed?;
    Ok((sha, tag))
}

/// `pipe_cleaner`.
pub struct PipeCleaner(pub PipeCleanerWith);

impl Kind for PipeCleaner {
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a> {
        Box::pin(async move { pipe_cleaner(ctx, &self.0).await.map(Some) })
    }

    fn watches_limit(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watched_branches_of_the_real_trees_file() {
        let real = include_str!(
            "../../../tests/fixtures/kernelci-snapshot/kernelci-pipeline/tree/config/trees/kernelci.yaml"
        );
        assert_eq!(
            watched_branches(real, "kernelci").expect("parses"),
            ["staging-mainline", "staging-next", "staging-stable"]
        );
        assert!(
            watched_branches(real, "mainline")
                .expect("parses")
                .is_empty()
        );
        // A branch inherited through a merge key counts; another tree's does not.
        let text = "build_configs:\n  a: &a\n    tree: kernelci\n    branch: x\n  b:\n    <<: *a\n  c:\n    tree: other\n    branch: y\n";
        assert_eq!(
            watched_branches(text, "kernelci").expect("parses"),
            ["x", "x"]
        );
        assert!(watched_branches("build_configs: [", "kernelci").is_err());
    }

    #[test]
    fn the_first_tag_of_the_day_is_zero() {
        let tag = |date: &str, n| DatedTag {
            name: format!("staging-next-{date}.{n}"),
            date: date.into(),
            n,
            sha: String::new(),
        };
        assert_eq!(day_number(&[], "20260806"), 0);
        assert_eq!(day_number(&[tag("20260805", 4)], "20260806"), 0);
        assert_eq!(day_number(&[tag("20260806", 0)], "20260806"), 1);
        assert_eq!(
            day_number(&[tag("20260806", 2), tag("20260806", 0)], "20260806"),
            3
        );
    }
}
