//! Typed `with:` settings of the step kinds, checked when the plan file loads.

use indexmap::IndexMap;
use serde::Deserialize;

use super::{HumanDuration, StepKind};

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
    /// How many tags with that prefix to keep (the newest).
    #[serde(default = "GitPushWith::default_tag_keep")]
    pub tag_keep: usize,
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

/// A step's settings, by kind.
#[derive(Debug, Clone)]
pub enum KindSettings {
    Command(CommandWith),
    GitPush(GitPushWith),
    HttpWait(HttpWaitWith),
    /// A kind whose settings this version does not check yet.
    Unchecked,
}

impl KindSettings {
    /// The repo the step works on, if its settings name one.
    pub fn repo(&self) -> Option<&str> {
        match self {
            KindSettings::Command(c) => c.repo.as_deref(),
            KindSettings::GitPush(g) => Some(&g.repo),
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
            KindSettings::Command(c)
        }
        StepKind::GitPush => KindSettings::GitPush(typed(value)?),
        StepKind::HttpWait => KindSettings::HttpWait(typed(value)?),
        _ => KindSettings::Unchecked,
    })
}
