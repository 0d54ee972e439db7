//! Sending one API request, the one retry policy of the GitHub client: credentials go only to
//! the API's own origin; failed attempts are retried with exponential backoff and jitter
//! ([`backon`]) within `timeouts.github` in all; `Retry-After` and the rate-limit reset are
//! waited out up to `github.max_wait` in all; and a request is repeated after an answer it
//! may have had an effect on (a send error, a 5xx) only if repeating it is harmless.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::Retryable;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{GitHub, GitHubError, rate_limit_wait};
use crate::config::HumanDuration;
use crate::support::http::no_answer;

/// `scheme://host:port` of a URL: where credentials may be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    pub(super) fn of(url: &str) -> Option<Origin> {
        let u = reqwest::Url::parse(url).ok()?;
        Some(Origin {
            scheme: u.scheme().to_ascii_lowercase(),
            host: u.host_str()?.to_ascii_lowercase(),
            port: u.port_or_known_default()?,
        })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// How an attempt failed.
enum Failure {
    /// Give up with this error.
    Final(GitHubError),
    /// Another attempt may succeed, after a backoff or after what the server asked for.
    Transient {
        error: GitHubError,
        after: Option<Duration>,
    },
    /// GitHub refused because of the rate limit (and did nothing): wait, then send again.
    RateLimited { error: GitHubError, wait: Duration },
}

impl Failure {
    fn error(&self) -> &GitHubError {
        match self {
            Failure::Final(error)
            | Failure::Transient { error, .. }
            | Failure::RateLimited { error, .. } => error,
        }
    }

    fn into_error(self) -> GitHubError {
        match self {
            Failure::Final(error)
            | Failure::Transient { error, .. }
            | Failure::RateLimited { error, .. } => error,
        }
    }
}

/// Whether sending `method` twice does no more than sending it once: GET, and PATCH (the
/// client patches a known comment with a whole new body). A POST is sent again only when
/// it cannot have reached GitHub (connection refused, rate limited).
fn idempotent(method: &Method) -> bool {
    *method == Method::GET || *method == Method::PATCH
}

impl GitHub {
    /// The route of `url` for messages: its path below the API.
    pub(super) fn route(&self, url: &str) -> String {
        url.strip_prefix(&self.api).unwrap_or(url).to_string()
    }

    /// Send a request under the retry policy above; the error names the method, the route,
    /// the host and the cause, never the token.
    pub(super) async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        etag: Option<&str>,
    ) -> Result<reqwest::Response, GitHubError> {
        let route = self.route(url);
        match Origin::of(url) {
            Some(origin) if origin == self.origin => {}
            other => {
                return Err(GitHubError::ForeignHost {
                    method,
                    route,
                    api_host: self.origin.to_string(),
                    host: other.map_or_else(|| url.to_string(), |o| o.to_string()),
                });
            }
        }
        let started = Instant::now();
        // Rate-limit waits so far: they count against `max_wait`, not against `timeout`.
        let waited = Mutex::new(Duration::ZERO);
        let waited_so_far = || *waited.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = || started + self.timeout + waited_so_far();
        let attempt = || self.attempt(&method, url, &route, body, etag, deadline());
        attempt
            .retry(crate::support::retry::backoff())
            .sleep(tokio::time::sleep)
            .when(|f| !matches!(f, Failure::Final(_)))
            .adjust(|f, backoff| match f {
                Failure::Final(_) => None,
                Failure::Transient { after, .. } => backoff
                    .map(|d| after.unwrap_or(d))
                    .filter(|d| Instant::now() + *d < deadline()),
                Failure::RateLimited { wait, .. } => {
                    let mut total = waited.lock().unwrap_or_else(|e| e.into_inner());
                    (*total + *wait <= self.max_wait).then(|| {
                        *total += *wait;
                        *wait
                    })
                }
            })
            .notify(|f, wait| {
                tracing::warn!("{}; again in {}", f.error(), HumanDuration(wait));
            })
            .await
            .map_err(Failure::into_error)
    }

    /// One attempt, answered before `deadline`.
    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        route: &str,
        body: Option<&Value>,
        etag: Option<&str>,
        deadline: Instant,
    ) -> Result<reqwest::Response, Failure> {
        let network = |cause: String| GitHubError::Network {
            method: method.clone(),
            route: route.to_string(),
            host: self.origin.to_string(),
            cause,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Final(network(self.timed_out())));
        }
        let mut req = self
            .http
            .request(method.clone(), url)
            .headers(self.headers())
            .timeout(left);
        if let Some(tag) = etag {
            req = req.header("if-none-match", tag);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let limit = (self.timeout, "timeouts.github");
                let error = network(no_answer(&e, self.connect, limit));
                // A request that did not connect never reached GitHub.
                return Err(if e.is_connect() || idempotent(method) {
                    Failure::Transient { error, after: None }
                } else {
                    Failure::Final(error)
                });
            }
        };
        let status = resp.status();
        if status != StatusCode::NOT_MODIFIED {
            self.charged
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(wait) = rate_limit_wait(status, resp.headers()) {
            let error = GitHubError::RateLimited {
                method: method.clone(),
                route: route.to_string(),
                reset_in: wait,
                max_wait: self.max_wait,
            };
            return Err(if wait > self.max_wait {
                Failure::Final(error)
            } else {
                Failure::RateLimited { error, wait }
            });
        }
        if !status.is_client_error() && !status.is_server_error() {
            return Ok(resp);
        }
        let after = retry_after(resp.headers());
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        let error = GitHubError::Status {
            method: method.clone(),
            route: route.to_string(),
            status,
            message: answer["message"]
                .as_str()
                .unwrap_or("no message")
                .to_string(),
            documentation_url: answer["documentation_url"].as_str().map(String::from),
        };
        Err(if status.is_server_error() && idempotent(method) {
            Failure::Transient { error, after }
        } else {
            Failure::Final(error)
        })
    }

    fn timed_out(&self) -> String {
        format!(
            "timed out: no answer within {} (timeouts.github)",
            HumanDuration(self.timeout)
        )
    }
}

/// `Retry-After` in seconds, as a 503 may carry it.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let api = Origin::of("https://api.github.com").expect("url");
        assert_eq!(
            Origin::of("https://API.github.com:443/repos?page=2"),
            Some(api.clone())
        );
        assert_ne!(Origin::of("http://api.github.com/x"), Some(api.clone()));
        assert_ne!(
            Origin::of("https://api.github.com:8443/x"),
            Some(api.clone())
        );
        assert_ne!(Origin::of("https://evil.example/x"), Some(api.clone()));
        assert_eq!(Origin::of("not a url"), None);
        assert_eq!(api.to_string(), "https://api.github.com:443");
    }

    #[test]
    fn only_get_and_patch_are_sent_twice() {
        assert!(idempotent(&Method::GET));
        assert!(idempotent(&Method::PATCH));
        assert!(!idempotent(&Method::POST));
    }
}
