//! `pending.require_checks` and `ci_covers` against the fake GitHub: a PR's own CI keeps it
//! out (`checks`, naming the checks) or waiting (`waiting for checks`); a finished check's
//! webhook re-plans in `serve`; a change its CI covers is told so and not deployed.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;
#[path = "common/server.rs"]
mod server;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use fake_github::{Fake, Shared, add_pr, pr, set_check_run, set_status};
use kcideploy::planner::{CycleRequest, ExclusionReason};
use serde_json::{Value, json};
use server::{PATIENCE, Server};

const GREEN: (&str, Option<&str>) = ("completed", Some("success"));
const RED: (&str, Option<&str>) = ("completed", Some("failure"));
const RUNNING: (&str, Option<&str>) = ("in_progress", None);

/// A github repo gated on `build` and `e2e`; `api/**` is covered by its CI.
fn plan_text(api: &str, policy: &str, log: &str) -> String {
    format!(
        r#"version: 1
name: staging
github: {{ api_url: "{api}", token_env: KCI_TEST_TOKEN, max_wait: 30s }}
policy: {{ {policy} }}
repos:
  core:
    url: repos/core.git
    forge: github
    github_repo: kernelci/core
    pending:
      require_checks: [build, e2e]
components:
  config: {{ repo: core, paths: ["config/**"] }}
  api: {{ repo: core, paths: ["api/**"], ci_covers: true }}
steps:
  restart: {{ kind: command, on: [config], with: {{ run: ["sh", "-c", "echo restart >> {log}"] }} }}
  deploy-api: {{ kind: command, on: [api], with: {{ run: ["sh", "-c", "echo api >> {log}"] }} }}
"#
    )
}

fn setup() -> (Fixture, Remote, Shared, String) {
    let fx = Fixture::new();
    let remote = fx.repo(
        "core",
        &[
            ("config/a.yaml", Some("a: 1\n")),
            ("api/main.py", Some("v1\n")),
        ],
    );
    let fake: Shared = Arc::new(Mutex::new(Fake::default()));
    let api = fake_github::start(fake.clone());
    (fx, remote, fake, api)
}

#[test]
fn red_missing_and_running_checks_keep_prs_out_with_the_checks_named() {
    let (fx, remote, fake, api) = setup();
    let red = add_pr(
        &fake,
        &remote,
        pr(1, "alice"),
        &[("config/r.yaml", Some("r\n"))],
    );
    set_check_run(&fake, &red, "build", GREEN);
    set_check_run(&fake, &red, "e2e", RED);
    let running = add_pr(
        &fake,
        &remote,
        pr(2, "alice"),
        &[("config/w.yaml", Some("w\n"))],
    );
    set_check_run(&fake, &running, "build", GREEN);
    set_check_run(&fake, &running, "e2e", RUNNING);
    let missing = add_pr(
        &fake,
        &remote,
        pr(3, "alice"),
        &[("config/m.yaml", Some("m\n"))],
    );
    set_check_run(&fake, &missing, "build", GREEN);
    // Green: `e2e` as a commit status, an unrequired check failing, and kcideploy's own
    // failure status from an earlier deploy: neither counts.
    let green = add_pr(
        &fake,
        &remote,
        pr(4, "alice"),
        &[("config/g.yaml", Some("g\n"))],
    );
    set_check_run(&fake, &green, "build", GREEN);
    set_check_run(&fake, &green, "lint", RED);
    set_status(&fake, &green, "e2e", "success");
    set_status(&fake, &green, "kcideploy/staging", "failure");
    let covered = add_pr(
        &fake,
        &remote,
        pr(5, "alice"),
        &[("api/main.py", Some("v2\n"))],
    );
    set_check_run(&fake, &covered, "build", GREEN);
    set_check_run(&fake, &covered, "e2e", GREEN);
    let both = add_pr(
        &fake,
        &remote,
        pr(6, "alice"),
        &[("api/x.py", Some("x\n")), ("config/b.yaml", Some("b\n"))],
    );
    set_check_run(&fake, &both, "build", GREEN);
    set_status(&fake, &both, "e2e", "success");
    // Many check runs: every page is read.
    for n in 0..5 {
        set_check_run(&fake, &both, &format!("extra-{n}"), GREEN);
    }
    fake.lock().expect("fake").max_per_page = Some(2);

    let config = fx.config(&plan_text(&api, "settle: 0s", "/dev/null"));
    let plan = fx.plan(&config, CycleRequest::Partial);
    let repo = &plan.repos["core"];
    let included: Vec<&str> = repo.included.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(included, ["#4", "#6"], "{:#?}", repo.excluded);
    let excluded: Vec<(&str, ExclusionReason, &str)> = repo
        .excluded
        .iter()
        .map(|e| (e.id.as_str(), e.reason, e.detail.as_str()))
        .collect();
    assert_eq!(
        excluded[..3],
        [
            (
                "#1",
                ExclusionReason::Checks,
                "failed: e2e (failure); passed: build"
            ),
            (
                "#2",
                ExclusionReason::WaitingForChecks,
                "running: e2e (in_progress); passed: build"
            ),
            ("#3", ExclusionReason::Checks, "missing: e2e; passed: build"),
        ]
    );
    assert_eq!(excluded[3].0, "#5");
    assert_eq!(excluded[3].1, ExclusionReason::CoveredByCi);
    assert!(excluded[3].2.contains("(api)"), "{}", excluded[3].2);
    let text = kcideploy::planner::render::text(&plan, false);
    assert!(
        text.contains("#2") && text.contains("waiting for checks: running: e2e (in_progress)"),
        "{text}"
    );
    assert!(text.contains("checks: failed: e2e (failure)"), "{text}");

    // A second plan asks again with the ETags: every check answer is a free 304.
    let before = fake.lock().expect("fake").not_modified;
    fx.plan(&config, CycleRequest::Partial);
    let f = fake.lock().expect("fake");
    let check_gets = f
        .requests
        .iter()
        .filter(|r| r.contains("/check-runs") || r.contains("/status?"))
        .count();
    assert!(check_gets >= 2 * 6 * 2, "{:#?}", f.requests);
    assert!(
        f.not_modified - before >= 12,
        "check runs and statuses of 6 PRs again: {} 304s",
        f.not_modified - before
    );
}

/// The report of a plan file that does not load, on one line.
fn load_error(path: &std::path::Path) -> String {
    let report = kcideploy::config::Config::load(path)
        .err()
        .map(miette::Report::new);
    format!("{report:?}")
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_plan_file_requiring_checks_is_validated() {
    let fx = Fixture::new();
    fx.repo("core", &[("api/main.py", Some("v1\n"))]);
    let path = fx.plan_file(
        "version: 1\nname: t\nrepos:\n  core: { url: repos/core.git }\ncomponents:\n  api: { repo: core, paths: [\"api/**\"], ci_covers: true }\nsteps: {}\n",
    );
    let err = load_error(&path);
    assert!(
        err.contains(
            "component `api` is `ci_covers` but repo `core` has no `pending.require_checks`"
        ),
        "{err}"
    );
    let bad = fx.plan_file(
        "version: 1\nname: t\nrepos:\n  core: { url: repos/core.git, pending: { require_checks: every } }\ncomponents: {}\nsteps: {}\n",
    );
    let err = load_error(&bad);
    assert!(err.contains("expected `all` or a list"), "{err}");
}

/// A `check_run` `completed` delivery for `head` of kernelci/core.
fn check_run_event(name: &str, head: &str, conclusion: &str) -> Value {
    let mut event = server::fixture("check_run.completed");
    event["repository"]["full_name"] = json!("kernelci/core");
    event["check_run"]["name"] = json!(name);
    event["check_run"]["head_sha"] = json!(head);
    event["check_run"]["conclusion"] = json!(conclusion);
    event
}

fn change<'a>(s: &'a Value, id: &str) -> &'a Value {
    s["changes"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["change"] == id))
        .unwrap_or_else(|| panic!("{id} not in {s:#}"))
}

fn comments(fake: &Shared, pr: u64) -> Vec<String> {
    fake.lock()
        .expect("fake")
        .comments
        .get(&pr)
        .into_iter()
        .flatten()
        .filter_map(|c| c["body"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_green_check_run_webhook_brings_a_red_pr_in_within_one_settle() {
    let (fx, remote, fake, api) = setup();
    let log = fx.path().join("runs.log");
    let red = add_pr(
        &fake,
        &remote,
        pr(1, "alice"),
        &[("config/r.yaml", Some("r\n"))],
    );
    set_check_run(&fake, &red, "build", GREEN);
    set_check_run(&fake, &red, "e2e", RED);
    let covered = add_pr(
        &fake,
        &remote,
        pr(2, "alice"),
        &[("api/main.py", Some("v2\n"))],
    );
    set_check_run(&fake, &covered, "build", GREEN);
    set_check_run(&fake, &covered, "e2e", GREEN);
    let settle = "settle: 2s, cooldown: 0s, full_cycle_interval: 6h";
    let plan = fx.plan_file(&plan_text(&api, settle, &log.display().to_string()));
    let config = kcideploy::config::Config::load(&plan).expect("config");
    fx.deploy(
        &config,
        &[("core", remote.main)],
        Some(jiff::Timestamp::now().as_second()),
    );

    let server = Server::start(&plan);
    // The PR opens: nothing to deploy, the PR is left out naming its red check.
    let mut opened = server::fixture("pull_request.opened");
    opened["repository"]["full_name"] = json!("kernelci/core");
    opened["pull_request"]["number"] = json!(1);
    opened["pull_request"]["head"]["sha"] = json!(red);
    assert_eq!(server.post("pull_request", "p-1", &opened).0, 202);
    let s = server.wait_for("the first deploy", PATIENCE, |s| {
        s["last"]["result"] == "nothing"
    });
    assert_eq!(change(&s, "#1")["state"], "checks", "{s:#}");
    assert_eq!(
        change(&s, "#1")["detail"],
        "failed: e2e (failure); passed: build"
    );
    assert_eq!(change(&s, "#2")["state"], "covered_by_ci", "{s:#}");
    assert!(!log.exists(), "nothing deployed");
    // The covered PR is told, with a success status, once.
    let told = comments(&fake, 2);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains("**Covered by CI, not deployed.**"),
        "{}",
        told[0]
    );
    assert!(
        fake.lock()
            .expect("fake")
            .statuses
            .contains(&(covered.clone(), "success".into())),
        "covered PR's status"
    );
    // kcideploy's own status on a head is no check: its webhook is not even queued.
    let mut own = server::fixture("status");
    own["repository"]["full_name"] = json!("kernelci/core");
    own["sha"] = json!(red);
    own["context"] = json!("kcideploy/staging");
    let (code, text) = server.post("status", "s-1", &own);
    assert_eq!(
        (code, text.as_str()),
        (202, "ignored: `status` (nothing to do)\n")
    );

    // CI goes green: one check_run webhook, and the next deploy, one settle later, has it.
    set_check_run(&fake, &red, "e2e", GREEN);
    let posted = jiff::Timestamp::now();
    let started = Instant::now();
    assert_eq!(
        server
            .post("check_run", "c-2", &check_run_event("e2e", &red, "success"))
            .0,
        202
    );
    let s = server.wait_for("the deploy with #1", PATIENCE, |s| {
        s["last"]["result"] == "success"
    });
    assert_eq!(change(&s, "#1")["state"], "included", "{s:#}");
    assert_eq!(change(&s, "#2")["state"], "covered_by_ci", "{s:#}");
    let begun: jiff::Timestamp = s["last"]["started_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("started_at");
    let waited = begun.duration_since(posted).as_secs_f64();
    assert!(
        (1.5..2.0 + 8.0).contains(&waited),
        "deployed {waited}s after the webhook, settle 2s; took {:?} in all",
        started.elapsed()
    );
    assert_eq!(
        std::fs::read_to_string(&log).expect("log"),
        "restart\n",
        "api not deployed"
    );
    let told = comments(&fake, 1);
    assert!(
        told.last().is_some_and(|c| c.contains("**Included**")),
        "{told:?}"
    );
    assert_eq!(
        comments(&fake, 2).len(),
        1,
        "the covered PR's comment, still one"
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn kcideploy_run_with_nothing_to_deploy_tells_the_covered_pr() {
    let (fx, remote, fake, api) = setup();
    let covered = add_pr(
        &fake,
        &remote,
        pr(1, "alice"),
        &[("api/main.py", Some("v2\n"))],
    );
    set_check_run(&fake, &covered, "build", GREEN);
    set_status(&fake, &covered, "e2e", "success");
    let log = fx.path().join("runs.log");
    let plan = fx.plan_file(&plan_text(&api, "cooldown: 0s", &log.display().to_string()));
    let config = kcideploy::config::Config::load(&plan).expect("config");
    fx.deploy(&config, &[("core", remote.main)], Some(NOW));
    for _ in 0..2 {
        let (code, out, err) = output(
            kcideploy()
                .args(["run", "-f"])
                .arg(&plan)
                .args(["--at", at().as_str()]),
        );
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("Nothing to do"), "{out}");
    }
    assert!(!log.exists(), "nothing deployed");
    let told = comments(&fake, 1);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains("**Covered by CI, not deployed.**"),
        "{}",
        told[0]
    );
    let f = fake.lock().expect("fake");
    assert_eq!(
        f.statuses,
        [(covered.clone(), "success".to_string())],
        "told once: the second run found the comment unchanged"
    );
    assert_eq!(f.patched, 0);
}
