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

use super::{ForgeError, PendingChange, RepoSnapshot};
use crate::config::{Config, RepoConfig};

/// A GitHub API client. `Debug` does not show the token.
pub struct GitHub {
    http: reqwest::Client,
    api: String,
    token: String,
    cache_dir: PathBuf,
    max_wait: Duration,
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
    pub fn new(config: &Config, cache_dir: &Path) -> Result<GitHub, String> {
        let gh = &config.file.github;
        let token = std::env::var(&gh.token_env)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                format!(
                    "the GitHub token is missing: set the environment variable {}",
                    gh.token_env
                )
            })?;
        let http = crate::support::http::http_client(Some(Duration::from_secs(30)))?;
        Ok(GitHub {
            http,
            api: gh.api_url.trim_end_matches('/').to_string(),
            token,
            cache_dir: cache_dir.join("github-http"),
            max_wait: gh.max_wait.0,
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

    /// Send a request, waiting out rate limits and retrying server errors; the error names
    /// the method and path, never the token.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        etag: Option<&str>,
    ) -> Result<reqwest::Response, String> {
        let mut server_errors = 0;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url)
                .headers(self.headers());
            if let Some(tag) = etag {
                req = req.header("if-none-match", tag);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let what = format!("{method} {}", url.strip_prefix(&self.api).unwrap_or(url));
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if server_errors < 3 => {
                    server_errors += 1;
                    tracing::warn!("{what}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(500 << server_errors)).await;
                    continue;
                }
                Err(e) => return Err(format!("{what}: {e}")),
            };
            let status = resp.status();
            if status != StatusCode::NOT_MODIFIED {
                self.charged
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(wait) = rate_limit_wait(status, resp.headers()) {
                if wait > self.max_wait {
                    return Err(format!(
                        "{what}: rate limit exceeded; it resets in {}, more than github.max_wait ({})",
                        crate::support::text::age(wait.as_secs() as i64),
                        crate::config::HumanDuration(self.max_wait)
                    ));
                }
                tracing::warn!("{what}: rate limited, waiting {wait:?}");
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.is_server_error() && server_errors < 3 {
                server_errors += 1;
                tokio::time::sleep(Duration::from_millis(500 << server_errors)).await;
                continue;
            }
            if status.is_client_error() || status.is_server_error() {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                let message = body["message"].as_str().unwrap_or("no message");
                let hint = match status.as_u16() {
                    401 => " (the token is invalid or expired)",
                    403 | 404 => {
                        " (the token lacks access to this repository, or it does not exist)"
                    }
                    _ => "",
                };
                let docs = body["documentation_url"]
                    .as_str()
                    .map(|d| format!("; see {d}"))
                    .unwrap_or_default();
                return Err(format!("{what}: {status}: {message}{hint}{docs}"));
            }
            return Ok(resp);
        }
    }

    /// GET with the ETag cache: a 304 costs no rate limit and gives the cached body.
    async fn get(&self, url: &str) -> Result<(Value, Option<String>), String> {
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
        let body: Value = resp
            .json()
            .await
            .map_err(|e| format!("GET {url}: not JSON: {e}"))?;
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
    pub async fn get_all(&self, path: &str) -> Result<Vec<Value>, String> {
        let mut url = Some(self.url(path));
        let mut items = Vec::new();
        while let Some(u) = url {
            let (body, next) = self.get(&u).await?;
            match body {
                Value::Array(list) => items.extend(list),
                other => {
                    return Err(format!(
                        "GET {u}: expected a list, got {}",
                        short_json(&other)
                    ));
                }
            }
            url = next;
        }
        Ok(items)
    }

    /// One object (a PR, a user).
    pub async fn get_one(&self, path: &str) -> Result<Value, String> {
        Ok(self.get(&self.url(path)).await?.0)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let resp = self
            .send(reqwest::Method::POST, &self.url(path), Some(body), None)
            .await?;
        resp.json().await.map_err(|e| format!("POST {path}: {e}"))
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, String> {
        let resp = self
            .send(reqwest::Method::PATCH, &self.url(path), Some(body), None)
            .await?;
        resp.json().await.map_err(|e| format!("PATCH {path}: {e}"))
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

/// Logins in a trusted file: one per line, `#` comments, `login = ...` lines (ini) allowed.
pub fn read_trusted_file(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read pending.trusted_file {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.starts_with('['))
        .map(|l| l.split(['=', ':']).next().unwrap_or(l).trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// The PRs of one repo, their files, and their heads fetched into the cache.
pub fn snapshot(
    config: &Config,
    name: &str,
    repo: &RepoConfig,
    cache_dir: &Path,
) -> Result<RepoSnapshot, ForgeError> {
    let err = |message: String| ForgeError::Github {
        repo: name.to_string(),
        message,
    };
    let slug = slug(repo).ok_or_else(|| {
        err("set `github_repo: owner/name` (the url is not a github.com URL)".into())
    })?;
    let client = GitHub::new(config, cache_dir).map_err(err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(e.to_string()))?;
    let (prs, team) = runtime
        .block_on(async {
            let prs = client
                .get_all(&format!("/repos/{slug}/pulls?state=open&per_page=100"))
                .await?;
            let team = match &repo.pending.trusted_team {
                Some(team) => {
                    let (org, slug) = team
                        .split_once('/')
                        .ok_or_else(|| format!("pending.trusted_team `{team}` is not org/team"))?;
                    let members = client
                        .get_all(&format!("/orgs/{org}/teams/{slug}/members?per_page=100"))
                        .await?;
                    Some(
                        members
                            .iter()
                            .filter_map(|m| m["login"].as_str().map(String::from))
                            .collect::<Vec<_>>(),
                    )
                }
                None => None,
            };
            Ok::<_, String>((prs, team))
        })
        .map_err(err)?;

    // The effective trusted list.
    let mut trusted = repo.pending.trusted.clone();
    if let Some(file) = &repo.pending.trusted_file {
        let logins = read_trusted_file(&config.dir.join(file)).map_err(err)?;
        trusted.get_or_insert_with(Vec::new).extend(logins);
    }
    if let Some(members) = team {
        trusted.get_or_insert_with(Vec::new).extend(members);
    }

    let mut changes = Vec::new();
    for pr in &prs {
        let Some(number) = pr["number"].as_u64() else {
            continue;
        };
        let head = pr["head"]["sha"].as_str().unwrap_or_default().to_string();
        let updated_at = pr["updated_at"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let source = pr["head"]["label"]
            .as_str()
            .map(|l| l.replacen(':', "/", 1));
        changes.push((
            number,
            PendingChange {
                id: format!("#{number}"),
                head,
                author: pr["user"]["login"].as_str().unwrap_or_default().to_string(),
                title: pr["title"].as_str().unwrap_or_default().to_string(),
                labels: pr["labels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l["name"].as_str().map(String::from))
                    .collect(),
                draft: pr["draft"].as_bool().unwrap_or(false),
                updated_at,
                base: pr["base"]["ref"].as_str().map(String::from),
                source,
                files: None,
            },
        ));
    }
    changes.sort_by_key(|(n, _)| *n);
    let files = runtime
        .block_on(async {
            let mut all = Vec::new();
            for (n, _) in &changes {
                let list = client
                    .get_all(&format!("/repos/{slug}/pulls/{n}/files?per_page=100"))
                    .await?;
                all.push(
                    list.iter()
                        .filter_map(|f| f["filename"].as_str().map(String::from))
                        .collect::<Vec<_>>(),
                );
            }
            Ok::<_, String>(all)
        })
        .map_err(err)?;
    let mut changes: Vec<PendingChange> = changes
        .into_iter()
        .zip(files)
        .map(|((_, mut c), f)| {
            c.files = Some(f);
            c
        })
        .collect();

    // Base and staging branches, and every PR head, through the git CLI.
    let url = config.repo_url(repo);
    let cache = cache_dir.join(format!("{name}.git"));
    let (git_repo, _guard) = crate::gitops::open_cache(&cache).map_err(err)?;
    let mut refspecs = vec![
        format!(
            "+refs/heads/{}:{}{}",
            repo.base,
            super::git::REMOTE_NAMESPACE,
            repo.base
        ),
        format!(
            "+refs/heads/{0}:{1}{0}",
            repo.staging_branch,
            super::git::REMOTE_NAMESPACE
        ),
    ];
    for c in &changes {
        let n = c.id.trim_start_matches('#');
        refspecs.push(format!("+refs/pull/{n}/head:refs/kcideploy/pull/{n}"));
    }
    fetch_refs(name, &url, &cache, &refspecs, &repo.staging_branch)?;
    let base = git_repo
        .refname_to_id(&format!("{}{}", super::git::REMOTE_NAMESPACE, repo.base))
        .map_err(|_| ForgeError::NoBase {
            repo: name.to_string(),
            branch: repo.base.clone(),
            url: super::git::redact_url(&url),
        })?
        .to_string();
    let remote_staging = git_repo
        .refname_to_id(&format!(
            "{}{}",
            super::git::REMOTE_NAMESPACE,
            repo.staging_branch
        ))
        .ok()
        .map(|o| o.to_string());
    // A PR whose fetched head is not the API's head moved meanwhile: use what was fetched.
    for c in &mut changes {
        let n = c.id.trim_start_matches('#');
        if let Ok(oid) = git_repo.refname_to_id(&format!("refs/kcideploy/pull/{n}")) {
            c.head = oid.to_string();
        }
    }
    Ok(RepoSnapshot {
        base_branch: repo.base.clone(),
        base,
        remote_staging,
        changes,
        cache,
        trusted,
    })
}

/// Fetch refspecs; a missing staging branch is not an error (it is made by the first push).
fn fetch_refs(
    name: &str,
    url: &str,
    cache: &Path,
    refspecs: &[String],
    staging: &str,
) -> Result<(), ForgeError> {
    let run = |specs: &[String]| {
        std::process::Command::new("git")
            .arg("--git-dir")
            .arg(cache)
            .args(["fetch", "--no-tags", "--quiet", "--no-write-fetch-head"])
            .arg(url)
            .args(specs)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
    };
    let fail = |message: String| ForgeError::Fetch {
        repo: name.to_string(),
        url: super::git::redact_url(url),
        message: super::git::redact_url(&message),
    };
    let out = run(refspecs).map_err(|e| fail(format!("cannot run `git`: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    // Again without the staging branch, which may not exist yet.
    let without: Vec<String> = refspecs
        .iter()
        .filter(|s| !s.starts_with(&format!("+refs/heads/{staging}:")))
        .cloned()
        .collect();
    let out = run(&without).map_err(|e| fail(format!("cannot run `git`: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
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
