//! `command`: argv or a shell string, in a repo's staging checkout or a directory.

use tokio::process::Command;

use super::{StepCtx, StepError};
use crate::apply::process;
use crate::config::kinds::CommandWith;

pub async fn run(ctx: &mut StepCtx<'_>, with: &CommandWith) -> Result<(), StepError> {
    let argv: Vec<String> = match (&with.run, &with.shell) {
        (Some(run), _) => run.clone(),
        (None, Some(shell)) => vec!["sh".into(), "-c".into(), shell.clone()],
        (None, None) => return Err(StepError::Failed("no with.run or with.shell".into())),
    };
    let Some((program, args)) = argv.split_first() else {
        return Err(StepError::Failed("with.run is empty".into()));
    };
    let mut env = ctx.env();
    let base = match &with.repo {
        Some(repo) => {
            let dir = ctx.run.checkout(repo).map_err(StepError::Failed)?;
            env.push(("KCIDEPLOY_CHECKOUT".into(), dir.display().to_string()));
            dir
        }
        None => ctx.run.config.dir.clone(),
    };
    let cwd = match &with.cwd {
        Some(c) => base.join(c),
        None => base,
    };
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(&cwd).envs(env).envs(&with.env);
    process::run(
        cmd,
        program,
        ctx.log,
        false,
        ctx.step.timeout(),
        ctx.run.grace,
        &mut ctx.cancel,
    )
    .await?;
    Ok(())
}
