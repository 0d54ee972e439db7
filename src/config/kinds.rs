//! Typed `with:` settings of the step kinds, checked when the plan file loads.

use indexmap::IndexMap;
use serde::Deserialize;

pub use super::kubernetes::{ConfigMapFrom, KubernetesWith};
use super::{HumanDuration, StepKind};

mod pipe_cleaner;
pub use pipe_cleaner::{
    PatchesDir, PipeCleanerPhase, PipeCleanerWith, Thresholds, UpstreamTree, WatchedBy, WatchedTree,
};

/// `command`: run a program.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandWith {
    /// argv: `["make", "-j4"]`.
    #[serde(default)]
    pub run: Option<Vec<String>>,
    /// A string for `sh -c`.
    #[serde(default)]
    pub shell: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Names of kcideploy's own environment variables the command gets too (it starts from
    /// a clean environment).
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Run in this repo's staging checkout (the staging revision exported from git).
    #[serde(default)]
    pub repo: Option<String>,
    /// Working directory: relative to the repo checkout when `repo` is set, else to the plan
    /// file's directory.
    #[serde(default)]
    pub cwd: Option<String>,
}

/// `git_push`: push a repo's staging revision to its staging branch, and a dated tag.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitPushWith {
    /// The repo (a key of `repos`).
    pub repo: String,
    /// Push even if the remote staging branch moved since planning.
    #[serde(default)]
    pub force: bool,
    /// Push URL, when it differs from the repo's `url`.
    #[serde(default)]
    pub url: Option<String>,
    /// Also push a tag `<tag_prefix>YYYYMMDD.N` (N counts that day's tags).
    #[serde(default)]
    pub tag_prefix: Option<String>,
    /// How many tags with that prefix to keep (the newest); `dated` tags only.
    #[serde(default = "GitPushWith::default_tag_keep")]
    pub tag_keep: usize,
    /// What follows `tag_prefix`: `dated` (`YYYYMMDD.N`, kept `tag_keep`) or `timestamp`
    /// (`YYYYmmddHHMMSS` of the run's clock, never pruned: KernelCI's production tags).
    #[serde(default)]
    pub tag_format: TagFormat,
}

/// The name of a `git_push` tag after its prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagFormat {
    /// `YYYYMMDD.N`, N counting that day's tags; the newest `tag_keep` are kept.
    #[default]
    Dated,
    /// `YYYYmmddHHMMSS` (UTC) of the run's one clock reading; no tag is deleted.
    Timestamp,
}

impl GitPushWith {
    fn default_tag_keep() -> usize {
        20
    }
}

/// `http_wait`: poll a URL until it answers as expected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpWaitWith {
    pub url: String,
    /// Expected HTTP status.
    #[serde(default = "HttpWaitWith::default_status")]
    pub status: u16,
    /// The body must contain this text.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// Time between two polls.
    #[serde(default = "HttpWaitWith::default_interval")]
    pub interval: HumanDuration,
}

impl HttpWaitWith {
    fn default_status() -> u16 {
        200
    }
    fn default_interval() -> HumanDuration {
        HumanDuration::from_secs(2)
    }
}

/// `docker_build`: build an image from a repo's staging revision or an inline Dockerfile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerBuildWith {
    /// Image repository, with the registry host when it is pushed (`127.0.0.1:5000/kernelci/x`).
    pub image: String,
    /// Moving tags applied after a successful build (`pipeline`, `latest`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Build context: this repo's staging revision (exported from git).
    #[serde(default)]
    pub repo: Option<String>,
    /// Context directory within the repo.
    #[serde(default = "DockerBuildWith::default_context")]
    pub context: String,
    /// Dockerfile path within the context.
    #[serde(default = "DockerBuildWith::default_dockerfile")]
    pub dockerfile: String,
    /// An inline Dockerfile instead of the context's.
    #[serde(default)]
    pub inline: Option<String>,
    /// Build arguments; `${repos.<name>.sha}`, `${repos.<name>.base}`, `${cycle}` are replaced.
    #[serde(default)]
    pub args: IndexMap<String, String>,
    /// Build without the layer cache (the weekly rebuild).
    #[serde(default)]
    pub no_cache: bool,
    /// Also look for the content tag in the image's registry before building.
    #[serde(default)]
    pub check_registry: bool,
    /// Network of the build containers (`none`, `host`); the daemon's default when unset.
    #[serde(default)]
    pub network: Option<String>,
}

impl DockerBuildWith {
    fn default_context() -> String {
        ".".into()
    }
    fn default_dockerfile() -> String {
        "Dockerfile".into()
    }
}

/// `docker_push`: push tags of an image to its registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerPushWith {
    /// Image repository with the registry host.
    pub image: String,
    /// Tags to push.
    pub tags: Vec<String>,
}

/// `container_restart`: restart containers and wait until they run (and are healthy).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerRestartWith {
    /// Container names.
    #[serde(default)]
    pub names: Vec<String>,
    /// Or every container carrying this label (`key=value`).
    #[serde(default)]
    pub label: Option<String>,
    /// Seconds the daemon waits for a container to stop before killing it.
    #[serde(default = "ContainerRestartWith::default_stop_timeout")]
    pub stop_timeout: i32,
    /// The image reference the containers must run (`${...}` substituted). A container
    /// running another image is recreated from it. Unset: the reference each container was
    /// created from (recreated when a rebuild moved that tag).
    #[serde(default)]
    pub image: Option<String>,
}

impl ContainerRestartWith {
    fn default_stop_timeout() -> i32 {
        10
    }
}

/// What a `compose` step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComposeAction {
    Up,
    Down,
    Pull,
    /// `pull`, then `down`, then `up -d`: the staging script's restart.
    Deploy,
}

/// Which compose command line a `compose` step runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComposeCli {
    /// `docker compose` when it answers, else `docker-compose`.
    #[default]
    Auto,
    /// `docker-compose` (Compose v1, Debian's package).
    V1,
    /// `docker compose` (the Compose v2 plugin).
    V2,
}

/// `compose`: `docker compose` (v2) or `docker-compose` (v1) on a project.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeWith {
    pub action: ComposeAction,
    /// Compose project name.
    #[serde(default)]
    pub project: Option<String>,
    /// Compose files, relative to the working directory, passed in this order.
    #[serde(default)]
    pub files: Vec<String>,
    /// Services (all when empty); `down` always stops the whole project.
    #[serde(default)]
    pub services: Vec<String>,
    /// Run in this repo's staging revision: a fresh export, or `checkout`.
    #[serde(default)]
    pub repo: Option<String>,
    /// A persistent git checkout of `repo` (absolute, or relative to the plan file), made
    /// if missing: the staging revision is fetched and checked out there, tracked files
    /// follow it, untracked and ignored files (`.env`, settings) stay.
    #[serde(default)]
    pub checkout: Option<String>,
    /// Working directory (relative to the checkout, or to the plan file).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment variables (image tags for the compose file, `KCI_SETTINGS`, ...).
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Names of kcideploy's own environment variables compose gets too (it starts from a
    /// clean environment).
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// `auto`, `v1` (`docker-compose`) or `v2` (`docker compose`).
    #[serde(default)]
    pub cli: ComposeCli,
    /// `down --remove-orphans`: also remove containers of services no longer in the files.
    #[serde(default = "ComposeWith::default_remove_orphans")]
    pub remove_orphans: bool,
    /// `pull --ignore-pull-failures`: an image that cannot be pulled keeps its local copy.
    #[serde(default)]
    pub ignore_pull_failures: bool,
    /// When `down` fails: run this command (argv, in the working directory), then `down`
    /// once more (the staging script restarts containerd and dockerd).
    #[serde(default)]
    pub down_recovery: Option<Vec<String>>,
}

impl ComposeWith {
    fn default_remove_orphans() -> bool {
        true
    }
}

/// `github_workflow`: dispatch a GitHub Actions workflow, follow its run, require success.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubWorkflowWith {
    /// The repo (a key of `repos`) whose GitHub repository holds the workflow.
    #[serde(default)]
    pub repo: Option<String>,
    /// Or the GitHub repository itself, `owner/name`.
    #[serde(default)]
    pub github_repo: Option<String>,
    /// The workflow file name (`staging.yml`) or its numeric id.
    pub workflow: String,
    /// The branch or tag the workflow runs on; with `repo`, its `staging_branch` by default.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// The workflow's inputs; in strings, `${repos.<name>.sha}`, `.base`, `.branch`,
    /// `${cycle}` and `${plan}` are replaced.
    #[serde(default)]
    pub inputs: IndexMap<String, serde_json::Value>,
    /// Time between two polls of the run.
    #[serde(default = "default_poll")]
    pub interval: HumanDuration,
}

/// `docker_prune`: remove images built by kcideploy, keeping the newest per repository.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerPruneWith {
    /// Only this image repository (all of kcideploy's when unset).
    #[serde(default)]
    pub image: Option<String>,
    /// How many images to keep per repository.
    #[serde(default = "DockerPruneWith::default_keep")]
    pub keep: usize,
}

impl DockerPruneWith {
    fn default_keep() -> usize {
        3
    }
}

/// `kernelci_drain`: wait until no node is running, available or closing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelciDrainWith {
    /// Only nodes of this owner.
    #[serde(default)]
    pub owner: Option<String>,
    /// Only nodes of this kind (`checkout`, `kbuild`, `job`, ...).
    #[serde(default)]
    pub kind: Option<String>,
    /// Time between two polls.
    #[serde(default = "default_poll")]
    pub interval: HumanDuration,
}

pub(super) fn default_poll() -> HumanDuration {
    HumanDuration::from_secs(30)
}

/// A step's settings, by kind.
#[derive(Debug, Clone)]
pub enum KindSettings {
    Command(CommandWith),
    GitPush(GitPushWith),
    HttpWait(HttpWaitWith),
    DockerBuild(DockerBuildWith),
    DockerPush(DockerPushWith),
    ContainerRestart(ContainerRestartWith),
    Compose(ComposeWith),
    GithubWorkflow(GithubWorkflowWith),
    DockerPrune(DockerPruneWith),
    KernelciDrain(KernelciDrainWith),
    PipeCleaner(PipeCleanerWith),
    Kubernetes(KubernetesWith),
    /// A kind whose settings this version does not check yet.
    Unchecked,
}

impl KindSettings {
    /// For steps that run code of a repo's staging revision (`command`, `compose` with
    /// `repo`): that repo and the variables the step names in `pass_env`.
    pub fn runs_repo_code(&self) -> Option<(&str, &[String])> {
        match self {
            KindSettings::Command(c) => c.repo.as_deref().map(|r| (r, c.pass_env.as_slice())),
            KindSettings::Compose(c) => c.repo.as_deref().map(|r| (r, c.pass_env.as_slice())),
            _ => None,
        }
    }

    /// The repo the step works on, if its settings name one.
    pub fn repo(&self) -> Option<&str> {
        match self {
            KindSettings::Command(c) => c.repo.as_deref(),
            KindSettings::GitPush(g) => Some(&g.repo),
            KindSettings::DockerBuild(b) => b.repo.as_deref(),
            KindSettings::Compose(c) => c.repo.as_deref(),
            KindSettings::GithubWorkflow(g) => g.repo.as_deref(),
            KindSettings::PipeCleaner(p) => p
                .patches
                .as_ref()
                .map(|d| d.repo.as_str())
                .or(p.watched_by.as_ref().map(|w| w.repo.as_str())),
            KindSettings::Kubernetes(k) => k.repo.as_deref(),
            _ => None,
        }
    }
}

/// Parse `with:` for `kind`; the error names the field (`with.run[1]: invalid type ...`).
pub fn parse_with(
    kind: StepKind,
    with: &IndexMap<String, serde_json::Value>,
) -> Result<KindSettings, String> {
    let value =
        serde_json::Value::Object(with.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    fn typed<T: for<'de> Deserialize<'de>>(value: serde_json::Value) -> Result<T, String> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                format!("with: {}", e.inner())
            } else {
                format!("with.{path}: {}", e.inner())
            }
        })
    }
    Ok(match kind {
        StepKind::Command => {
            let c: CommandWith = typed(value)?;
            match (&c.run, &c.shell) {
                (Some(run), None) if run.is_empty() => return Err("with.run is empty".into()),
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(
                        "a command step needs exactly one of with.run (argv) and with.shell".into(),
                    );
                }
            }
            env_names(&c.pass_env)?;
            KindSettings::Command(c)
        }
        StepKind::GitPush => KindSettings::GitPush(typed(value)?),
        StepKind::HttpWait => KindSettings::HttpWait(typed(value)?),
        StepKind::DockerBuild => {
            let b: DockerBuildWith = typed(value)?;
            if b.repo.is_none() && b.inline.is_none() {
                return Err("a docker_build step needs with.repo (a build context) or with.inline (a Dockerfile)".into());
            }
            KindSettings::DockerBuild(b)
        }
        StepKind::DockerPush => KindSettings::DockerPush(typed(value)?),
        StepKind::ContainerRestart => {
            let r: ContainerRestartWith = typed(value)?;
            if r.names.is_empty() == r.label.is_none() {
                return Err(
                    "a container_restart step needs exactly one of with.names and with.label"
                        .into(),
                );
            }
            KindSettings::ContainerRestart(r)
        }
        StepKind::Compose => {
            let c: ComposeWith = typed(value)?;
            env_names(&c.pass_env)?;
            if c.checkout.is_some() && c.repo.is_none() {
                return Err("with.checkout needs with.repo (the repo checked out there)".into());
            }
            if c.down_recovery.as_ref().is_some_and(Vec::is_empty) {
                return Err("with.down_recovery is empty".into());
            }
            KindSettings::Compose(c)
        }
        StepKind::GithubWorkflow => {
            let g: GithubWorkflowWith = typed(value)?;
            match (&g.repo, &g.github_repo, &g.git_ref) {
                (Some(_), Some(_), _) | (None, None, _) => {
                    return Err(
                        "a github_workflow step needs exactly one of with.repo and with.github_repo"
                            .into(),
                    );
                }
                (None, Some(_), None) => {
                    return Err("with.ref is needed with with.github_repo".into());
                }
                (None, Some(slug), _) if slug.split('/').filter(|p| !p.is_empty()).count() != 2 => {
                    return Err(format!("with.github_repo {slug:?} is not owner/name"));
                }
                _ => {}
            }
            if g.interval.0.is_zero() {
                return Err("with.interval must be more than 0s".into());
            }
            KindSettings::GithubWorkflow(g)
        }
        StepKind::DockerPrune => KindSettings::DockerPrune(typed(value)?),
        StepKind::KernelciDrain => KindSettings::KernelciDrain(typed(value)?),
        StepKind::PipeCleaner => {
            let p: PipeCleanerWith = typed(value)?;
            p.check_phase()?;
            KindSettings::PipeCleaner(p)
        }
        StepKind::Kubernetes => {
            let k: KubernetesWith = typed(value)?;
            k.check()?;
            KindSettings::Kubernetes(k)
        }
    })
}

/// `pass_env` names variables: not empty, no `=`, no NUL.
fn env_names(names: &[String]) -> Result<(), String> {
    match names
        .iter()
        .position(|n| n.is_empty() || n.contains(['=', '\0']))
    {
        Some(i) => Err(format!(
            "with.pass_env[{i}]: {:?} is not an environment variable name",
            names[i]
        )),
        None => Ok(()),
    }
}
