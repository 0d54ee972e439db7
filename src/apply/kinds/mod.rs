//! Step kinds: what one attempt of a step does.

mod command;
mod compose;
pub mod docker;
mod git_push;
mod http_wait;
mod kernelci;

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use super::RunContext;
use super::process::{Cancel, ProcessError};
use crate::config::kinds::KindSettings;
use crate::config::{StepConfig, StepKind};

/// Why one attempt of a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("cancelled")]
    Cancelled,
    #[error("timed out after {}", crate::support::text::age(.0.as_secs() as i64))]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

impl From<ProcessError> for StepError {
    fn from(e: ProcessError) -> Self {
        match e {
            ProcessError::Cancelled => StepError::Cancelled,
            ProcessError::Timeout(d) => StepError::Timeout(d),
            other => StepError::Failed(other.to_string()),
        }
    }
}

/// Everything one attempt of a step may use.
pub struct StepCtx<'a> {
    pub run: &'a RunContext,
    pub name: &'a str,
    pub step: &'a StepConfig,
    pub attempt: u32,
    pub log: &'a File,
    pub log_path: &'a PathBuf,
    pub cancel: watch::Receiver<Cancel>,
    /// Progress for the reporter.
    pub events: tokio::sync::mpsc::UnboundedSender<super::events::Event>,
}

impl StepCtx<'_> {
    /// Where a process of the step runs, and its environment: `cwd` within `repo`'s staging
    /// checkout (with `KCIDEPLOY_CHECKOUT`), or within the plan file's directory.
    pub fn workdir(
        &self,
        repo: Option<&str>,
        cwd: Option<&str>,
    ) -> Result<(std::path::PathBuf, Vec<(String, String)>), StepError> {
        let mut env = self.env();
        let base = match repo {
            Some(repo) => {
                let dir = self.run.checkout(repo).map_err(StepError::Failed)?;
                env.push(("KCIDEPLOY_CHECKOUT".into(), dir.display().to_string()));
                dir
            }
            None => self.run.config.dir.clone(),
        };
        Ok((cwd.map(|c| base.join(c)).unwrap_or(base), env))
    }

    /// Say how the step is getting on (a spinner message on a terminal, a line otherwise).
    pub fn progress(&self, message: String) {
        use std::io::Write;
        let mut log = self.log;
        let _ = writeln!(log, "{message}");
        let _ = self.events.send(super::events::Event::StepProgress {
            step: self.name.to_string(),
            message,
        });
    }

    /// Environment every process of the step gets: plan name, run, step, cycle, revisions.
    pub fn env(&self) -> Vec<(String, String)> {
        let plan = &self.run.plan;
        let mut env = vec![
            ("KCIDEPLOY_PLAN".to_string(), plan.name.clone()),
            ("KCIDEPLOY_RUN_ID".to_string(), self.run.run_id.clone()),
            ("KCIDEPLOY_STEP".to_string(), self.name.to_string()),
            (
                "KCIDEPLOY_CYCLE".to_string(),
                plan.cycle.as_str().to_string(),
            ),
            ("KCIDEPLOY_ATTEMPT".to_string(), self.attempt.to_string()),
        ];
        for (name, repo) in &plan.repos {
            let key = env_key(name);
            env.push((format!("KCIDEPLOY_REPO_{key}_SHA"), repo.staging.clone()));
            env.push((format!("KCIDEPLOY_REPO_{key}_BASE"), repo.base.clone()));
            env.push((
                format!("KCIDEPLOY_REPO_{key}_BRANCH"),
                repo.base_branch.clone(),
            ));
        }
        env
    }
}

/// `kernelci-api` → `KERNELCI_API`.
pub fn env_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// What a step made, kept in state (`docker_build`: the image; `container_restart`: containers).
pub type Outputs = Option<serde_json::Value>;

/// Run one attempt of the step.
pub async fn execute(ctx: &mut StepCtx<'_>) -> Result<Outputs, StepError> {
    match ctx.run.config.settings(ctx.name) {
        KindSettings::Command(with) => command::run(ctx, &with).await.map(|()| None),
        KindSettings::GitPush(with) => git_push::run(ctx, &with).await.map(|()| None),
        KindSettings::HttpWait(with) => http_wait::run(ctx, &with).await.map(|()| None),
        KindSettings::DockerBuild(with) => docker::build(ctx, &with).await.map(Some),
        KindSettings::DockerPush(with) => docker::push(ctx, &with).await.map(|()| None),
        KindSettings::ContainerRestart(with) => docker::restart(ctx, &with).await.map(Some),
        KindSettings::DockerPrune(with) => docker::prune(ctx, &with).await.map(|()| None),
        KindSettings::Compose(with) => compose::run(ctx, &with).await.map(|()| None),
        KindSettings::KernelciDrain(with) => kernelci::drain(ctx, &with).await.map(|()| None),
        KindSettings::PipeCleaner(with) => kernelci::pipe_cleaner(ctx, &with).await.map(Some),
        KindSettings::Unchecked => Err(StepError::Failed(format!(
            "step kind `{}` cannot run in this version of kcideploy yet",
            kind_name(ctx.step.kind.value)
        ))),
    }
}

fn kind_name(kind: StepKind) -> &'static str {
    kind.as_str()
}
