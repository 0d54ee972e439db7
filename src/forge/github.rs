//! The `github` forge: open PRs of a repo through the REST API (all pages, conditional
//! requests with ETags cached on disk, rate-limit waits), heads fetched as `refs/pull/N/head`
//! with the git CLI. The token comes from an environment variable and is never printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{Config, RepoConfig};

mod checks;
mod send;
mod snapshot;
mod trusted;
pub use snapshot::snapshot;
pub use trusted::read_trusted_file;

/// A GitHub API client. `Debug` does not show the token.
pub struct GitHub {
    http: reqwest::Client,
    api: String,
    /// The only origin the token is sent to: the API's.
    origin: send::Origin,
    token: String,
    cache_dir: PathBuf,
    max_wait: Duration,
    /// The longest one call may take, retries included (`timeouts.github`).
    timeout: Duration,
    /// The longest connecting may take (`timeouts.connect`).
    connect: Duration,
    /// Requests answered with a body (what costs rate limit); 304s are not counted.
    pub charged: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// One cached answer.
#[derive(Serialize, Deserialize)]
struct Cached {
    etag: String,
    next: Option<String>,
    body: Value,
}

/// Why a call to the GitHub API failed. Messages name the method and the route (never the
/// token); the bot and the notifications log them and post a fixed sentence instead.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GitHubError {
    /// The token's environment variable is not set.
    #[error("the GitHub token is missing: set the environment variable {env}")]
    NoToken { env: String },
    /// The HTTP client or its runtime could not be made.
    #[error("{0}")]
    Setup(String),
    /// GitHub answered with an error status and its `message`.
    #[error(
        "{method} {route}: {status}: {message}{}{}",
        status_hint(*status),
        documentation_url.as_deref().map(|d| format!("; see {d}")).unwrap_or_default()
    )]
    Status {
        method: reqwest::Method,
        route: String,
        status: StatusCode,
        message: String,
        documentation_url: Option<String>,
    },
    /// The rate limit resets later than `github.max_wait`.
    #[error(
        "{method} {route}: rate limit exceeded; it resets in {}, more than github.max_wait ({})",
        crate::support::text::age(reset_in.as_secs() as i64),
        crate::config::HumanDuration(*max_wait)
    )]
    RateLimited {
        method: reqwest::Method,
        route: String,
        reset_in: Duration,
        max_wait: Duration,
    },
    /// A URL (a pagination link) on another host than the API's: the token is not sent there.
    #[error(
        "{method} {route}: refused: it is on {host}, not on the API host {api_host} \
         (the token is sent to the API host only)"
    )]
    ForeignHost {
        method: reqwest::Method,
        route: String,
        api_host: String,
        host: String,
    },
    /// No answer: DNS, connection, TLS or timeout (after retries).
    #[error("{method} {route}: cannot reach {host}: {cause}")]
    Network {
        method: reqwest::Method,
        route: String,
        host: String,
        /// The whole chain of causes.
        cause: String,
    },
    /// An answer that is not what GitHub sends (not JSON, not a list).
    #[error("{method} {route}: {message}")]
    Unexpected {
        method: reqwest::Method,
        route: String,
        message: String,
    },
}

impl GitHubError {
    /// The HTTP status GitHub answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            GitHubError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn status_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => " (the token is invalid or expired)",
        403 | 404 => " (the token lacks access to this repository, or it does not exist)",
        _ => "",
    }
}

/// `rel="next"` of a `Link` header.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, rel) = part.split_once(';')?;
        rel.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

impl GitHub {
    /// A client for the plan file's `github:` settings; the token from its environment variable.
    pub fn new(config: &Config, cache_dir: &Path) -> Result<GitHub, GitHubError> {
        let gh = &config.file.github;
        let token = std::env::var(&gh.token_env)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| GitHubError::NoToken {
                env: gh.token_env.clone(),
            })?;
        // Each request gets the time left of its call's `timeouts.github`.
        let timeouts = &config.file.timeouts;
        let http =
            crate::support::http::http_client(timeouts.connect.0).map_err(GitHubError::Setup)?;
        let api = gh.api_url.trim_end_matches('/').to_string();
        let origin = send::Origin::of(&api).ok_or_else(|| {
            GitHubError::Setup(format!("github.api_url `{api}` is not an http(s) URL"))
        })?;
        Ok(GitHub {
            http,
            api,
            origin,
            token,
            cache_dir: cache_dir.join("github-http"),
            max_wait: gh.max_wait.0,
            timeout: timeouts.github.0,
            connect: timeouts.connect.0,
            charged: Default::default(),
        })
    }

    /// Wait at most `max` for a rate limit to reset (the bot answers promptly or not at all).
    pub fn with_max_wait(mut self, max: Duration) -> GitHub {
        self.max_wait = self.max_wait.min(max);
        self
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.api)
        }
    }

    fn cache_file(&self, url: &str) -> PathBuf {
        self.cache_dir.join(format!(
            "{}.json",
            &hex::encode(Sha256::digest(url.as_bytes()))[..32]
        ))
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", self.token)) {
            h.insert("authorization", v);
        }
        h.insert(
            "accept",
            HeaderValue::from_static("application/vnd.github+json"),
        );
        h.insert(
            "x-github-api-version",
            HeaderValue::from_static("2022-11-28"),
        );
        h
    }

    /// GET with the ETag cache: a 304 costs no rate limit and gives the cached body.
    async fn get(&self, url: &str) -> Result<(Value, Option<String>), GitHubError> {
        let file = self.cache_file(url);
        let cached: Option<Cached> = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let resp = self
            .send(
                reqwest::Method::GET,
                url,
                None,
                cached.as_ref().map(|c| c.etag.as_str()),
            )
            .await?;
        if resp.status() == StatusCode::NOT_MODIFIED
            && let Some(c) = cached
        {
            return Ok((c.body, c.next));
        }
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let next = next_link(resp.headers());
        let body: Value = resp.json().await.map_err(|e| GitHubError::Unexpected {
            method: reqwest::Method::GET,
            route: self.route(url),
            message: format!("not JSON: {}", crate::support::text::error_chain(&e)),
        })?;
        if let Some(etag) = etag {
            let entry = Cached {
                etag,
                next: next.clone(),
                body: body.clone(),
            };
            if let Ok(bytes) = serde_json::to_vec(&entry) {
                let _ = crate::support::write_atomic(&file, &bytes);
            }
        }
        Ok((body, next))
    }

    /// Every item of every page.
    pub async fn get_all(&self, path: &str) -> Result<Vec<Value>, GitHubError> {
        let mut url = Some(self.url(path));
        let mut items = Vec::new();
        while let Some(u) = url {
            let (body, next) = self.get(&u).await?;
            match body {
                Value::Array(list) => items.extend(list),
                other => {
                    return Err(GitHubError::Unexpected {
                        method: reqwest::Method::GET,
                        route: self.route(&u),
                        message: format!("expected a list, got {}", short_json(&other)),
                    });
                }
            }
            url = next;
        }
        Ok(items)
    }

    /// One object (a PR, a user).
    pub async fn get_one(&self, path: &str) -> Result<Value, GitHubError> {
        Ok(self.get(&self.url(path)).await?.0)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, GitHubError> {
        self.write(reqwest::Method::POST, path, body).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, GitHubError> {
        self.write(reqwest::Method::PATCH, path, body).await
    }

    /// POST whose answer may have no body (`204 No Content`): the body when there is one, and
    /// when GitHub answered by its own clock (`Date`), to compare with its timestamps.
    pub async fn post_maybe_empty(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<(Option<Value>, Option<Timestamp>), GitHubError> {
        let resp = self
            .send(reqwest::Method::POST, &self.url(path), Some(body), None)
            .await?;
        let date = resp
            .headers()
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                jiff::fmt::rfc2822::DateTimeParser::new()
                    .parse_timestamp(v)
                    .ok()
            });
        let bytes = resp.bytes().await.map_err(|e| GitHubError::Network {
            method: reqwest::Method::POST,
            route: path.to_string(),
            host: self.origin.to_string(),
            cause: crate::support::text::error_chain(&e),
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok((None, date));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| GitHubError::Unexpected {
            method: reqwest::Method::POST,
            route: path.to_string(),
            message: format!("not JSON: {e}"),
        })?;
        Ok((Some(value), date))
    }

    async fn write(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, GitHubError> {
        let resp = self
            .send(method.clone(), &self.url(path), Some(body), None)
            .await?;
        resp.json().await.map_err(|e| GitHubError::Unexpected {
            method,
            route: path.to_string(),
            message: format!("not JSON: {}", crate::support::text::error_chain(&e)),
        })
    }
}

fn short_json(v: &Value) -> String {
    let text = v.to_string();
    text.chars().take(120).collect()
}

/// How long to wait before retrying a rate-limited answer: `Retry-After`, else until
/// `X-RateLimit-Reset` when `X-RateLimit-Remaining` is 0.
pub fn rate_limit_wait(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(secs) = header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    if header("x-ratelimit-remaining") == Some("0") {
        let reset = header("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok())?;
        let wait = (reset - Timestamp::now().as_second()).max(0) as u64 + 1;
        return Some(Duration::from_secs(wait));
    }
    None
}

/// `owner/name` of a repo: `github_repo`, else from a github.com URL.
pub fn slug(repo: &RepoConfig) -> Option<String> {
    if let Some(s) = &repo.github_repo {
        return Some(s.clone());
    }
    let rest = repo
        .url
        .strip_prefix("https://github.com/")
        .or_else(|| repo.url.strip_prefix("git@github.com:"))
        .or_else(|| repo.url.strip_prefix("ssh://git@github.com/"))?;
    Some(
        rest.trim_end_matches('/')
            .trim_end_matches(".git")
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            HeaderValue::from_static(
                "<https://api.github.com/repositories/1/issues?per_page=3&page=2>; rel=\"next\", <https://api.github.com/repositories/1/issues?per_page=3&page=5>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/repositories/1/issues?per_page=3&page=2")
        );
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn errors_name_the_route_and_what_github_said() {
        let get = reqwest::Method::GET;
        let status = GitHubError::Status {
            method: get.clone(),
            route: "/repos/a/b/pulls/7".into(),
            status: StatusCode::NOT_FOUND,
            message: "Not Found".into(),
            documentation_url: Some("https://docs.github.com/rest".into()),
        };
        assert_eq!(
            status.to_string(),
            "GET /repos/a/b/pulls/7: 404 Not Found: Not Found (the token lacks access to this \
             repository, or it does not exist); see https://docs.github.com/rest"
        );
        assert_eq!(status.status(), Some(StatusCode::NOT_FOUND));
        let limited = GitHubError::RateLimited {
            method: get.clone(),
            route: "/repos/a/b/pulls".into(),
            reset_in: Duration::from_secs(3600),
            max_wait: Duration::from_secs(15),
        };
        assert!(
            limited
                .to_string()
                .starts_with("GET /repos/a/b/pulls: rate limit exceeded; it resets in 1h"),
            "{limited}"
        );
        let network = GitHubError::Network {
            method: get,
            route: "/repos/a/b/pulls".into(),
            host: "api.github.com".into(),
            cause: "connection refused".into(),
        };
        assert_eq!(
            network.to_string(),
            "GET /repos/a/b/pulls: cannot reach api.github.com: connection refused"
        );
        assert_eq!(network.status(), None);
    }

    #[test]
    fn slugs() {
        let mut repo: RepoConfig = serde_json::from_value(
            serde_json::json!({"url": "https://github.com/kernelci/kernelci-core.git"}),
        )
        .expect("repo");
        assert_eq!(slug(&repo).as_deref(), Some("kernelci/kernelci-core"));
        repo.url = "/tmp/x".into();
        assert_eq!(slug(&repo), None);
        repo.github_repo = Some("a/b".into());
        assert_eq!(slug(&repo).as_deref(), Some("a/b"));
    }
}
