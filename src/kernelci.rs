//! KernelCI API client: `/latest/nodes` (all pages), `/latest/nodes/fast`, `/latest/count`,
//! `/latest/node/{id}`; retries with backoff on 5xx and connection errors, clear errors on 4xx.

use std::time::Duration;

use serde_json::Value;

use crate::config::Config;

/// Node states that are not finished, in the order a node goes through them (then `done`).
pub const UNFINISHED: [&str; 3] = ["running", "available", "closing"];

pub struct Api {
    http: reqwest::Client,
    base: String,
    /// `host:port` of the API, for errors.
    host: String,
    token: Option<String>,
    /// One call's limit, retries included (`timeouts.kernelci`).
    timeout: Duration,
    /// Connecting's limit (`timeouts.connect`).
    connect: Duration,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// `id` (current API) or `_id` (older one).
pub fn node_id(node: &Value) -> Option<&str> {
    node["id"].as_str().or_else(|| node["_id"].as_str())
}

/// The longest `Retry-After` the KernelCI client waits for one retry.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why one request failed: worth another try, or not.
#[derive(Debug)]
enum Failure {
    Transient {
        text: String,
        after: Option<Duration>,
    },
    /// The API asked to wait (429 with `Retry-After`): a wait not counted in the call's limit.
    Busy {
        text: String,
        wait: Duration,
    },
    Final(String),
}

impl Failure {
    fn text(&self) -> &str {
        match self {
            Failure::Transient { text, .. } | Failure::Busy { text, .. } | Failure::Final(text) => {
                text
            }
        }
    }
}

impl Api {
    pub fn new(config: &Config) -> Result<Api, String> {
        let k = &config.file.kernelci;
        let token = match &k.token_env {
            Some(var) => Some(
                std::env::var(var)
                    .map_err(|_| format!("the KernelCI token is missing: set {var}"))?,
            ),
            None => None,
        };
        let timeouts = &config.file.timeouts;
        let http = crate::support::http::http_client(timeouts.connect.0)?;
        let base = k.api_url.trim_end_matches('/').to_string();
        Ok(Api {
            http,
            host: crate::support::http::host_of(&base),
            base,
            token,
            timeout: timeouts.kernelci.0,
            connect: timeouts.connect.0,
        })
    }

    /// GET with the retry policy of every outgoing call (as the GitHub client's): only
    /// this idempotent request is retried, after a send error or a 5xx, with jittered
    /// exponential backoff, all within `timeouts.kernelci`; a 429 is waited out as its
    /// `Retry-After` asks (up to [`MAX_RETRY_AFTER`]), a wait not counted in that limit.
    async fn get(&self, path: &str, filters: &[(String, String)]) -> Result<Value, String> {
        use backon::Retryable;
        use std::sync::Mutex;
        use std::time::Instant;
        let what = format!("GET /latest{path}");
        let started = Instant::now();
        let waited = Mutex::new(Duration::ZERO);
        let deadline =
            || started + self.timeout + *waited.lock().unwrap_or_else(|e| e.into_inner());
        (|| self.get_once(path, filters, &what, deadline()))
            .retry(crate::support::retry::backoff())
            .sleep(tokio::time::sleep)
            .when(|f| !matches!(f, Failure::Final(_)))
            .adjust(|f, backoff| match f {
                Failure::Final(_) => None,
                Failure::Transient { after, .. } => backoff
                    .map(|d| after.unwrap_or(d))
                    .filter(|d| Instant::now() + *d < deadline()),
                Failure::Busy { wait, .. } => backoff.map(|_| {
                    *waited.lock().unwrap_or_else(|e| e.into_inner()) += *wait;
                    *wait
                }),
            })
            .notify(|f, wait| tracing::warn!("{}; again in {}ms", f.text(), wait.as_millis()))
            .await
            .map_err(|f| f.text().to_string())
    }

    /// One request, answered before `deadline`.
    async fn get_once(
        &self,
        path: &str,
        filters: &[(String, String)],
        what: &str,
        deadline: std::time::Instant,
    ) -> Result<Value, Failure> {
        let no_answer = |cause: String| Failure::Transient {
            text: format!(
                "{what}: cannot reach the KernelCI API at {}: {cause}",
                self.host
            ),
            after: None,
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(no_answer(format!(
                "timed out: no answer within {} (timeouts.kernelci)",
                crate::support::text::age(self.timeout.as_secs() as i64)
            )));
        }
        let url = format!("{}/latest{path}", self.base);
        let mut req = self.http.get(&url).query(filters).timeout(left);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                let limit = (self.timeout, "timeouts.kernelci");
                return Err(no_answer(crate::support::http::no_answer(
                    &e,
                    self.connect,
                    limit,
                )));
            }
        };
        let status = resp.status();
        if status.is_success() {
            return resp
                .json()
                .await
                .map_err(|e| Failure::Final(format!("{what}: not JSON: {e}")));
        }
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(Failure::Busy {
                text: format!("{what}: {status}"),
                wait: after.unwrap_or(Duration::from_secs(1)),
            });
        }
        if status.is_server_error() {
            return Err(Failure::Transient {
                text: format!("{what}: {status}"),
                after,
            });
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        Err(Failure::Final(format!(
            "{what}: {status}: {}",
            body["detail"]
        )))
    }

    /// Every node matching the filters (`field=value`, dotted fields), all pages.
    pub async fn nodes(&self, filters: &[(String, String)]) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        let limit = 250usize;
        loop {
            let mut q = filters.to_vec();
            q.push(("limit".into(), limit.to_string()));
            q.push(("offset".into(), out.len().to_string()));
            let page = self.get("/nodes", &q).await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            let total = page["total"].as_u64().unwrap_or(0) as usize;
            let got = items.len();
            out.extend(items);
            if got == 0 || out.len() >= total {
                return Ok(out);
            }
        }
    }

    /// `/latest/nodes/fast`: a plain list.
    pub async fn nodes_fast(&self, filters: &[(String, String)]) -> Result<Vec<Value>, String> {
        Ok(self
            .get("/nodes/fast", filters)
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    pub async fn count(&self, filters: &[(String, String)]) -> Result<u64, String> {
        let v = self.get("/count", filters).await?;
        v.as_u64()
            .ok_or_else(|| format!("GET /latest/count: expected a number, got {v}"))
    }

    pub async fn node(&self, id: &str) -> Result<Value, String> {
        self.get(&format!("/node/{id}"), &[]).await
    }

    /// Nodes not finished (running, available or closing) matching the filters.
    ///
    /// One count per state, one request after another: the states are counted in the order a
    /// node moves through them, so a node that stays unfinished while they are read is counted
    /// at least once (a node counted as `running` that moves to `available` before the next
    /// request is counted twice). The other order could miss it, and a drain would end while
    /// a node is still closing. Zero means that every node unfinished when the first count
    /// was answered has finished (one created since is seen by the next call).
    pub async fn unfinished(&self, filters: &[(String, String)]) -> Result<u64, String> {
        let mut total = 0;
        for state in UNFINISHED {
            let mut q = filters.to_vec();
            q.push(("state".into(), state.into()));
            total += self.count(&q).await?;
        }
        Ok(total)
    }
}
