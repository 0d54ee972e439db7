//! Step kinds: what one attempt of a step does, one file each behind [`Kind`]. The step
//! runner (`super::runner`) owns retries, time limits and cancellation.

mod command;
mod compose;
mod container_restart;
pub mod docker;
mod docker_build;
mod docker_prune;
mod docker_push;
mod docker_ssh;
mod recreate;

pub use docker_push::drift as docker_push_drift;
pub use git_push::drift as git_push_drift;
mod git_push;
mod github_workflow;
mod http_wait;
mod kernelci;
mod kubernetes;
mod outputs;
mod pipe_cleaner;
mod pipe_watch;
pub mod registry;

pub use kubernetes::adopt as kubernetes_adopt;
pub use kubernetes::drift as kubernetes_drift;
pub use kubernetes::give_back as kubernetes_give_back;

use std::fs::File;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;

use super::RunContext;
use super::process::{self, Cancel, ProcessError};
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
    /// This attempt's time limit (the runner stops the attempt when it is over; kinds that
    /// watch it themselves say why in their own words).
    pub limit: Duration,
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

    /// Run one process of the step: its log, the run's grace between SIGTERM and SIGKILL,
    /// the attempt's cancellation, and the run's journal (see [`process::run_within`]).
    pub async fn process(
        &mut self,
        cmd: tokio::process::Command,
        program: &str,
        capture: bool,
    ) -> Result<process::Finished, ProcessError> {
        self.process_within(cmd, program, capture, None).await
    }

    /// [`StepCtx::process`], stopped when it runs longer than `limit`.
    pub async fn process_within(
        &mut self,
        cmd: tokio::process::Command,
        program: &str,
        capture: bool,
        limit: Option<Duration>,
    ) -> Result<process::Finished, ProcessError> {
        let journal = self
            .run
            .journal
            .as_ref()
            .map(|j| (&j.journal, self.run.run_id.as_str(), self.name));
        let io = process::Io {
            log: self.log,
            capture,
            journal,
        };
        process::run_within(cmd, program, io, self.run.grace, &mut self.cancel, limit).await
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

/// One attempt's work, boxed so kinds live behind one trait.
pub type Attempt<'a> = Pin<Box<dyn Future<Output = Result<Outputs, StepError>> + Send + 'a>>;

/// The default time limit of one attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// A step kind.
pub trait Kind: Send + Sync {
    /// Run one attempt. Cancellation arrives through `ctx.cancel`.
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a>;

    /// An attempt's limit when the step sets no `timeout`.
    fn default_timeout(&self) -> Duration {
        DEFAULT_TIMEOUT
    }

    /// Whether the kind fails with its own words when `ctx.limit` is over (the runner then
    /// stops it only a little later, as a backstop).
    fn watches_limit(&self) -> bool {
        false
    }
}

/// The kind of a step, from its checked settings.
pub fn kind_of(settings: KindSettings, kind: StepKind) -> Box<dyn Kind> {
    match settings {
        KindSettings::Command(with) => Box::new(command::CommandStep(with)),
        KindSettings::GitPush(with) => Box::new(git_push::GitPush(with)),
        KindSettings::HttpWait(with) => Box::new(http_wait::HttpWait(with)),
        KindSettings::DockerBuild(with) => Box::new(docker_build::Build(with)),
        KindSettings::DockerPush(with) => Box::new(docker_push::Push(with)),
        KindSettings::ContainerRestart(with) => Box::new(container_restart::Restart(with)),
        KindSettings::DockerPrune(with) => Box::new(docker_prune::Prune(with)),
        KindSettings::Compose(with) => Box::new(compose::Compose(with)),
        KindSettings::GithubWorkflow(with) => Box::new(github_workflow::Workflow(with)),
        KindSettings::KernelciDrain(with) => Box::new(kernelci::Drain(with)),
        KindSettings::PipeCleaner(with) => Box::new(pipe_cleaner::PipeCleaner(with)),
        KindSettings::Kubernetes(with) => Box::new(kubernetes::Kubernetes(with)),
        KindSettings::Unchecked => Box::new(Unchecked(kind)),
    }
}

/// A kind this version cannot run yet.
struct Unchecked(StepKind);

impl Kind for Unchecked {
    fn run<'a>(&'a self, _: &'a mut StepCtx<'_>) -> Attempt<'a> {
        let kind = self.0.as_str();
        Box::pin(async move {
            Err(StepError::Failed(format!(
                "step kind `{kind}` cannot run in this version of kcideploy yet"
            )))
        })
    }
}
