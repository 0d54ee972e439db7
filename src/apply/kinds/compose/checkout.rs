//! A persistent git checkout of a repo's staging revision, as the staging host keeps
//! `checkout/kernelci-pipeline`: made if missing, the revision fetched from kcideploy's cache
//! of the repo (where planning made it) and checked out detached. Tracked files follow the
//! revision (local edits to them are discarded, and named in the log); untracked and ignored
//! files (`.env`, settings) stay. A revision that would overwrite one of them is refused.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::apply::kinds::{StepCtx, StepError};
use crate::apply::process::{self, Inherit};
use crate::support::text::short;

/// git on the checkout at `dir`, never on a repository around it.
fn git(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    process::clean_env(&mut cmd, Inherit::Git, &[]);
    cmd.arg("--git-dir")
        .arg(dir.join(".git"))
        .arg("--work-tree")
        .arg(dir)
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0");
    cmd
}

async fn run(ctx: &mut StepCtx<'_>, cmd: Command, shown: &str) -> Result<Vec<u8>, StepError> {
    let done = ctx.process(cmd, shown, true).await?;
    Ok(done.stdout)
}

/// NUL-separated paths.
fn paths(out: &[u8]) -> BTreeSet<String> {
    out.split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// Make `dir` (relative to the plan file) a checkout of `repo`'s staging revision; returns
/// its absolute path.
pub async fn prepare(ctx: &mut StepCtx<'_>, repo: &str, dir: &str) -> Result<PathBuf, StepError> {
    let sha = ctx
        .run
        .plan
        .repos
        .get(repo)
        .map(|r| r.staging.clone())
        .ok_or_else(|| failed(format!("repo `{repo}` is not in the plan")))?;
    let cache = ctx.run.cache_dir.join(format!("{repo}.git"));
    let dir = std::path::absolute(ctx.run.config.dir.join(dir))
        .map_err(|e| failed(format!("checkout {dir}: {e}")))?;
    init_if_missing(ctx, &dir, repo).await?;
    let mut fetch = git(&dir, &["fetch", "--quiet", "--no-tags"]);
    fetch.arg(&cache).arg(&sha);
    run(ctx, fetch, "git fetch").await?;
    refuse_clashes(ctx, &dir, repo, &sha).await?;
    let head = run(
        ctx,
        git(&dir, &["rev-parse", "--verify", "--quiet", "HEAD"]),
        "git rev-parse",
    )
    .await
    .ok()
    .map(|o| String::from_utf8_lossy(&o).trim().to_string());
    if head.is_some() {
        log_discarded(ctx, &dir).await?;
    }
    run(
        ctx,
        git(&dir, &["checkout", "--quiet", "--force", "--detach", &sha]),
        "git checkout",
    )
    .await?;
    ctx.progress(format!(
        "{}: at {} (was {})",
        dir.display(),
        short(&sha),
        head.as_deref().map(short).unwrap_or("nothing")
    ));
    Ok(dir)
}

fn failed(message: String) -> StepError {
    StepError::Failed(message)
}

/// `git init` an empty or missing `dir`; a directory holding files is not taken over.
async fn init_if_missing(ctx: &mut StepCtx<'_>, dir: &Path, repo: &str) -> Result<(), StepError> {
    if dir.join(".git").exists() {
        return Ok(());
    }
    let shown = dir.display();
    std::fs::create_dir_all(dir)
        .map_err(|e| failed(format!("cannot create the checkout {shown}: {e}")))?;
    let empty = std::fs::read_dir(dir)
        .map_err(|e| failed(format!("cannot read {shown}: {e}")))?
        .next()
        .is_none();
    if !empty {
        return Err(failed(format!(
            "{shown} holds files but is not a git checkout (no .git): empty it, or clone \
             the repo there, and kcideploy keeps it at the staging revision"
        )));
    }
    ctx.progress(format!("{shown}: new checkout of `{repo}`"));
    run(ctx, git(dir, &["init", "--quiet"]), "git init").await?;
    Ok(())
}

/// Refuse a revision that tracks a path the checkout holds as an untracked or ignored file
/// (`git checkout --force` would overwrite it), naming the paths.
async fn refuse_clashes(
    ctx: &mut StepCtx<'_>,
    dir: &Path,
    repo: &str,
    sha: &str,
) -> Result<(), StepError> {
    let ls_tree = git(dir, &["ls-tree", "-r", "-z", "--name-only", sha]);
    let tracked = paths(&run(ctx, ls_tree, "git ls-tree").await?);
    let ls_files = git(dir, &["ls-files", "--others", "-z"]);
    let untracked = paths(&run(ctx, ls_files, "git ls-files").await?);
    let clash: Vec<&str> = tracked
        .intersection(&untracked)
        .map(String::as_str)
        .collect();
    if clash.is_empty() {
        return Ok(());
    }
    Err(failed(format!(
        "the staging revision {} of `{repo}` tracks {}, which the checkout {} holds untracked; \
         kcideploy does not overwrite them: move them away, or leave out the change that adds them",
        short(sha),
        clash.join(", "),
        dir.display()
    )))
}

/// Name the tracked files with local edits, which the checkout discards.
async fn log_discarded(ctx: &mut StepCtx<'_>, dir: &Path) -> Result<(), StepError> {
    let status = git(
        dir,
        &["status", "--porcelain", "-z", "--untracked-files=no"],
    );
    let edited = paths(&run(ctx, status, "git status").await?);
    if !edited.is_empty() {
        let names: Vec<&str> = edited.iter().map(|e| e.get(3..).unwrap_or(e)).collect();
        let mut log = ctx.log;
        let _ = writeln!(
            log,
            "local changes to tracked files are discarded: {}",
            names.join(", ")
        );
    }
    Ok(())
}
