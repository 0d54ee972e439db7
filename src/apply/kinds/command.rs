//! `command`: argv or a shell string, in a repo's staging checkout or a directory, from a
//! clean environment (see [`process::clean_env`]).

use tokio::process::Command;

use super::{Attempt, Kind, Outputs, StepCtx, StepError, outputs};
use crate::apply::process::{self, Inherit};
use crate::config::kinds::CommandWith;

pub async fn run(ctx: &mut StepCtx<'_>, with: &CommandWith) -> Result<Outputs, StepError> {
    let plan = &ctx.run.plan;
    let vars = crate::planner::params::Vars {
        repos: &plan.repos,
        cycle: plan.cycle,
        plan: &plan.name,
    };
    // `${repos.<name>.sha}`, `${cycle}`, `${plan}` as the plan shows them, and other steps'
    // `${steps.<name>.outputs.<key>}`; other `${...}` (a shell's own) are left alone.
    let known = |text: &str| outputs::substitute(ctx, &vars.substitute_known(text));
    let argv: Vec<String> = match (&with.run, &with.shell) {
        (Some(run), _) => run.iter().map(|a| known(a)).collect::<Result<_, _>>()?,
        (None, Some(shell)) => vec!["sh".into(), "-c".into(), known(shell)?],
        (None, None) => return Err(StepError::Failed("no with.run or with.shell".into())),
    };
    let Some((program, args)) = argv.split_first() else {
        return Err(StepError::Failed("with.run is empty".into()));
    };
    let (cwd, env) = ctx.workdir(with.repo.as_deref(), with.cwd.as_deref())?;
    let mut cmd = Command::new(program);
    process::clean_env(&mut cmd, Inherit::Step, &with.pass_env);
    let step_env: Vec<(String, String)> = with
        .env
        .iter()
        .map(|(k, v)| Ok((k.clone(), known(v)?)))
        .collect::<Result<_, StepError>>()?;
    let files = outputs::Files::prepare(ctx)?;
    cmd.args(args)
        .current_dir(&cwd)
        .envs(env)
        .envs(files.env())
        .envs(step_env);
    ctx.process(cmd, program, false).await?;
    files.read(ctx.log)
}

/// `command`.
pub struct CommandStep(pub CommandWith);

impl Kind for CommandStep {
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a> {
        Box::pin(run(ctx, &self.0))
    }
}
