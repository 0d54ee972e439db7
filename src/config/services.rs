//! Plan file v1: the settings of the services kcideploy talks to or runs: the server and
//! its bot, GitHub, the KernelCI API, notifications.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;

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
    /// Name of an environment variable holding a token that the status pages (`/`,
    /// `/status`, `/runs`, `/events`) then require; unset: the pages are open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_token_env: Option<String>,
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
            status_token_env: None,
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
    /// Longest wait for a rate limit to reset before failing (one call's time limit is
    /// `timeouts.github`).
    #[serde(default = "GithubConfig::default_max_wait")]
    pub max_wait: HumanDuration,
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
}

impl Default for GithubConfig {
    fn default() -> Self {
        GithubConfig {
            api_url: Self::default_api_url(),
            token_env: Self::default_token_env(),
            max_wait: Self::default_max_wait(),
        }
    }
}

/// How long each operation on another host may take: every call kcideploy makes over the
/// network has one of these limits (or, inside a step, the step's `timeout`), and past it
/// fails with an error naming the operation, the host and the cause.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Connecting to an HTTP(S) host, DNS and TLS included: the GitHub API, the KernelCI
    /// API, `http_wait` URLs; and to a Docker daemon (`docker.host`), until it answers.
    #[serde(default = "Timeouts::default_connect", deserialize_with = "positive")]
    pub connect: HumanDuration,
    /// One `git fetch`: a repo's branches and pending changes (plan, apply, serve), the
    /// pipe-cleaner's kernel tree.
    #[serde(default = "Timeouts::default_git_fetch", deserialize_with = "positive")]
    pub git_fetch: HumanDuration,
    /// One `git ls-remote`: where a staging branch is now (before pushes, in blame rounds,
    /// `-refresh`), the dated tags of `git_push` and `pipe_cleaner`.
    #[serde(
        default = "Timeouts::default_git_ls_remote",
        deserialize_with = "positive"
    )]
    pub git_ls_remote: HumanDuration,
    /// One `git push`: `git_push` steps, the pipe-cleaner's test kernel.
    #[serde(default = "Timeouts::default_git_push", deserialize_with = "positive")]
    pub git_push: HumanDuration,
    /// One GitHub API call, its retries included (a rate-limit wait is bounded by
    /// `github.max_wait` instead): reading PRs, comments, commit statuses, the bot's replies.
    #[serde(default = "Timeouts::default_github", deserialize_with = "positive")]
    pub github: HumanDuration,
    /// One KernelCI API call, its retries included (a `Retry-After` wait of a 429 is not
    /// counted): `kernelci_drain` and `pipe_cleaner`.
    #[serde(default = "Timeouts::default_kernelci", deserialize_with = "positive")]
    pub kernelci: HumanDuration,
    /// One look-up of an image in its registry through the Docker daemon (`docker_build`
    /// with `check_registry`, `-refresh` of `docker_push`) or over the registry's HTTP API
    /// (each request of a `kubernetes` step's `pin_images` digest look-up), and a Docker
    /// credential helper's answer. Pushes and base-image pulls are bounded by their step's `timeout`.
    #[serde(default = "Timeouts::default_registry", deserialize_with = "positive")]
    pub registry: HumanDuration,
    /// One Kubernetes API call of a `kubernetes` step or its `-refresh` (discovery, a
    /// server-side apply, a look at a Deployment, a ConfigMap read or write); the wait for
    /// rollouts is bounded by the step's `rollout_timeout` instead.
    #[serde(
        default = "Timeouts::default_kubernetes",
        deserialize_with = "positive"
    )]
    pub kubernetes: HumanDuration,
    /// Posting one cycle's result to one chat webhook (`notify.webhooks`), its retries
    /// included (a 429's `Retry-After` wait too).
    #[serde(default = "Timeouts::default_chat", deserialize_with = "positive")]
    pub chat: HumanDuration,
}

impl Timeouts {
    fn default_connect() -> HumanDuration {
        HumanDuration::from_secs(10)
    }
    fn default_git_fetch() -> HumanDuration {
        HumanDuration::from_secs(600)
    }
    fn default_git_ls_remote() -> HumanDuration {
        HumanDuration::from_secs(60)
    }
    fn default_git_push() -> HumanDuration {
        HumanDuration::from_secs(600)
    }
    fn default_github() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    fn default_kernelci() -> HumanDuration {
        HumanDuration::from_secs(60)
    }
    fn default_registry() -> HumanDuration {
        HumanDuration::from_secs(60)
    }
    fn default_kubernetes() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    fn default_chat() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Self::default_connect(),
            git_fetch: Self::default_git_fetch(),
            git_ls_remote: Self::default_git_ls_remote(),
            git_push: Self::default_git_push(),
            github: Self::default_github(),
            kernelci: Self::default_kernelci(),
            registry: Self::default_registry(),
            kubernetes: Self::default_kubernetes(),
            chat: Self::default_chat(),
        }
    }
}

/// A duration above zero (a time limit of nothing fails every call).
fn positive<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    let duration = HumanDuration::deserialize(d)?;
    if duration.0.is_zero() {
        return Err(serde::de::Error::custom(
            "a time limit of 0 fails every call: write a duration above zero, such as 30s",
        ));
    }
    Ok(duration)
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
pub(super) enum NotifySchema {
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
    /// Chat rooms told each cycle's result (Discord, Slack, Matrix), secrets from the
    /// environment only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<super::chat::ChatWebhook>,
}

impl NotifyConfig {
    /// `notify: false` / `notify: true`, or the full mapping (whose errors keep their
    /// place in the plan file).
    pub(super) fn flag_or_map<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<NotifyConfig, D::Error> {
        struct FlagOrMap;
        impl<'de> serde::de::Visitor<'de> for FlagOrMap {
            type Value = NotifyConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "`false`, `true`, or a mapping with enabled, logs_url, context, webhooks",
                )
            }
            fn visit_bool<E: serde::de::Error>(self, enabled: bool) -> Result<NotifyConfig, E> {
                Ok(NotifyConfig {
                    enabled,
                    ..NotifyConfig::default()
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<NotifyConfig, A::Error> {
                NotifyConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_any(FlagOrMap)
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
            webhooks: Vec::new(),
        }
    }
}
