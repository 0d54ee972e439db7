//! The GitHub client's network behaviour against the fake GitHub on 127.0.0.1: where the token
//! goes, duplicate PRs across pages, staleness, timeouts and errors, and which requests are
//! retried.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fake_github::{Fake, Pr, Shared, TOKEN, add_pr, add_pr_committed_at, pr};
use kcideploy::config::Config;
use kcideploy::forge::github::GitHub;
use kcideploy::planner::{CycleRequest, ExclusionReason};
use kcideploy::workspace::{PlanRequest, Workspace};

fn plan_text(api: &str, timeouts: &str) -> String {
    format!(
        r#"version: 1
name: t
github: {{ api_url: "{api}", token_env: KCI_TEST_TOKEN, max_wait: 30s }}
timeouts: {{ {timeouts} }}
repos:
  core:
    url: repos/core.git
    forge: github
    github_repo: kernelci/core
    pending:
      trusted: [alice, bob]
      max_age: 14d
components:
  config: {{ repo: core, paths: ["config/**"] }}
steps:
  restart: {{ kind: command, on: [config], with: {{ run: ["true"] }} }}
"#
    )
}

fn setup() -> (Fixture, Remote, Shared, String) {
    let fx = Fixture::new();
    let remote = fx.repo("core", &[("config/a.yaml", Some("a: 1\n"))]);
    let fake: Shared = Arc::new(Mutex::new(Fake::default()));
    let api = fake_github::start(fake.clone());
    assert_eq!(
        std::env::var("KCI_TEST_TOKEN").as_deref(),
        Ok(TOKEN),
        "set by .cargo/config.toml"
    );
    (fx, remote, fake, api)
}

/// Fetch and plan; the error with its causes, as text.
fn try_plan(fx: &Fixture, config: &Config) -> Result<kcideploy::planner::Plan, String> {
    let ws = Workspace::load(&config.path, Some(&fx.path().join("cache")))
        .map_err(|e| format!("{e:?}"))?;
    let request = PlanRequest {
        cycle: CycleRequest::Partial,
        now: Some(now()),
        ..Default::default()
    };
    ws.fetch_and_plan(&request)
        .map(|(_, plan)| plan)
        .map_err(|e| format!("{e:?}"))
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Each request's headers.
type Seen = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// A server on 127.0.0.1 that records the headers of every request and answers `[]`.
fn recorder() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let log = log.clone();
        async move {
            let h = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            log.lock().expect("log").push(h);
            ([("content-type", "application/json")], "[]")
        }
    });
    (serve(app), seen)
}

#[test]
fn the_token_is_never_sent_to_a_next_link_on_another_host() {
    let (fx, remote, fake, api) = setup();
    let (other, seen) = recorder();
    for n in 1..=2 {
        add_pr(
            &fake,
            &remote,
            pr(n, "alice"),
            &[("config/a.yaml", Some("a\n"))],
        );
    }
    {
        let mut f = fake.lock().expect("fake");
        f.max_per_page = Some(1);
        f.next_host = Some(other.trim_start_matches("http://").to_string());
    }
    let config = fx.config(&plan_text(&api, ""));
    let err = try_plan(&fx, &config).expect_err("a next link to another host is refused");
    let headers = seen.lock().expect("seen").clone();
    assert!(
        headers
            .iter()
            .flatten()
            .all(|(k, v)| k != "authorization" && !v.contains(TOKEN)),
        "the other host got the token: {headers:?}"
    );
    let api_host = api.trim_start_matches("http://");
    let other_host = other.trim_start_matches("http://");
    assert!(
        err.contains(api_host) && err.contains(other_host),
        "the error names both hosts: {err}"
    );
    assert!(!err.contains(TOKEN), "{err}");
    eprintln!("{err}");
}

#[test]
fn a_pr_listed_twice_across_pages_is_one_change() {
    let (fx, remote, fake, api) = setup();
    for n in 1..=3 {
        let path = format!("config/{n}.yaml");
        add_pr(
            &fake,
            &remote,
            pr(n, "alice"),
            &[(path.as_str(), Some("x\n"))],
        );
    }
    {
        let mut f = fake.lock().expect("fake");
        f.max_per_page = Some(2);
        f.overlap_pages = true;
    }
    let config = fx.config(&plan_text(&api, ""));
    let plan = try_plan(&fx, &config).expect("plan");
    let requests = fake.lock().expect("fake").requests.clone();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/pulls?") && r.contains("page=2")),
        "the list took two pages: {requests:?}"
    );
    let repo = &plan.repos["core"];
    let included: Vec<&str> = repo.included.iter().map(|c| c.id.as_str()).collect();
    let excluded: Vec<&str> = repo.excluded.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(included, ["#1", "#2", "#3"], "excluded: {excluded:?}");
    assert!(excluded.is_empty(), "{excluded:?}");
}

#[test]
fn staleness_is_the_head_commit_age_not_updated_at() {
    let (fx, remote, fake, api) = setup();
    // Untouched for 30 days, but kcideploy's own comment refreshed `updated_at` an hour ago.
    add_pr_committed_at(
        &fake,
        &remote,
        Pr {
            updated_at: NOW - 3600,
            ..pr(1, "alice")
        },
        &[("config/a.yaml", Some("old\n"))],
        NOW - 30 * DAY,
    );
    add_pr(
        &fake,
        &remote,
        pr(2, "alice"),
        &[("config/b.yaml", Some("b\n"))],
    );
    let config = fx.config(&plan_text(&api, ""));
    let plan = try_plan(&fx, &config).expect("plan");
    let repo = &plan.repos["core"];
    let excluded: Vec<(&str, ExclusionReason)> = repo
        .excluded
        .iter()
        .map(|e| (e.id.as_str(), e.reason))
        .collect();
    assert_eq!(excluded, [("#1", ExclusionReason::Stale)]);
    let included: Vec<&str> = repo.included.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(included, ["#2"]);
}

#[test]
fn a_502_after_a_comment_post_does_not_post_it_twice() {
    let (fx, remote, fake, api) = setup();
    add_pr(
        &fake,
        &remote,
        pr(1, "alice"),
        &[("config/a.yaml", Some("a\n"))],
    );
    fake.lock().expect("fake").fail_after_comment_post = 1;
    let config = fx.config(&plan_text(&api, ""));
    let gh = GitHub::new(&config, &fx.path().join("cache")).expect("client");
    let body = serde_json::json!({"body": "hello"});
    let result = block_on(gh.post("/repos/kernelci/core/issues/1/comments", &body));
    let f = fake.lock().expect("fake");
    let posts = f.requests.iter().filter(|r| r.starts_with("POST ")).count();
    assert_eq!(posts, 1, "the POST is not repeated: {:?}", f.requests);
    assert_eq!(f.comments.get(&1).map(Vec::len), Some(1), "one comment");
    let err = result.expect_err("the 502 is reported");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(502), "{err}");
}

#[test]
fn a_get_answered_502_then_200_succeeds() {
    let (fx, remote, fake, api) = setup();
    add_pr(
        &fake,
        &remote,
        pr(7, "alice"),
        &[("config/a.yaml", Some("a\n"))],
    );
    fake.lock().expect("fake").fail_gets = 1;
    let config = fx.config(&plan_text(&api, ""));
    let gh = GitHub::new(&config, &fx.path().join("cache")).expect("client");
    let pr = block_on(gh.get_one("/repos/kernelci/core/pulls/7")).expect("retried");
    assert_eq!(pr["number"], 7);
    let f = fake.lock().expect("fake");
    let gets = f.requests.iter().filter(|r| r.starts_with("GET ")).count();
    assert_eq!(gets, 2, "{:?}", f.requests);
}

#[test]
fn a_silent_api_times_out_at_timeouts_github_and_the_error_names_host_and_cause() {
    let fx = Fixture::new();
    let host = silent_listener();
    let config = fx.config(&plan_text(&format!("http://{host}"), "github: 2s"));
    let gh = GitHub::new(&config, &fx.path().join("cache")).expect("client");
    let started = Instant::now();
    let err = block_on(gh.get_one("/repos/kernelci/core/pulls/1")).expect_err("times out");
    let text = err.to_string();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "timeouts.github bounds the call, retries included: {:?}",
        started.elapsed()
    );
    assert!(text.contains(&host), "names the host: {text}");
    assert!(text.contains("GET /repos/kernelci/core/pulls/1"), "{text}");
    assert!(
        text.contains("timed out: no answer within 2s (timeouts.github)"),
        "{text}"
    );
    eprintln!("{text}");
}

#[test]
fn an_unknown_host_error_says_dns() {
    let fx = Fixture::new();
    let config = fx.config(&plan_text("http://kcideploy-test.invalid", "github: 20s"));
    let gh = GitHub::new(&config, &fx.path().join("cache")).expect("client");
    let err = block_on(gh.get_one("/repos/kernelci/core/pulls/1")).expect_err("no such host");
    let text = err.to_string();
    assert!(text.contains("kcideploy-test.invalid"), "{text}");
    assert!(text.to_lowercase().contains("dns"), "the DNS cause: {text}");
    eprintln!("{text}");
}
