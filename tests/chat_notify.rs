//! `notify.webhooks` (#19 item 5): each cycle's result posted to Discord, Slack and Matrix in
//! each one's own format, to loopback receivers that answer as those services do; retried
//! only when that cannot post twice; secrets from the environment, in no output.

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::{Value, json};

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Got {
    method: String,
    path: String,
    query: String,
    auth: Option<String>,
    body: Value,
}

/// A chat receiver: what it got, and the statuses it answers with in turn (then `ok`).
#[derive(Default)]
struct Receiver {
    got: Vec<Got>,
    answers: Vec<(u16, Value, Option<&'static str>)>,
    ok: u16,
}

type Shared = Arc<Mutex<Receiver>>;

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut r = shared.lock().expect("receiver");
    r.got.push(Got {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        auth: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let (status, body, retry_after) = if r.answers.is_empty() {
        (r.ok, json!({}), None)
    } else {
        r.answers.remove(0)
    };
    let mut response = (
        StatusCode::from_u16(status).expect("status"),
        axum::Json(body),
    )
        .into_response();
    if let Some(wait) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", wait.parse().expect("header"));
    }
    response
}

fn receiver(ok: u16, answers: Vec<(u16, Value, Option<&'static str>)>) -> (Shared, String) {
    let shared: Shared = Arc::new(Mutex::new(Receiver {
        got: Vec::new(),
        answers,
        ok,
    }));
    let url = serve(
        axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone()),
    );
    (shared, url)
}

const DISCORD_TOKEN: &str = "discord-secret-token-123";
const SLACK_TOKEN: &str = "slack-secret-XYZ";
const MATRIX_TOKEN: &str = "syt_matrix_secret";

/// A plan with a step that succeeds and one that fails (`fail`), and the three webhooks.
fn plan(fx: &Fixture, fail: bool, matrix: &str) -> std::path::PathBuf {
    fx.repo("pipe", &[("config/a", Some("1\n"))]);
    let run = if fail { "false" } else { "true" };
    fx.plan_file(&format!(
        r#"version: 1
name: t
repos:
  pipe: {{ url: repos/pipe.git }}
notify:
  logs_url: https://staging.example.org/runs
  webhooks:
    - {{ kind: discord, url_env: KCI_TEST_DISCORD }}
    - {{ kind: slack, url_env: KCI_TEST_SLACK }}
    - {{ kind: matrix, homeserver: "{matrix}", room: "!room:example.org", token_env: KCI_TEST_MATRIX }}
timeouts: {{ chat: 10s }}
steps:
  build:
    kind: command
    always: true
    with: {{ run: ["true"] }}
  restart:
    kind: command
    always: true
    needs: [build]
    with: {{ run: ["{run}"] }}
"#
    ))
}

fn apply(plan: &std::path::Path, discord: &str, slack: &str) -> (i32, String) {
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "-f"])
            .arg(plan)
            .env(
                "KCI_TEST_DISCORD",
                format!("{discord}/api/webhooks/42/{DISCORD_TOKEN}"),
            )
            .env(
                "KCI_TEST_SLACK",
                format!("{slack}/services/T0/B0/{SLACK_TOKEN}"),
            )
            .env("KCI_TEST_MATRIX", MATRIX_TOKEN)
            .env("RUST_LOG", "warn"),
    );
    (code, format!("{out}{err}"))
}

#[test]
fn a_failed_cycle_is_posted_to_each_chat_in_its_own_format() {
    let fx = Fixture::new();
    let (discord, d_url) = receiver(200, vec![]);
    let (slack, s_url) = receiver(200, vec![]);
    let (matrix, m_url) = receiver(200, vec![]);
    let plan = plan(&fx, true, &m_url);
    let (code, out) = apply(&plan, &d_url, &s_url);
    assert_ne!(code, 0, "{out}");
    for secret in [DISCORD_TOKEN, SLACK_TOKEN, MATRIX_TOKEN] {
        assert!(!out.contains(secret), "a secret in the output: {out}");
    }

    let d = discord.lock().expect("d").got.clone();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].method, "POST");
    assert_eq!(d[0].path, format!("/api/webhooks/42/{DISCORD_TOKEN}"));
    assert_eq!(d[0].query, "wait=true");
    let content = d[0].body["content"].as_str().expect("content");
    assert!(
        content.starts_with("kcideploy t: run ")
            && content.contains("failed: 1 of 2 step(s) failed"),
        "{content}"
    );
    let embed = &d[0].body["embeds"][0];
    assert_eq!(embed["color"], 0xd73a49);
    assert!(
        embed["description"].as_str().is_some_and(|t| t
            .contains("failed: restart (log: https://staging.example.org/runs/")
            && t.contains("/restart.log)")),
        "{embed}"
    );
    assert!(
        embed["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://staging.example.org/runs/")),
        "{embed}"
    );
    assert_eq!(d[0].body["allowed_mentions"], json!({"parse": []}));

    let s = slack.lock().expect("s").got.clone();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].path, format!("/services/T0/B0/{SLACK_TOKEN}"));
    assert!(
        s[0].body["text"]
            .as_str()
            .is_some_and(|t| t.contains("failed"))
    );
    assert_eq!(s[0].body["blocks"][0]["text"]["type"], "mrkdwn");

    let m = matrix.lock().expect("m").got.clone();
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].method, "PUT");
    assert!(
        m[0].path.starts_with(
            "/_matrix/client/v3/rooms/%21room%3Aexample.org/send/m.room.message/kcideploy-t-"
        ),
        "{}",
        m[0].path
    );
    assert_eq!(
        m[0].auth.as_deref(),
        Some(format!("Bearer {MATRIX_TOKEN}").as_str())
    );
    assert_eq!(m[0].body["msgtype"], "m.notice");
    assert_eq!(m[0].body["format"], "org.matrix.custom.html");
    assert!(
        m[0].body["formatted_body"]
            .as_str()
            .is_some_and(|h| h.starts_with("<b>kcideploy t: run ")),
        "{}",
        m[0].body
    );
}

#[test]
fn rate_limits_are_waited_out_and_only_idempotent_posts_are_repeated_after_a_5xx() {
    let fx = Fixture::new();
    // Discord: 429 with its JSON retry_after, then 200: one message, posted after the wait.
    let (discord, d_url) = receiver(
        200,
        vec![(
            429,
            json!({"message": "You are being rate limited.", "retry_after": 0.3}),
            None,
        )],
    );
    // Slack: a 500 after a POST may have posted: not repeated, a warning naming the host.
    let (slack, s_url) = receiver(200, vec![(500, json!({}), None)]);
    // Matrix: a 502 then 200: the same transaction id again (the server deduplicates).
    let (matrix, m_url) = receiver(200, vec![(502, json!({}), Some("0"))]);
    let plan = plan(&fx, false, &m_url);
    let (code, out) = apply(&plan, &d_url, &s_url);
    assert_eq!(code, 0, "a chat that fails does not fail the deploy: {out}");
    let d = discord.lock().expect("d").got.clone();
    assert_eq!(d.len(), 2, "sent again after the 429: {d:?}");
    assert_eq!(d[1].body["embeds"][0]["color"], 0x2ea44f);
    let s = slack.lock().expect("s").got.clone();
    assert_eq!(s.len(), 1, "a POST answered 500 is not repeated: {s:?}");
    let host = s_url.trim_start_matches("http://");
    assert!(
        out.contains(&format!(
            "Slack webhook ({host}): 500 Internal Server Error"
        )),
        "{out}"
    );
    assert!(!out.contains(SLACK_TOKEN), "{out}");
    let m = matrix.lock().expect("m").got.clone();
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[0].path, m[1].path, "one transaction id for both attempts");
}

#[test]
fn only_failures_and_a_missing_secret_and_bad_settings() {
    let fx = Fixture::new();
    let (discord, d_url) = receiver(200, vec![]);
    let (slack, s_url) = receiver(200, vec![]);
    let (_matrix, m_url) = receiver(200, vec![]);
    let text = std::fs::read_to_string(plan(&fx, false, &m_url)).expect("plan");
    let text = text.replace(
        "url_env: KCI_TEST_DISCORD }",
        "url_env: KCI_TEST_DISCORD, only_failures: true }",
    );
    let path = fx.plan_file(&text);
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "-f"])
            .arg(&path)
            .env("KCI_TEST_SLACK", format!("{s_url}/services/x"))
            .env("KCI_TEST_DISCORD", format!("{d_url}/api/webhooks/1/t"))
            .env_remove("KCI_TEST_MATRIX"),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        discord.lock().expect("d").got.is_empty(),
        "a success is not a failure"
    );
    assert_eq!(slack.lock().expect("s").got.len(), 1);
    assert!(
        err.contains("Matrix room: $KCI_TEST_MATRIX is not set"),
        "{err}"
    );
    // Settings that do not fit the kind, and a secret written in place of a variable name.
    for (bad, message) in [
        (
            text.replace("kind: discord, url_env: KCI_TEST_DISCORD", "kind: discord"),
            "a `discord` webhook needs `url_env`",
        ),
        (
            text.replace(
                "kind: slack, url_env: KCI_TEST_SLACK",
                "kind: slack, url_env: KCI_TEST_SLACK, room: x",
            ),
            "`room` is not a setting of a `slack` webhook",
        ),
        (
            text.replace(
                "url_env: KCI_TEST_SLACK",
                "url_env: \"https://hooks.slack.com/services/T/B/secret\"",
            ),
            "is not the name of an environment variable",
        ),
    ] {
        let path = fx.plan_file(&bad);
        let (code, _, err) = output(kcideploy().args(["validate", "-f"]).arg(&path));
        assert_ne!(code, 0);
        assert!(err.contains(message) && err.contains("plan.yaml:"), "{err}");
    }
}
