//! Chat notifications (`notify.webhooks`): one message per cycle that ran a step, to each
//! Discord, Slack or Matrix room, in that chat's own format. Each post is bounded by
//! `timeouts.chat`, its retries included (the one policy, `support::retry`); it is retried only when sending it again cannot
//! post it twice (the request never reached the server, or the server refused it with 429
//! and asked to wait; Matrix's `PUT` with a transaction id is idempotent, so a 5xx is retried
//! there too). Secrets come from the environment and appear in no message: an error names
//! the chat's host and the cause, never the URL.

use std::time::{Duration, Instant};

use backon::Retryable;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::RunResults;
use crate::apply::events::StepResult;
use crate::config::{ChatKind, ChatWebhook, Config};
use crate::planner::Plan;
use crate::support::http::{host_of, no_answer};

/// The longest 429 wait honoured (more than that fails the post, within `timeouts.chat`).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(20);

/// What one cycle did, in words for people.
pub struct News {
    pub failed: bool,
    /// First line: plan, run, cycle, result.
    pub headline: String,
    /// The other lines: failed steps with why, the changes, the logs.
    pub lines: Vec<String>,
    /// Where the run's logs are, when `notify.logs_url` is set.
    pub url: Option<String>,
}

/// The news of a run (`None`: it ran no step, nothing to tell).
pub fn news(config: &Config, plan: &Plan, results: &RunResults<'_>) -> Option<News> {
    let ran: Vec<(&String, &(StepResult, u64))> = results
        .steps
        .iter()
        .filter(|(_, (r, _))| matches!(r, StepResult::Success | StepResult::Failed))
        .collect();
    if ran.is_empty() {
        return None;
    }
    let failed: Vec<&String> = results
        .steps
        .iter()
        .filter(|(_, (r, _))| *r == StepResult::Failed)
        .map(|(n, _)| n)
        .collect();
    let cancelled = results
        .steps
        .values()
        .any(|(r, _)| *r == StepResult::Cancelled);
    let outcome = match (failed.len(), cancelled) {
        (0, false) => format!("succeeded: {} step(s) ran", ran.len()),
        (0, true) => "was cancelled".to_string(),
        (n, _) => format!("failed: {n} of {} step(s) failed", ran.len()),
    };
    let headline = format!(
        "kcideploy {}: run {} ({} cycle) {outcome}",
        plan.name,
        results.run_id,
        plan.cycle.as_str()
    );
    let url = config
        .file
        .notify
        .logs_url
        .as_ref()
        .map(|base| format!("{}/{}/", base.trim_end_matches('/'), results.run_id));
    // A failed step is named with its log, never with its error text (it can hold paths,
    // hosts and tool output, and chat rooms are often public), as in PR comments.
    let mut lines = Vec::new();
    for step in &failed {
        let log = format!("{}.log", crate::config::names::file_name(step));
        lines.push(match &url {
            Some(url) => format!("failed: {step} (log: {url}{log})"),
            None => format!(
                "failed: {step} (its log {log} of run {}, and `kcideploy state history`)",
                results.run_id
            ),
        });
    }
    for (repo, r) in &plan.repos {
        for c in &r.included {
            lines.push(format!(
                "change: {repo}{} by {}: {}",
                c.id,
                c.author,
                crate::support::text::clip(&c.title, 100)
            ));
        }
        for e in &r.excluded {
            lines.push(format!(
                "left out: {repo}{} by {}: {}",
                e.id, e.author, e.detail
            ));
        }
    }
    if let Some(stop) = stopped_line(plan, &results.steps) {
        lines.push(stop);
    }
    if let Some(url) = &url {
        lines.push(format!("logs: {url}"));
    }
    Some(News {
        failed: !failed.is_empty() || cancelled,
        headline,
        lines,
        url,
    })
}

/// When a `when_failed` step of the run succeeded (the line is stopped): what to do next.
pub fn stopped_line(
    plan: &Plan,
    steps: &std::collections::BTreeMap<String, (StepResult, u64)>,
) -> Option<String> {
    let stoppers: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| !s.when_failed.is_empty())
        .filter(|s| matches!(steps.get(&s.name), Some((StepResult::Success, _))))
        .map(|s| s.name.as_str())
        .collect();
    if stoppers.is_empty() {
        return None;
    }
    Some(format!(
        "the line is stopped ({} ran): `kcideploy rollback -f {plan_file}` goes back to the last good run; `kcideploy resume -f {plan_file}` starts it again once fixed",
        stoppers.join(", "),
        plan_file = plan.plan_file
    ))
}

/// Post the run's news to every webhook of the plan; warnings for those that failed.
pub async fn post_all(config: &Config, plan: &Plan, results: &RunResults<'_>) -> Vec<String> {
    let hooks = &config.file.notify.webhooks;
    let Some(news) = news(config, plan, results) else {
        return Vec::new();
    };
    let timeouts = &config.file.timeouts;
    let client = match crate::support::http::http_client(timeouts.connect.0) {
        Ok(c) => c,
        Err(e) => return vec![e],
    };
    let mut warnings = Vec::new();
    for (i, hook) in hooks.iter().enumerate() {
        if hook.only_failures && !news.failed {
            continue;
        }
        let txn = format!("kcideploy-{}-{}-{i}", plan.name, results.run_id);
        let post = Post {
            client: &client,
            limit: timeouts.chat.0,
            connect: timeouts.connect.0,
        };
        if let Err(e) = post.send(hook, &news, &txn).await {
            warnings.push(e);
        }
    }
    warnings
}

/// `&`, `<` and `>` escaped (Slack's mrkdwn, Matrix's HTML).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The request a chat wants: method, URL, bearer token, body.
fn request(
    hook: &ChatWebhook,
    news: &News,
    txn: &str,
) -> Result<(bool, String, Option<String>, Value), String> {
    let env = |name: &Option<String>| -> Result<String, String> {
        let name = name.as_deref().unwrap_or_default();
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| format!("${name} is not set"))
    };
    let body_text = news.lines.join("\n");
    match hook.kind {
        ChatKind::Discord => {
            let url = env(&hook.url_env)?;
            let sep = if url.contains('?') { '&' } else { '?' };
            let mut embed = json!({
                "title": crate::support::text::clip(&news.headline, 250),
                "description": crate::support::text::clip(&body_text, 4000),
                "color": if news.failed { 0xd73a49 } else { 0x2ea44f },
            });
            if let Some(u) = &news.url {
                embed["url"] = json!(u);
            }
            let body = json!({
                "content": crate::support::text::clip(&news.headline, 1900),
                "embeds": [embed],
                "allowed_mentions": { "parse": [] },
            });
            Ok((false, format!("{url}{sep}wait=true"), None, body))
        }
        ChatKind::Slack => {
            let url = env(&hook.url_env)?;
            let body = json!({
                "text": escape(&news.headline),
                "blocks": [
                    { "type": "section", "text": { "type": "mrkdwn", "text": format!("*{}*", escape(&news.headline)) } },
                    { "type": "section", "text": { "type": "mrkdwn", "text": escape(&body_text) } },
                ],
            });
            Ok((false, url, None, body))
        }
        ChatKind::Matrix => {
            let token = env(&hook.token_env)?;
            let base = hook
                .homeserver
                .as_deref()
                .unwrap_or_default()
                .trim_end_matches('/');
            let room = hook.room.as_deref().unwrap_or_default();
            let url = format!(
                "{base}/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                crate::support::text::percent_encode(room),
                crate::support::text::percent_encode(txn)
            );
            let html = std::iter::once(format!("<b>{}</b>", escape(&news.headline)))
                .chain(news.lines.iter().map(|l| escape(l)))
                .collect::<Vec<_>>()
                .join("<br>");
            let body = json!({
                "msgtype": "m.notice",
                "body": format!("{}\n{body_text}", news.headline),
                "format": "org.matrix.custom.html",
                "formatted_body": html,
            });
            Ok((true, url, Some(token), body))
        }
    }
}

struct Post<'a> {
    client: &'a reqwest::Client,
    limit: Duration,
    connect: Duration,
}

/// Why one attempt failed, and whether another may be made (after how long).
struct Failed {
    text: String,
    again: Option<Option<Duration>>,
}

impl Post<'_> {
    /// Post `news` to `hook` under the retry policy above.
    async fn send(&self, hook: &ChatWebhook, news: &News, txn: &str) -> Result<(), String> {
        let what = match hook.kind {
            ChatKind::Discord => "Discord webhook",
            ChatKind::Slack => "Slack webhook",
            ChatKind::Matrix => "Matrix room",
        };
        let (idempotent, url, token, body) =
            request(hook, news, txn).map_err(|e| format!("{what}: {e}"))?;
        let host = host_of(&url);
        let deadline = Instant::now() + self.limit;
        let attempt = || self.attempt(idempotent, &url, token.as_deref(), &body, deadline);
        let result = attempt
            .retry(crate::support::retry::backoff())
            .sleep(tokio::time::sleep)
            .when(|f: &Failed| f.again.is_some() && Instant::now() < deadline)
            .adjust(|f: &Failed, backoff| match f.again {
                Some(Some(wait)) => Some(wait),
                _ => backoff,
            })
            .await;
        result.map_err(|f| format!("{what} ({host}): {}", f.text))
    }

    async fn attempt(
        &self,
        idempotent: bool,
        url: &str,
        token: Option<&str>,
        body: &Value,
        deadline: Instant,
    ) -> Result<(), Failed> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failed {
                text: format!(
                    "no answer within {} (timeouts.chat)",
                    crate::support::text::age(self.limit.as_secs() as i64)
                ),
                again: None,
            });
        }
        let mut request = match idempotent {
            true => self.client.put(url),
            false => self.client.post(url),
        };
        request = request.json(body).timeout(left);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                // Sent again only if it cannot have arrived (no connection was made).
                let again = (idempotent || e.is_connect()).then_some(None);
                let e = e.without_url();
                return Err(Failed {
                    text: no_answer(&e, self.connect, (self.limit, "timeouts.chat")),
                    again,
                });
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after(response.headers());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let text = format!("{status}{}", detail(&body));
        let again = match status {
            // Refused and asked to wait: nothing was posted (Discord says how long in its body).
            StatusCode::TOO_MANY_REQUESTS => Some(Some(
                retry_after
                    .or_else(|| body["retry_after"].as_f64().map(Duration::from_secs_f64))
                    .unwrap_or(Duration::from_secs(1))
                    .min(MAX_RETRY_AFTER),
            )),
            s if s.is_server_error() && idempotent => Some(None),
            _ => None,
        };
        Err(Failed { text, again })
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .map(Duration::from_secs_f64)
}

/// What the chat said about a refusal, briefly (Discord's and Matrix's `message`/`error`).
fn detail(body: &Value) -> String {
    ["message", "error"]
        .iter()
        .find_map(|k| body[*k].as_str())
        .map(|m| format!(": {}", crate::support::text::clip(m, 200)))
        .unwrap_or_default()
}
