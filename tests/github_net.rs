//! The GitHub client's network behaviour against the fake GitHub on 127.0.0.1: where the token
//! goes, duplicate PRs across pages, staleness, timeouts and errors, and which requests are
//! retried.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;

use std::sync::{Arc, Mutex};

use common::*;
use fake_github::{Fake, Pr, Shared, TOKEN, add_pr, add_pr_committed_at, pr};
use kcideploy::config::Config;
use kcideploy::planner::{CycleRequest, ExclusionReason};
use kcideploy::workspace::{PlanRequest, Workspace};

fn plan_text(api: &str) -> String {
    format!(
        r#"version: 1
name: t
github: {{ api_url: "{api}", token_env: KCI_TEST_TOKEN, max_wait: 30s }}
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
    let config = fx.config(&plan_text(&api));
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
    let config = fx.config(&plan_text(&api));
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
