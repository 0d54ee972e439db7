//! Plan file v1: the serde + schemars types. Field names are the contract.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::duration::HumanDuration;

/// A string that remembers where it stood in the plan file.
pub type SpannedString = Spanned<String>;

/// The plan file: what a KernelCI instance is made of and how to deploy it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "kcideploy plan file")]
pub struct PlanFile {
    /// Plan file format version. Only `1` exists.
    #[schemars(with = "u32")]
    pub version: Spanned<u32>,
    /// Name of the deployment (`staging`, `production`). Plan, repo and step names become file
    /// names: letters, digits, `.`, `_` and `-`, starting with a letter or a digit, no `..`.
    pub name: String,
    /// Where state is kept. Default: `$XDG_STATE_HOME/kcideploy/<name>/<name>.state.json`
    /// (`~/.local/state/kcideploy/...` without `XDG_STATE_HOME`), outside the plan's checkout.
    #[serde(default)]
    pub state: StateConfig,
    /// When cycles may run.
    #[serde(default)]
    pub policy: Policy,
    /// Git repositories taking part, by name (a safe file name, like `name`).
    pub repos: IndexMap<String, RepoConfig>,
    /// Named sets of paths in one repo.
    #[serde(default)]
    pub components: IndexMap<String, Component>,
    /// Units of deploy work, by name (a safe file name, like `name`).
    #[serde(default)]
    pub steps: IndexMap<String, StepConfig>,
    /// Finding the change that broke a deploy (off by default).
    #[serde(default)]
    pub blame: BlameConfig,
    /// The GitHub API, for repos with `forge: github`.
    #[serde(default)]
    pub github: GithubConfig,
    /// The KernelCI API, for `kernelci_drain` and `pipe_cleaner` steps.
    #[serde(default)]
    pub kernelci: KernelciConfig,
    /// PR comments and commit statuses; `false` for dry runs.
    #[serde(default, deserialize_with = "NotifyConfig::flag_or_map")]
    #[schemars(with = "NotifySchema")]
    pub notify: NotifyConfig,
    /// `kcideploy serve`: the webhook secret, the bot and who may command it.
    #[serde(default)]
    pub server: ServerConfig,
}

/// The long-running service (`kcideploy serve`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Name of the environment variable holding the webhook secret (never the secret itself).
    #[serde(default = "ServerConfig::default_secret_env")]
    pub secret_env: String,
    /// The bot's GitHub login, as mentioned in commands (`@kcibot deploy`).
    #[serde(default = "ServerConfig::default_bot")]
    pub bot: String,
    /// Who may command the bot, by numeric GitHub user id: `[{ login: Codertocat, id: 21031067 }]`.
    #[serde(default)]
    pub maintainers: Vec<super::Maintainer>,
    /// Also allow commenters whose `author_association` on the repo is one of these.
    #[serde(default)]
    pub maintainer_associations: Vec<Association>,
    /// Largest webhook body accepted, in bytes (GitHub caps payloads at 25 MB).
    #[serde(default = "ServerConfig::default_max_body")]
    pub max_body: usize,
}

impl ServerConfig {
    fn default_secret_env() -> String {
        "KCIDEPLOY_WEBHOOK_SECRET".into()
    }
    fn default_bot() -> String {
        "kcibot".into()
    }
    fn default_max_body() -> usize {
        25 * 1024 * 1024
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            secret_env: Self::default_secret_env(),
            bot: Self::default_bot(),
            maintainers: Vec::new(),
            maintainer_associations: Vec::new(),
            max_body: Self::default_max_body(),
        }
    }
}

/// A commenter's relation to the repository, as GitHub reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Association {
    Owner,
    Member,
    Collaborator,
}

impl Association {
    pub fn as_str(self) -> &'static str {
        match self {
            Association::Owner => "OWNER",
            Association::Member => "MEMBER",
            Association::Collaborator => "COLLABORATOR",
        }
    }
}

/// Where the GitHub API is and how to authenticate.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// API base URL.
    #[serde(default = "GithubConfig::default_api_url")]
    pub api_url: String,
    /// Name of the environment variable holding the token (never the token itself).
    #[serde(default = "GithubConfig::default_token_env")]
    pub token_env: String,
    /// Longest wait for a rate limit to reset before failing.
    #[serde(default = "GithubConfig::default_max_wait")]
    pub max_wait: HumanDuration,
    /// Longest time one API call may take, its retries included (rate-limit waits are
    /// bounded by `max_wait` instead).
    #[serde(default = "GithubConfig::default_timeout")]
    pub timeout: HumanDuration,
}

impl GithubConfig {
    fn default_api_url() -> String {
        "https://api.github.com".into()
    }
    fn default_token_env() -> String {
        "GITHUB_TOKEN".into()
    }
    fn default_max_wait() -> HumanDuration {
        HumanDuration::from_secs(300)
    }
    fn default_timeout() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
}

impl Default for GithubConfig {
    fn default() -> Self {
        GithubConfig {
            api_url: Self::default_api_url(),
            token_env: Self::default_token_env(),
            max_wait: Self::default_max_wait(),
            timeout: Self::default_timeout(),
        }
    }
}

/// Where the KernelCI API is.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KernelciConfig {
    /// API base URL (routes under `/latest`).
    #[serde(default = "KernelciConfig::default_api_url")]
    pub api_url: String,
    /// Environment variable holding a token (reads need none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

impl KernelciConfig {
    fn default_api_url() -> String {
        "https://staging.kernelci.org:9000".into()
    }
}

impl Default for KernelciConfig {
    fn default() -> Self {
        KernelciConfig {
            api_url: Self::default_api_url(),
            token_env: None,
        }
    }
}

/// `notify:` as editors see it: a flag or the full mapping.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum NotifySchema {
    Flag(bool),
    Full(NotifyConfig),
}

/// Telling contributors what happened to their PRs.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Comment on PRs and set commit statuses (github forge). `false` for dry runs.
    #[serde(default = "NotifyConfig::default_enabled")]
    pub enabled: bool,
    /// Base URL where run logs are published; comments link `<logs_url>/<run>/<step>.log`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_url: Option<String>,
    /// Commit status context.
    #[serde(default = "NotifyConfig::default_context")]
    pub context: String,
}

impl NotifyConfig {
    /// `notify: false` / `notify: true`, or the full mapping.
    fn flag_or_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NotifyConfig, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Setting {
            Flag(bool),
            Full(NotifyConfig),
        }
        match Setting::deserialize(d) {
            Ok(Setting::Flag(enabled)) => Ok(NotifyConfig {
                enabled,
                ..NotifyConfig::default()
            }),
            Ok(Setting::Full(full)) => Ok(full),
            Err(_) => Err(serde::de::Error::custom(
                "notify: write `false`, `true`, or a mapping with enabled, logs_url, context",
            )),
        }
    }

    fn default_enabled() -> bool {
        true
    }
    fn default_context() -> String {
        "kcideploy/staging".into()
    }
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            enabled: true,
            logs_url: None,
            context: Self::default_context(),
        }
    }
}

/// When a step fails: find the included change that broke it, leave it out, deploy the rest.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlameConfig {
    /// Bisect the included changes when a step fails.
    #[serde(default)]
    pub enabled: bool,
    /// At most this many bisection rounds (each runs the failed step's subgraph once).
    #[serde(default = "BlameConfig::default_max_rounds")]
    pub max_rounds: u32,
    /// At most this many culprits are found and left out in one apply.
    #[serde(default = "BlameConfig::default_max_culprits")]
    pub max_culprits: u32,
}

impl BlameConfig {
    fn default_max_rounds() -> u32 {
        10
    }
    fn default_max_culprits() -> u32 {
        3
    }
}

impl Default for BlameConfig {
    fn default() -> Self {
        BlameConfig {
            enabled: false,
            max_rounds: Self::default_max_rounds(),
            max_culprits: Self::default_max_culprits(),
        }
    }
}

/// Where state lives (local backend).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Path of the state file, relative to the plan file's directory; run logs, the fetch
    /// cache and checkouts go beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Throttling rules of the staging proposal.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Wait this long after an event before deploying, so fixups are included.
    #[serde(default = "Policy::default_settle")]
    pub settle: HumanDuration,
    /// Minimum time between the end of one deploy and the start of the next.
    #[serde(default = "Policy::default_cooldown")]
    pub cooldown: HumanDuration,
    /// A full cycle is due when the last one is at least this old.
    #[serde(default = "Policy::default_full_cycle_interval")]
    pub full_cycle_interval: HumanDuration,
    /// How many times one partial deploy may be restarted by new events.
    #[serde(default = "Policy::default_max_restarts")]
    pub max_restarts: u32,
    /// Also run a full cycle at these times (`serve`): a cron expression in UTC, five fields
    /// (`minute hour day-of-month month day-of-week`, e.g. `0 */6 * * *`) or six with
    /// seconds first. Days of the week by name (`Mon-Fri`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub schedule: Option<SpannedString>,
}

impl Policy {
    fn default_settle() -> HumanDuration {
        HumanDuration::from_secs(5 * 60)
    }
    fn default_cooldown() -> HumanDuration {
        HumanDuration::from_secs(30 * 60)
    }
    fn default_full_cycle_interval() -> HumanDuration {
        HumanDuration::from_secs(6 * 3600)
    }
    fn default_max_restarts() -> u32 {
        1
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            settle: Self::default_settle(),
            cooldown: Self::default_cooldown(),
            full_cycle_interval: Self::default_full_cycle_interval(),
            max_restarts: Self::default_max_restarts(),
            schedule: None,
        }
    }
}

/// Where pending changes of a repo come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    /// A plain git remote: pending changes are branches matching `pending.branches`.
    #[default]
    Git,
    /// GitHub pull requests (REST API).
    Github,
}

/// A git repository taking part in the deployment.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Clone URL: https://, ssh, file://, or a local path relative to the plan file.
    pub url: String,
    /// Branch the pending changes are merged onto.
    #[serde(default = "RepoConfig::default_base")]
    pub base: String,
    /// Branch the staging revision is pushed to.
    #[serde(default = "RepoConfig::default_staging_branch")]
    pub staging_branch: String,
    /// Where pending changes come from.
    #[serde(default)]
    pub forge: ForgeKind,
    /// Which pending changes are merged.
    #[serde(default)]
    pub pending: PendingRules,
    /// github forge: `owner/name` (default: taken from a github.com `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_repo: Option<String>,
}

impl RepoConfig {
    fn default_base() -> String {
        "main".into()
    }
    fn default_staging_branch() -> String {
        "staging.kernelci.org".into()
    }
}

/// Rules selecting the pending changes of a repo.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PendingRules {
    /// git forge: remote branches matching this glob are pending changes.
    #[serde(default = "PendingRules::default_branches")]
    #[schemars(with = "String")]
    pub branches: SpannedString,
    /// Trusted authors: head commit author emails (git forge) or logins (github).
    /// Omitted: every author is trusted. Empty list: nobody is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted: Option<Vec<String>>,
    /// github: a file of trusted logins (one per line, `#` comments), relative to the plan file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_file: Option<String>,
    /// github: members of this team (`org/team-slug`) are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_team: Option<String>,
    /// Changes never merged: branch names (git) or `user/branch` (github); globs allowed.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub skip: Vec<SpannedString>,
    /// github only: PRs carrying this label are left out.
    #[serde(default = "PendingRules::default_skip_label")]
    pub skip_label: String,
    /// Changes whose head commit is older than this are left out as stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<HumanDuration>,
}

impl PendingRules {
    fn default_branches() -> SpannedString {
        super::unspanned("pr/*".to_string())
    }
    fn default_skip_label() -> String {
        "staging-skip".into()
    }
}

impl Default for PendingRules {
    fn default() -> Self {
        PendingRules {
            branches: Self::default_branches(),
            trusted: None,
            trusted_file: None,
            trusted_team: None,
            skip: Vec::new(),
            skip_label: Self::default_skip_label(),
            max_age: None,
        }
    }
}

/// A named set of paths in one repo.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// The repo (a key of `repos`).
    #[schemars(with = "String")]
    pub repo: SpannedString,
    /// Glob patterns (`config/**`, `src/*.py`); `**` crosses directories, `*` does not.
    #[schemars(with = "Vec<String>")]
    pub paths: Vec<SpannedString>,
    /// Paths matching these globs are not part of the component.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub exclude: Vec<SpannedString>,
    /// What this component is, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Which cycle a step belongs to.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Cycle {
    /// Deploy only: runs in partial and in full cycles.
    #[default]
    Partial,
    /// Runs only in full cycles (test kernel, rootfs, result check).
    Full,
}

impl Cycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Cycle::Partial => "partial",
            Cycle::Full => "full",
        }
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Run a command (argv or shell string).
    Command,
    /// Push a repo's staging revision to its staging branch.
    GitPush,
    /// Build a Docker image.
    DockerBuild,
    /// Push a Docker image to a registry.
    DockerPush,
    /// Restart containers and wait until they run.
    ContainerRestart,
    /// docker compose up/down/pull.
    Compose,
    /// Remove old images built by kcideploy.
    DockerPrune,
    /// Wait until an HTTP endpoint answers.
    HttpWait,
    /// Wait until the KernelCI queue is empty.
    KernelciDrain,
    /// Push the test kernel and check its results.
    PipeCleaner,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Command => "command",
            StepKind::GitPush => "git_push",
            StepKind::DockerBuild => "docker_build",
            StepKind::DockerPush => "docker_push",
            StepKind::ContainerRestart => "container_restart",
            StepKind::Compose => "compose",
            StepKind::DockerPrune => "docker_prune",
            StepKind::HttpWait => "http_wait",
            StepKind::KernelciDrain => "kernelci_drain",
            StepKind::PipeCleaner => "pipe_cleaner",
        }
    }
}

/// A unit of deploy work.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// What the step does.
    #[schemars(with = "StepKind")]
    pub kind: Spanned<StepKind>,
    /// Components whose change triggers this step.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub on: Vec<SpannedString>,
    /// Steps that must run first; when one of them is triggered, so is this step.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub needs: Vec<SpannedString>,
    /// Steps this one runs after when both run; unlike `needs`, their triggering does not
    /// trigger this step (ordering only).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub after: Vec<SpannedString>,
    /// `partial` (default): every cycle; `full`: only full cycles.
    #[serde(default)]
    pub cycle: Cycle,
    /// Run in every cycle this step belongs to, whatever changed (the pipe-cleaner kernel).
    #[serde(default)]
    pub always: bool,
    /// What this step does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Ask for confirmation before running this step (`-auto-approve` gives it); without a
    /// terminal the run stops there, and applying again with `-auto-approve` resumes it.
    #[serde(default)]
    pub approve: bool,
    /// Give up on one attempt after this long (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Attempts after the first one fails.
    #[serde(default)]
    pub retries: u32,
    /// Wait before the first retry; doubles for each further one (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<HumanDuration>,
    /// Settings of the step's kind.
    #[serde(default = "StepConfig::empty_with", rename = "with")]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub with: Spanned<IndexMap<String, serde_json::Value>>,
}

impl StepConfig {
    fn empty_with() -> Spanned<IndexMap<String, serde_json::Value>> {
        super::unspanned(IndexMap::new())
    }

    /// One attempt's time limit.
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout
            .map(|d| d.0)
            .unwrap_or(std::time::Duration::from_secs(3600))
    }

    /// Delay before retry number `n` (1-based): `retry_delay` doubled each time, at most 5 minutes.
    pub fn retry_delay(&self, n: u32) -> std::time::Duration {
        let first = self
            .retry_delay
            .map(|d| d.0)
            .unwrap_or(std::time::Duration::from_secs(2));
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
        first
            .saturating_mul(factor)
            .min(std::time::Duration::from_secs(300))
    }
}
