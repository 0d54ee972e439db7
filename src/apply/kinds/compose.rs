//! `compose`: `docker compose` (v2 plugin) or `docker-compose` (v1), chosen by `cli` or by
//! what answers. `deploy` is the staging script's restart: `pull`, `down --remove-orphans`,
//! `up -d`, in a persistent checkout of the staging revision (see [`checkout`]) where the
//! untracked `.env` and settings files live. When `down` fails, an optional recovery command
//! runs (the script restarts containerd and dockerd) and `down` is tried once more. On a
//! daemon the plan names (`docker_host`, `docker.host`), compose gets its `DOCKER_HOST`.

mod checkout;

use std::path::PathBuf;
use std::sync::OnceLock;

use tokio::process::Command;

use super::{Attempt, Kind, StepCtx, StepError};
use crate::apply::process::{self, Inherit};
use crate::config::kinds::{ComposeAction, ComposeCli, ComposeWith};

/// What answers on this machine: `["docker", "compose"]` or `["docker-compose"]`.
fn detect() -> Result<Vec<String>, StepError> {
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
    found.clone().ok_or_else(|| {
        StepError::Failed(
            "neither `docker compose` nor `docker-compose` answers on this machine \
             (set with.cli: v1 or v2 to name one)"
                .into(),
        )
    })
}

/// The compose command line for `cli`.
fn program(cli: ComposeCli) -> Result<Vec<String>, StepError> {
    match cli {
        ComposeCli::Auto => detect(),
        ComposeCli::V1 => Ok(vec!["docker-compose".into()]),
        ComposeCli::V2 => Ok(vec!["docker".into(), "compose".into()]),
    }
}

/// One compose project: the program, `-p`/`-f`, where and with what environment.
struct Project<'a> {
    program: Vec<String>,
    global: Vec<String>,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    /// The daemon the plan names for the step (`DOCKER_HOST` and TLS), set last.
    docker: Vec<(String, String)>,
    with: &'a ComposeWith,
}

impl Project<'_> {
    /// A process of the step (compose, or the recovery command) in the project's directory.
    fn command(&self, argv: &[String]) -> Command {
        let mut cmd = Command::new(&argv[0]);
        process::clean_env(&mut cmd, Inherit::Step, &self.with.pass_env);
        cmd.args(&argv[1..])
            .current_dir(&self.cwd)
            .envs(self.env.iter().cloned())
            .envs(&self.with.env);
        if !self.docker.is_empty() {
            // A context would contradict the address the plan gives.
            cmd.env_remove("DOCKER_CONTEXT")
                .envs(self.docker.iter().cloned());
        }
        cmd
    }

    /// `compose <global> <sub...>`.
    async fn compose(&self, ctx: &mut StepCtx<'_>, sub: &[&str]) -> Result<(), StepError> {
        let mut argv = self.program.clone();
        argv.extend(self.global.iter().cloned());
        argv.extend(sub.iter().map(|s| s.to_string()));
        let shown = argv.join(" ");
        ctx.progress(shown.clone());
        let cmd = self.command(&argv);
        ctx.process(cmd, &shown, false).await?;
        Ok(())
    }

    async fn pull(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        let mut sub = vec!["pull"];
        if self.with.ignore_pull_failures {
            sub.push("--ignore-pull-failures");
        }
        sub.extend(self.with.services.iter().map(String::as_str));
        self.compose(ctx, &sub).await
    }

    async fn up(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        let mut sub = vec!["up", "-d"];
        sub.extend(self.with.services.iter().map(String::as_str));
        self.compose(ctx, &sub).await
    }

    /// `down` of the whole project; when it fails, the recovery command and `down` again.
    async fn down(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        let mut sub = vec!["down"];
        if self.with.remove_orphans {
            sub.push("--remove-orphans");
        }
        let first = match self.compose(ctx, &sub).await {
            Err(StepError::Failed(e)) => e,
            other => return other,
        };
        let Some(hook) = &self.with.down_recovery else {
            return Err(StepError::Failed(first));
        };
        let shown = hook.join(" ");
        ctx.progress(format!(
            "{first}; recovering with `{shown}`, then down once more"
        ));
        let cmd = self.command(hook);
        if let Err(e) = ctx.process(cmd, &shown, false).await {
            return Err(match e {
                process::ProcessError::Cancelled => StepError::Cancelled,
                e => StepError::Failed(format!("{first}; the recovery command failed too: {e}")),
            });
        }
        match self.compose(ctx, &sub).await {
            Err(StepError::Failed(again)) => Err(StepError::Failed(format!(
                "{again} (again, after the recovery command `{shown}`)"
            ))),
            other => other,
        }
    }
}

pub async fn run(ctx: &mut StepCtx<'_>, with: &ComposeWith) -> Result<(), StepError> {
    let program = program(with.cli)?;
    let (cwd, env) = match (&with.checkout, &with.repo) {
        (Some(dir), Some(repo)) => {
            let dir = checkout::prepare(ctx, repo, dir).await?;
            let mut env = ctx.env();
            env.push(("KCIDEPLOY_CHECKOUT".into(), dir.display().to_string()));
            let cwd = with.cwd.as_deref().map(|c| dir.join(c)).unwrap_or(dir);
            (cwd, env)
        }
        _ => ctx.workdir(with.repo.as_deref(), with.cwd.as_deref())?,
    };
    let mut global = Vec::new();
    if let Some(project) = &with.project {
        global.extend(["-p".to_string(), project.clone()]);
    }
    for file in &with.files {
        global.extend(["-f".to_string(), file.clone()]);
    }
    let project = Project {
        program,
        global,
        cwd,
        env,
        docker: super::docker::Daemon::of(&ctx.run.config, ctx.name).cli_env(),
        with,
    };
    match with.action {
        ComposeAction::Pull => project.pull(ctx).await,
        ComposeAction::Down => project.down(ctx).await,
        ComposeAction::Up => project.up(ctx).await,
        ComposeAction::Deploy => {
            project.pull(ctx).await?;
            project.down(ctx).await?;
            project.up(ctx).await
        }
    }
}

/// `compose`.
pub struct Compose(pub ComposeWith);

impl Kind for Compose {
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a> {
        Box::pin(async move { run(ctx, &self.0).await.map(|()| None) })
    }
}
