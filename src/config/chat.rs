//! `notify.webhooks`: chat rooms told each cycle's result, in each chat's own message format.
//! Every secret (a Discord or Slack webhook URL is one; a Matrix access token) comes from
//! the environment: the plan file names the variable.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which chat a webhook posts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    /// A Discord channel webhook (KernelCI's chat): `POST <url>?wait=true` with `content`
    /// and an embed.
    Discord,
    /// A Slack incoming webhook: `POST <url>` with `text` and blocks.
    Slack,
    /// A Matrix room, through the client-server API: `PUT
    /// /_matrix/client/v3/rooms/<room>/send/m.room.message/<txn>` with an access token.
    Matrix,
}

/// One chat room told about every cycle.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "ChatWebhookFields")]
pub struct ChatWebhook {
    pub kind: ChatKind,
    /// `discord`, `slack`: the environment variable holding the webhook URL (the URL
    /// carries the secret, so it is never written in the plan file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    /// `matrix`: the homeserver's base URL (`https://matrix.org`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homeserver: Option<String>,
    /// `matrix`: the room id (`!abc:matrix.org`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// `matrix`: the environment variable holding the bot account's access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Post only cycles that failed (default: every cycle that ran a step).
    #[serde(default)]
    pub only_failures: bool,
}

/// The fields as written, before the per-kind check (the schema is this one's).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ChatWebhookFields {
    /// `discord`, `slack` or `matrix`.
    kind: ChatKind,
    /// `discord`, `slack`: the environment variable holding the webhook URL (the URL
    /// carries the secret, so it is never written in the plan file).
    #[serde(default)]
    url_env: Option<String>,
    /// `matrix`: the homeserver's base URL (`https://matrix.org`).
    #[serde(default)]
    homeserver: Option<String>,
    /// `matrix`: the room id (`!abc:matrix.org`).
    #[serde(default)]
    room: Option<String>,
    /// `matrix`: the environment variable holding the bot account's access token.
    #[serde(default)]
    token_env: Option<String>,
    /// Post only cycles that failed (default: every cycle that ran a step).
    #[serde(default)]
    only_failures: bool,
}

impl TryFrom<ChatWebhookFields> for ChatWebhook {
    type Error = String;

    fn try_from(f: ChatWebhookFields) -> Result<ChatWebhook, String> {
        let hook = ChatWebhook {
            kind: f.kind,
            url_env: f.url_env,
            homeserver: f.homeserver,
            room: f.room,
            token_env: f.token_env,
            only_failures: f.only_failures,
        };
        hook.check()?;
        Ok(hook)
    }
}

impl ChatWebhook {
    /// The settings its kind needs, and none of the other kind's.
    fn check(&self) -> Result<(), String> {
        let set = |name: &str, v: &Option<String>| v.as_ref().map(|_| name.to_string());
        let (needed, foreign): (Vec<(&str, bool)>, Vec<Option<String>>) = match self.kind {
            ChatKind::Discord | ChatKind::Slack => (
                vec![("url_env", self.url_env.is_some())],
                vec![
                    set("homeserver", &self.homeserver),
                    set("room", &self.room),
                    set("token_env", &self.token_env),
                ],
            ),
            ChatKind::Matrix => (
                vec![
                    ("homeserver", self.homeserver.is_some()),
                    ("room", self.room.is_some()),
                    ("token_env", self.token_env.is_some()),
                ],
                vec![set("url_env", &self.url_env)],
            ),
        };
        let kind = serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        if let Some((name, _)) = needed.iter().find(|(_, set)| !set) {
            return Err(format!("a `{kind}` webhook needs `{name}`"));
        }
        if let Some(name) = foreign.into_iter().flatten().next() {
            return Err(format!("`{name}` is not a setting of a `{kind}` webhook"));
        }
        for env in [&self.url_env, &self.token_env].into_iter().flatten() {
            if env.is_empty() || env.contains(['/', ':', ' ']) {
                return Err(format!(
                    "`{env}` is not the name of an environment variable: write the variable's name, never the secret itself"
                ));
            }
        }
        Ok(())
    }
}
