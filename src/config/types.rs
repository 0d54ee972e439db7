//! Plan file v1: the serde + schemars types. Field names are the contract.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::duration::HumanDuration;
use super::for_each::{ForEach, ForEachSchema};
pub use super::services::*;

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
    /// Files whose `components:` and `lists:` this plan uses as if written here (paths
    /// relative to this file): one definition shared by staging and production. An included
    /// file holds only those two sections and includes nothing itself; a name defined twice
    /// is an error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub include: Vec<SpannedString>,
    /// Named lists of items, for `for_each: ${lists.<name>}` in components and steps (so a
    /// table such as the images is written once, here or in an included file).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(with = "IndexMap<String, Vec<serde_json::Value>>")]
    pub lists: IndexMap<String, Vec<Spanned<serde_json::Value>>>,
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
    /// How long each network operation may take (git, GitHub, KernelCI, registries).
    #[serde(default)]
    pub timeouts: Timeouts,
    /// The Docker daemon of the Docker steps (default: `DOCKER_HOST`, else the local socket).
    #[serde(default)]
    pub docker: super::docker::DockerConfig,
    /// PR comments and commit statuses; `false` for dry runs.
    #[serde(default, deserialize_with = "NotifyConfig::flag_or_map")]
    #[schemars(with = "NotifySchema")]
    pub notify: NotifyConfig,
    /// `kcideploy serve`: the webhook secret, the bot and who may command it.
    #[serde(default)]
    pub server: ServerConfig,
    /// Rootfs images built ahead, tested on staging, promoted (`kcideploy promote-rootfs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<super::rootfs::RootfsConfig>,
}

/// A file that plan files include (`include:`): the parts several plans share.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "kcideploy included file")]
pub struct IncludedFile {
    /// Named sets of paths in one repo, as in a plan file (their repos are the including
    /// plan's).
    #[serde(default)]
    pub components: IndexMap<String, Component>,
    /// Named lists of items for `for_each: ${lists.<name>}`, as in a plan file.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, Vec<serde_json::Value>>")]
    pub lists: IndexMap<String, Vec<Spanned<serde_json::Value>>>,
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
    /// Files that no component needs to cover, each group with why: `kcideploy coverage`
    /// and `validate --strict` fail on a file matched by neither a component nor these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<IgnoreRule>,
}

/// Files of a repo that no deploy step needs, and why.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IgnoreRule {
    /// Glob patterns, as in a component's `paths` (`tests/**`, `*.md`).
    #[schemars(with = "Vec<String>")]
    pub paths: Vec<SpannedString>,
    /// Why a change to these files needs no deploy step, for people (not empty).
    #[schemars(with = "String")]
    pub reason: SpannedString,
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
    /// github: a file of trusted logins, relative to the plan file: a path (one login per
    /// line, `#` comments), or `{ path, format: ini, section, key }` for an INI file whose
    /// key holds one login per line (kernelci-deploy's `data/staging.ini`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "TrustedFile::path_or_map"
    )]
    #[schemars(with = "TrustedFileSchema")]
    pub trusted_file: Option<TrustedFile>,
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
    /// github: check runs (by name) and commit statuses (by context) that must pass on a
    /// PR's head, or `all`. A failing or missing one leaves the PR out (`checks`); while one
    /// runs it waits (`waiting_for_checks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<super::required::RequireChecksSchema>")]
    pub require_checks: Option<super::RequireChecks>,
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
            require_checks: None,
        }
    }
}

/// How a trusted file lists logins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrustedFormat {
    /// One login per line; blank lines and `#` or `;` comments are skipped.
    #[default]
    Lines,
    /// An INI file (Python's configparser): the value of `key` in `section`, one login per
    /// continuation line.
    Ini,
}

/// A file of trusted logins, read when the PRs are listed.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustedFile {
    /// Path relative to the plan file (not a repo's staging revision: a PR could trust itself).
    pub path: String,
    /// `lines` or `ini`.
    #[serde(default)]
    pub format: TrustedFormat,
    /// ini: the section (`DEFAULT`; a key missing from another section is looked up in
    /// `DEFAULT`, as configparser does).
    #[serde(default = "TrustedFile::default_section")]
    pub section: String,
    /// ini: the key holding the logins (case-insensitive, as configparser reads keys).
    #[serde(default = "TrustedFile::default_key")]
    pub key: String,
}

impl TrustedFile {
    fn default_section() -> String {
        "DEFAULT".into()
    }
    fn default_key() -> String {
        "users".into()
    }

    /// `trusted_file: path` (one login per line) or the full mapping.
    fn path_or_map<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<TrustedFile>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Setting {
            Path(String),
            Full(TrustedFile),
        }
        match Setting::deserialize(d) {
            Ok(Setting::Path(path)) => Ok(Some(TrustedFile {
                path,
                format: TrustedFormat::Lines,
                section: Self::default_section(),
                key: Self::default_key(),
            })),
            Ok(Setting::Full(full)) => Ok(Some(full)),
            Err(_) => Err(serde::de::Error::custom(
                "trusted_file: write a path, or a mapping with path, format (lines, ini), section, key",
            )),
        }
    }
}

/// `trusted_file:` as editors see it: a path or the full mapping.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum TrustedFileSchema {
    Path(String),
    Full(TrustedFile),
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
    /// One component per item, named `<name>[<key>]`: a list of items (strings, or mappings
    /// keyed by their `key` field, else by their string values joined with `/`), or a
    /// matrix (a mapping of lists: every combination; `exclude:` lists those left out), or
    /// `${lists.<name>}` for a list of `lists:`.
    /// `${each.key}`, `${each.value}` and `${each.value.<field>}` are replaced in `repo`,
    /// `paths`, `exclude` and `description`. Steps name all of them by `<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<ForEachSchema>")]
    pub for_each: Option<Spanned<ForEach>>,
    /// The repo's own CI (`pending.require_checks`) covers this component: a change touching
    /// only such components is not deployed to staging once its checks pass; its PR is told.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ci_covers: bool,
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
    /// docker compose pull/down/up, in a persistent checkout if asked.
    Compose,
    /// Dispatch a GitHub Actions workflow and require its run to succeed.
    GithubWorkflow,
    /// Remove old images built by kcideploy.
    DockerPrune,
    /// Wait until an HTTP endpoint answers.
    HttpWait,
    /// Wait until the KernelCI queue is empty.
    KernelciDrain,
    /// Push the test kernel and check its results.
    PipeCleaner,
    /// Server-side apply manifests to a Kubernetes cluster and wait for the rollouts.
    Kubernetes,
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
            StepKind::GithubWorkflow => "github_workflow",
            StepKind::DockerPrune => "docker_prune",
            StepKind::HttpWait => "http_wait",
            StepKind::KernelciDrain => "kernelci_drain",
            StepKind::PipeCleaner => "pipe_cleaner",
            StepKind::Kubernetes => "kubernetes",
        }
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    /// Run only when one of these steps failed in the same run, once they finished: to stop
    /// the line (pause a trigger) when a check finds a regression. Planned whenever one of
    /// them runs; when none failed it ends as `not_needed` without running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub when_failed: Vec<SpannedString>,
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
    /// Docker steps: this step's daemon instead of `docker.host` (a build host), same forms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub docker_host: Option<SpannedString>,
    /// Wait before the first retry; doubles for each further one (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<HumanDuration>,
    /// Run once the steps of `after` finished even when some failed or were skipped (a
    /// stage step after a set of builds, some of which may fail); `needs` still skip it.
    #[serde(default)]
    pub run_after_failures: bool,
    /// One step per item, named `<name>[<key>]` (`build[gcc-14/arm64]`), as for components:
    /// a list of items, a matrix or `${lists.<name>}`. `${each.key}`, `${each.value}` and
    /// `${each.value.<field>}` are replaced in `on`, `needs`, `after`, `description`,
    /// `docker_host` and `with`. Other steps name all of them by `<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<ForEachSchema>")]
    pub for_each: Option<Spanned<ForEach>>,
    /// Settings of the step's kind.
    #[serde(default = "StepConfig::empty_with", rename = "with")]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub with: Spanned<IndexMap<String, serde_json::Value>>,
}

impl StepConfig {
    fn empty_with() -> Spanned<IndexMap<String, serde_json::Value>> {
        super::unspanned(IndexMap::new())
    }

    /// Every step this one runs after, with the field that says so: `needs`, `after` and
    /// `when_failed`.
    pub fn order_deps(&self) -> impl Iterator<Item = (&'static str, &SpannedString)> {
        let needs = self.needs.iter().map(|n| ("needs", n));
        let after = self.after.iter().map(|n| ("runs after", n));
        let failed = self.when_failed.iter().map(|n| ("runs when it fails:", n));
        needs.chain(after).chain(failed)
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
