//! Where state lives: the `backend` setting. `local` (the state file, the default) or a
//! PostgreSQL URL. The plan file's `state.backend` is overridden by the `KCIDEPLOY_BACKEND`
//! environment variable, itself overridden by the `-backend-config` command-line option.
//! A password is never in the plan file or on the command line: it comes from the
//! environment (`PGPASSWORD`, or the variable `state.password_env` names), or from the
//! `KCIDEPLOY_BACKEND` URL; it is never shown (see [`PgUrl`]'s `Display` and `Debug`).

use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Config;

/// Where state lives: the state file, and the backend (see `config::backend`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Path of the state file, relative to the plan file's directory; run logs, the fetch
    /// cache and checkouts go beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `local` (the state file, the default) or `postgres://USER@HOST:PORT/DATABASE`
    /// (no password here: see `password_env`). Overridden by `KCIDEPLOY_BACKEND` and
    /// `-backend-config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The environment variable holding the PostgreSQL password (default `PGPASSWORD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

/// The environment variable that overrides the plan file's `state.backend`.
pub const BACKEND_ENV: &str = "KCIDEPLOY_BACKEND";

/// The `-backend-config` option, set once by the command line before any command runs.
static OVERRIDE: OnceLock<String> = OnceLock::new();

/// Make `setting` (`local` or `postgres://...`) the backend of every plan file
/// this process loads (the `-backend-config` option). The first call wins.
pub fn set_override(setting: String) {
    let _ = OVERRIDE.set(setting);
}

/// Where a plan's state lives.
#[derive(Clone, PartialEq, Eq)]
pub enum BackendSetting {
    /// The state file ([`Config::state_path`]).
    Local,
    Postgres(PgUrl),
}

impl std::fmt::Display for BackendSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendSetting::Local => f.write_str("local"),
            BackendSetting::Postgres(url) => url.fmt(f),
        }
    }
}

impl std::fmt::Debug for BackendSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A PostgreSQL URL without its password, and the password apart.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// The URL with no password in it.
    pub url: String,
    password: Option<String>,
}

impl PgUrl {
    /// The password to connect with (never printed).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// `url` with `password` (from the environment) to use.
    pub fn with_password(mut self, password: Option<String>) -> PgUrl {
        if self.password.is_none() {
            self.password = password.filter(|p| !p.is_empty());
        }
        self
    }
}

impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = if self.password.is_some() {
            " (password set)"
        } else {
            ""
        };
        write!(f, "PgUrl({}{hidden})", self.url)
    }
}

/// A `backend` setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum BackendError {
    #[error("{origin}: backend `{shown}` is neither `local` nor a postgres:// URL")]
    #[diagnostic(help("write `local`, or postgres://USER@HOST:PORT/DATABASE"))]
    Unknown { origin: String, shown: String },
    #[error("{origin}: the backend URL {shown} has a password; {origin} must not hold one")]
    #[diagnostic(help(
        "remove it from the URL and give it in the environment: PGPASSWORD, or the variable `state.password_env` names (or put the whole URL in KCIDEPLOY_BACKEND)"
    ))]
    PasswordInUrl { origin: String, shown: String },
}

/// Split the password out of a `postgres://` URL: `(url without it, password)`. Both the
/// `user:password@` part and a `password=` query parameter are taken out, and
/// percent-decoded as libpq does (`p%40ss` is `p@ss`).
pub fn split_password(url: &str) -> (String, Option<String>) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let mut password = None;
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, pass)) => {
                password = Some(decode(pass));
                format!("{user}@{hosts}")
            }
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|kv| match kv.strip_prefix("password=") {
                    Some(p) => {
                        password = Some(decode(p));
                        false
                    }
                    None => true,
                })
                .collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_string(),
    };
    (format!("{scheme}://{authority}{tail}"), password)
}

/// A percent-encoded URL part, decoded (bytes that are not UTF-8 are replaced).
fn decode(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parse one setting; `origin` names where it came from, `password_allowed` whether it may
/// carry a password (only the environment may).
pub fn parse(
    setting: &str,
    origin: &str,
    password_allowed: bool,
) -> Result<BackendSetting, BackendError> {
    let setting = setting.trim();
    if setting.is_empty() || setting == "local" {
        return Ok(BackendSetting::Local);
    }
    if !(setting.starts_with("postgres://") || setting.starts_with("postgresql://")) {
        let (shown, _) = split_password(setting);
        return Err(BackendError::Unknown {
            origin: origin.to_string(),
            shown,
        });
    }
    let (url, password) = split_password(setting);
    if password.is_some() && !password_allowed {
        return Err(BackendError::PasswordInUrl {
            origin: origin.to_string(),
            shown: url,
        });
    }
    Ok(BackendSetting::Postgres(PgUrl { url, password }))
}

impl Config {
    /// The backend `setting` names (from `origin`, which may not hold a password), with the
    /// password from the environment as for this plan's own backend.
    pub fn backend_named(
        &self,
        setting: &str,
        origin: &str,
    ) -> Result<BackendSetting, BackendError> {
        Ok(self.with_password(parse(setting, origin, false)?))
    }

    fn with_password(&self, setting: BackendSetting) -> BackendSetting {
        match setting {
            BackendSetting::Postgres(url) => {
                let var = self
                    .file
                    .state
                    .password_env
                    .as_deref()
                    .unwrap_or("PGPASSWORD");
                BackendSetting::Postgres(url.with_password(std::env::var(var).ok()))
            }
            local => local,
        }
    }

    /// Where this plan's state lives: `-backend-config`, else `KCIDEPLOY_BACKEND`, else the
    /// plan file's `state.backend`, else the local file. A PostgreSQL password comes from
    /// `KCIDEPLOY_BACKEND`'s URL, the variable `state.password_env` names, or `PGPASSWORD`.
    pub fn backend(&self) -> Result<BackendSetting, BackendError> {
        let env = std::env::var(BACKEND_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        let plan = || format!("{} (state.backend)", self.path.display());
        let setting = match (OVERRIDE.get(), env, &self.file.state.backend) {
            (Some(flag), _, _) => parse(flag, "-backend-config", false)?,
            (None, Some(env), _) => parse(&env, BACKEND_ENV, true)?,
            (None, None, Some(text)) => parse(text, &plan(), false)?,
            (None, None, None) => BackendSetting::Local,
        };
        Ok(self.with_password(setting))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_split_out_and_never_shown() {
        let (url, pw) =
            split_password("postgres://kci:s3cret@db.example:5432/state?sslmode=require");
        assert_eq!(url, "postgres://kci@db.example:5432/state?sslmode=require");
        assert_eq!(pw.as_deref(), Some("s3cret"));
        let (url, pw) = split_password("postgres://kci@db/state?password=s3cret&connect_timeout=5");
        assert_eq!(url, "postgres://kci@db/state?connect_timeout=5");
        assert_eq!(pw.as_deref(), Some("s3cret"));
        // Percent-encoded, as libpq reads it.
        let (url, pw) = split_password("postgres://kci:p%40ss%2Fw%3Fd@db/x?password=no");
        assert_eq!(url, "postgres://kci@db/x");
        assert_eq!(pw.as_deref(), Some("no"), "the query's comes last");
        let (_, pw) = split_password("postgres://kci:p%40ss%2Fw%3Fd@db/x");
        assert_eq!(pw.as_deref(), Some("p@ss/w?d"));
        let from_env = parse("postgres://kci:s3cret@db/x", BACKEND_ENV, true).expect("env");
        assert!(!format!("{from_env} {from_env:?}").contains("s3cret"));
        let BackendSetting::Postgres(url) = &from_env else {
            panic!("{from_env}")
        };
        assert_eq!(url.password(), Some("s3cret"));
        let err = parse(
            "postgres://kci:s3cret@db/x",
            "plan.yaml (state.backend)",
            false,
        )
        .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(
            shown.contains("has a password") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(parse("local", "x", false), Ok(BackendSetting::Local));
        assert!(matches!(
            parse("mysql://a:b@c/d", "x", true),
            Err(BackendError::Unknown { shown, .. }) if !shown.contains(":b@")
        ));
    }
}
