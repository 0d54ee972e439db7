//! PR plan previews from `serve` (#19 item 1) against the fake GitHub: a preview comment on
//! the PR when it is opened, edited in place on every push (one comment after three
//! pushes), and a `kcideploy/plan` commit status on each head.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;
#[path = "common/server.rs"]
mod server;

use std::sync::{Arc, Mutex};

use common::*;
use fake_github::{Fake, Shared, add_pr, pr};
use serde_json::{Value, json};
use server::{PATIENCE, Server, fixture};

/// A github-forge repo on the fake, the last full cycle just done (nothing deploys), and
/// PR #7 by alice (trusted) changing config/.
fn setup() -> (Fixture, Shared, Remote, std::path::PathBuf) {
    let fx = Fixture::new();
    let remote = fx.repo("core", &[("config/a.yaml", Some("a: 1\n"))]);
    let fake: Shared = Arc::new(Mutex::new(Fake::default()));
    let api = fake_github::start(fake.clone());
    let plan = fx.plan_file(&format!(
        r#"version: 1
name: staging
policy: {{ settle: 1h, cooldown: 1h, full_cycle_interval: 6h }}
github: {{ api_url: "{api}", token_env: KCI_TEST_TOKEN }}
repos:
  core:
    url: repos/core.git
    forge: github
    github_repo: kernelci/core
    pending: {{ trusted: [alice] }}
components:
  config: {{ repo: core, paths: ["config/**"] }}
  docs: {{ repo: core, paths: ["doc/**"] }}
steps:
  restart: {{ kind: command, on: [config], with: {{ run: ["true"] }} }}
  publish-docs: {{ kind: command, on: [docs], with: {{ run: ["true"] }} }}
"#
    ));
    let config = kcideploy::config::Config::load(&plan).expect("config");
    let mut state = kcideploy::state::State::default();
    state.cycles.last_full = Some(jiff::Timestamp::now());
    state.repos.insert(
        "core".into(),
        kcideploy::state::RepoState {
            deployed: remote.main.to_string(),
            base: Some(remote.main.to_string()),
            included: Vec::new(),
            deployed_at: None,
        },
    );
    kcideploy::state::Backend::open(&config)
        .expect("backend")
        .write(&mut state)
        .expect("state");
    (fx, fake, remote, plan)
}

/// Push `edits` to PR #7 (a new head; the fake lists the PR with it); the head.
fn push(fake: &Shared, remote: &Remote, edits: &[(&str, Option<&str>)]) -> String {
    fake.lock()
        .expect("fake")
        .prs
        .retain(|p| p["number"] != json!(7));
    add_pr(fake, remote, pr(7, "alice"), edits)
}

fn event(server: &Server, action: &str, delivery: &str, head: &str) {
    let mut body = fixture(&format!("pull_request.{action}"));
    body["repository"]["full_name"] = json!("kernelci/core");
    body["pull_request"]["number"] = json!(7);
    body["number"] = json!(7);
    body["pull_request"]["head"]["sha"] = json!(head);
    body["pull_request"]["base"]["ref"] = json!("main");
    let (code, text) = server.post("pull_request", delivery, &body);
    assert_eq!(code, 202, "{text}");
}

fn preview_comments(fake: &Shared) -> Vec<String> {
    fake.lock()
        .expect("fake")
        .comments
        .get(&7)
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["body"].as_str().map(String::from))
        .filter(|b| b.contains("<!-- kcideploy-preview:staging:core -->"))
        .collect()
}

fn plan_statuses(fake: &Shared) -> Vec<(String, Value)> {
    fake.lock()
        .expect("fake")
        .status_bodies
        .iter()
        .filter(|(_, b)| b["context"] == "kcideploy/plan")
        .cloned()
        .collect()
}

#[test]
fn one_preview_comment_edited_in_place_and_a_status_on_each_head() {
    let (_fx, fake, remote, plan) = setup();
    let server = Server::start_with_env(&plan, &[], &[("KCI_TEST_TOKEN", fake_github::TOKEN)]);
    let wait_status = |head: &str| {
        let start = std::time::Instant::now();
        while !plan_statuses(&fake).iter().any(|(sha, _)| sha == head) {
            assert!(
                start.elapsed() < PATIENCE,
                "no status on {head}; log:\n{}",
                server.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let pushes: [&[(&str, Option<&str>)]; 3] = [
        &[("config/a.yaml", Some("a: 2\n"))],
        &[("doc/x.md", Some("x\n"))],
        &[("config/a.yaml", Some("a: 3\n")), ("doc/x.md", Some("y\n"))],
    ];
    // Opened, then two pushes; each preview as the PR is at that head.
    let mut bodies = Vec::new();
    let mut heads = Vec::new();
    for (i, edits) in pushes.iter().enumerate() {
        let head = push(&fake, &remote, edits);
        let action = if i == 0 { "opened" } else { "synchronize" };
        event(&server, action, &format!("d-{i}"), &head);
        wait_status(&head);
        let comments = preview_comments(&fake);
        assert_eq!(
            comments.len(),
            1,
            "one preview comment, edited: {comments:#?}"
        );
        bodies.push(comments[0].clone());
        heads.push(head);
    }
    assert!(
        bodies[0].contains("`restart` (command): #7 → config/a.yaml"),
        "{}",
        bodies[0]
    );
    assert!(!bodies[0].contains("publish-docs"), "{}", bodies[0]);
    assert!(
        bodies[1].contains("`publish-docs`") && !bodies[1].contains("`restart`"),
        "{}",
        bodies[1]
    );
    assert!(
        bodies[2].contains("`publish-docs`") && bodies[2].contains("`restart`"),
        "{}",
        bodies[2]
    );
    let statuses = plan_statuses(&fake);
    for head in &heads {
        let (_, body) = statuses
            .iter()
            .find(|(sha, _)| sha == head)
            .expect("a status on the head");
        assert_eq!(body["state"], "success", "{body}");
        assert!(
            body["description"]
                .as_str()
                .is_some_and(|d| d.contains("step(s) would run; merges cleanly")),
            "{body}"
        );
    }
}
