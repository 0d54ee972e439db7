//! `compose`: `docker compose` (v2 plugin) when it answers, else `docker-compose` (v1).
//! A failed `down` is reported as it is; the daemon-restart workaround is not wanted.

use std::sync::OnceLock;

use tokio::process::Command;

use super::{Attempt, Kind, StepCtx, StepError};
use crate::apply::process::{self, Inherit};
use crate::config::kinds::{ComposeAction, ComposeWith};

/// The compose command line: `["docker", "compose"]` or `["docker-compose"]`.
fn compose_program() -> Result<&'static [String], StepError> {
    static PROGRAM: OnceLock<Option<Vec<String>>> = OnceLock::new();
    let found = PROGRAM.get_or_init(|| {
        let answers = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if answers("docker", &["compose", "version"]) {
            Some(vec!["docker".into(), "compose".into()])
        } else if answers("docker-compose", &["version"]) {
            Some(vec!["docker-compose".into()])
        } else {
            None
        }
    });
    found.as_deref().ok_or_else(|| {
        StepError::Failed(
            "neither `docker compose` nor `docker-compose` answers on this machine".into(),
        )
    })
}

pub async fn run(ctx: &mut StepCtx<'_>, with: &ComposeWith) -> Result<(), StepError> {
    let program = compose_program()?;
    let (cwd, env) = ctx.workdir(with.repo.as_deref(), with.cwd.as_deref())?;
    let mut args: Vec<String> = program[1..].to_vec();
    if let Some(project) = &with.project {
        args.extend(["-p".into(), project.clone()]);
    }
    for file in &with.files {
        args.extend(["-f".into(), file.clone()]);
    }
    match with.action {
        ComposeAction::Up => args.extend(["up".into(), "-d".into()]),
        ComposeAction::Down => args.push("down".into()),
        ComposeAction::Pull => args.push("pull".into()),
    }
    if with.action != ComposeAction::Down {
        args.extend(with.services.iter().cloned());
    }
    let mut cmd = Command::new(&program[0]);
    process::clean_env(&mut cmd, Inherit::Step, &with.pass_env);
    cmd.args(&args).current_dir(&cwd).envs(env).envs(&with.env);
    let shown = format!(
        "{} {}",
        program.join(" "),
        args[program.len() - 1..].join(" ")
    );
    ctx.process(cmd, &shown, false).await?;
    Ok(())
}

/// `compose`.
pub struct Compose(pub ComposeWith);

impl Kind for Compose {
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a> {
        Box::pin(async move { run(ctx, &self.0).await.map(|()| None) })
    }
}
