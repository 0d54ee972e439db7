//! `kcideploy serve` when things go wrong: a deploy that cannot run, a cron tick during a
//! full cycle, GitHub's rate limit under the bot, steps that need a person; and KernelCI
//! results that come over many pages. Real processes
//! on 127.0.0.1, real git repos, the fake GitHub; every wait is for an event the test can
//! see, under a generous ceiling.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;
#[path = "common/fake_kernelci.rs"]
mod fake_kernelci;
#[path = "common/server.rs"]
mod server;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use fake_github::{Fake, Shared, add_pr, pr};
use fake_kernelci::{FakeKci, SharedKci};
use serde_json::{Value, json};
use server::{PATIENCE, Server, fixture};

fn setup(policy: &str, steps: &str, last_full_ago: i64) -> (Fixture, PathBuf) {
    server::hello_world_plan(policy, steps, last_full_ago)
}

fn runs_log(fx: &Fixture) -> String {
    std::fs::read_to_string(fx.path().join("runs.log")).unwrap_or_default()
}

/// Wait until `ok()` holds, or fail after [`PATIENCE`] saying `what`.
fn wait_until(what: &str, ok: impl Fn() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn state_json(fx: &Fixture) -> Value {
    serde_json::to_value(fx.backend("staging").read().expect("state")).expect("state JSON")
}

/// A step that logs `start`, then runs until `LOG.go` exists.
const HELD_STEP: &str = r#"  restart: { kind: command, on: [config], always: true, with: { run: ["sh", "-c", "echo start >> LOG; while [ ! -f LOG.go ]; do sleep 0.05; done"] } }
"#;

#[test]
fn a_deploy_that_cannot_take_the_lock_fails_keeps_its_events_and_a_later_deploy_covers_them() {
    let (fx, plan) = setup(
        "settle: 0s, cooldown: 1s, full_cycle_interval: 6h",
        HELD_STEP,
        0,
    );
    // A manual apply holds the state lock while its step runs.
    let mut manual = Command::new(env!("CARGO_BIN_EXE_kcideploy"))
        .args(["apply", "-auto-approve", "-f"])
        .arg(&plan)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("manual apply");
    wait_until("the manual apply's step", || runs_log(&fx) == "start\n");

    let server = Server::start_with(&plan, &["--lock-timeout", "1s"]);
    assert_eq!(
        server
            .post("pull_request", "l-1", &fixture("pull_request.opened"))
            .0,
        202
    );
    let s = server.wait_for("the failed deploy", PATIENCE, |s| {
        s["last"]["result"].is_string()
    });
    // Checked while the manual apply still holds the lock: nothing can have succeeded.
    assert_eq!(s["last"]["result"], "error", "{s:#}\n{}", server.log());
    let error = s["last"]["error"].as_str().unwrap_or("");
    assert!(error.contains("the state is locked"), "{s:#}");
    assert_eq!(s["queue"], 1, "the event is kept: {s:#}");
    assert!(s["next_deploy"].is_string(), "and retried: {s:#}");
    assert!(
        server
            .metrics()
            .contains("kcideploy_deploys_total{cycle=\"partial\",result=\"error\"}"),
        "{}",
        server.metrics()
    );
    assert_eq!(runs_log(&fx), "start\n", "the server ran no step");

    // The lock is free once the manual apply ends: a later deploy covers the event.
    std::fs::write(fx.path().join("runs.log.go"), "").expect("go");
    assert!(manual.wait().expect("manual apply").success());
    let s = server.wait_for("a deploy after the lock is free", PATIENCE, |s| {
        s["last"]["result"] != "error" && s["last"]["result"].is_string()
    });
    // The step is `always: true`: the server's deploy runs it once more, after the manual
    // apply's.
    assert_eq!(s["last"]["result"], "success", "{s:#}\n{}", server.log());
    assert_eq!(s["queue"], 0, "the event is covered: {s:#}");
    assert_eq!(s["changes"][0]["change"], "staging-fix", "{s:#}");
    assert_eq!(runs_log(&fx), "start\nstart\n");
}

#[test]
fn a_cron_tick_during_a_running_full_cycle_queues_no_other() {
    // A full cycle is due at start (the last was 7h ago); the cron ticks every second for a
    // few seconds after that, then not for about a minute.
    let base = jiff::Timestamp::now().as_second();
    let ticks: Vec<i64> = (3..=8).map(|k| base + k).collect();
    let seconds: Vec<String> = ticks.iter().map(|t| (t % 60).to_string()).collect();
    let (fx, plan) = setup(
        &format!(
            "settle: 0s, cooldown: 1h, full_cycle_interval: 6h, schedule: \"{} * * * * *\"",
            seconds.join(",")
        ),
        HELD_STEP,
        7 * 3600,
    );
    let server = Server::start(&plan);
    let s = server.wait_for("the full cycle to run", PATIENCE, |s| {
        s["running"]["steps"]["restart"]["state"] == "running"
    });
    assert_eq!(s["running"]["cycle"], "full", "{s:#}");
    let started = s["running"]["started_at"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .expect("started_at");
    let last_tick = *ticks.last().expect("ticks");
    assert!(
        started.as_second() < last_tick,
        "the server started after the cron's ticks: nothing to test ({s:#})"
    );
    // Every tick has passed while the cycle runs.
    let s = server.wait_for("the cron's ticks to pass", PATIENCE, |s| {
        s["schedule_next"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .is_some_and(|t| t.as_second() > last_tick)
    });
    assert_eq!(s["running"]["cycle"], "full", "still running: {s:#}");

    std::fs::write(fx.path().join("runs.log.go"), "").expect("go");
    let s = server.wait_for("the full cycle to end", PATIENCE, |s| {
        s["last"]["result"].is_string()
    });
    assert_eq!(s["last"]["result"], "success", "{s:#}\n{}", server.log());
    // An event the worker handles after it acted on the end of the cycle: if a tick had
    // been queued, another full cycle would be running or done by now.
    assert_eq!(
        server
            .post("pull_request", "c-1", &fixture("pull_request.opened"))
            .0,
        202
    );
    let s = server.wait_for("the event", PATIENCE, |s| s["queue"] == 1);
    assert!(s["running"].is_null(), "another cycle runs: {s:#}");
    assert_eq!(runs_log(&fx), "start\n", "one full cycle");
    let metrics = server.metrics();
    assert!(
        metrics.contains("kcideploy_deploys_total{cycle=\"full\",result=\"success\"} 1"),
        "{metrics}"
    );
    assert!(server.log().contains("a full cycle is running already"));
}

/// A plan on the fake GitHub (kernelci/core, PR #7 by mallory), alice a maintainer.
fn bot_setup(github_extra: &str) -> (Fixture, PathBuf, Shared, String) {
    let fx = Fixture::new();
    let remote = fx.repo("core", &[("config/a.yaml", Some("a: 1\n"))]);
    let fake: Shared = Arc::new(Mutex::new(Fake::default()));
    let api = fake_github::start(fake.clone());
    let head = add_pr(
        &fake,
        &remote,
        pr(7, "mallory"),
        &[("config/m.yaml", Some("m\n"))],
    );
    let plan = fx.plan_file(&format!(
        r#"version: 1
name: staging
policy: {{ settle: 1h, cooldown: 1h, full_cycle_interval: 6h }}
github: {{ api_url: "{api}", token_env: KCI_TEST_TOKEN{github_extra} }}
notify: false
server: {{ maintainers: [{{ login: alice, id: 1001 }}] }}
repos:
  core:
    url: repos/core.git
    forge: github
    github_repo: kernelci/core
    pending: {{ trusted: [alice] }}
components:
  config: {{ repo: core, paths: ["config/**"] }}
steps:
  restart: {{ kind: command, on: [config], with: {{ run: ["true"] }} }}
"#
    ));
    let config = kcideploy::config::Config::load(&plan).expect("config");
    let mut state = kcideploy::state::State::default();
    state.cycles.last_full = Some(jiff::Timestamp::now());
    kcideploy::state::Backend::open(&config)
        .expect("backend")
        .write(&mut state)
        .expect("state");
    (fx, plan, fake, head)
}

/// alice's comment on PR #7.
fn alice_says(body: &str) -> Value {
    let mut c = fixture("issue_comment.created");
    c["repository"]["full_name"] = json!("kernelci/core");
    c["issue"]["number"] = json!(7);
    c["issue"]["pull_request"] =
        json!({"url": "https://api.github.com/repos/kernelci/core/pulls/7"});
    c["comment"]["user"]["login"] = json!("alice");
    c["comment"]["user"]["id"] = json!(1001);
    c["comment"]["author_association"] = json!("MEMBER");
    c["comment"]["body"] = json!(body);
    c
}

fn replies(fake: &Shared) -> Vec<String> {
    fake.lock()
        .expect("fake")
        .comments
        .get(&7)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| c["body"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn the_bot_waits_out_a_short_rate_limit_but_never_more_than_15s() {
    // github.max_wait is the default (5m): the bot's own cap is what keeps it prompt.
    let (_fx, plan, fake, head) = bot_setup("");
    let server = Server::start_with(&plan, &[]);
    // Bound to a SHA that is not the head, so that no deploy starts (its GitHub reads would
    // meet the rate limit too): the answer shows the PR was read.
    let command = "@kcibot deploy 0000000";
    let read = format!("Not deploying #7: its head is `{}` now", &head[..12]);
    // A reset two seconds ahead: waited out, then the PR is read.
    {
        let mut f = fake.lock().expect("fake");
        f.rate_limit_next = 1;
        f.rate_limit_reset_in = Some(2);
    }
    server.post("issue_comment", "rl-1", &alice_says(command));
    wait_until("the first reply", || !replies(&fake).is_empty());
    let r = replies(&fake);
    assert!(r[0].starts_with(&read), "{r:?}\n{}", server.log());
    assert_eq!(fake.lock().expect("fake").rate_limited, 1);

    // A reset two minutes ahead (within github.max_wait, beyond the bot's 15 s): the bot
    // says at once that it could not read the PR, well before the reset.
    {
        let mut f = fake.lock().expect("fake");
        f.rate_limit_next = 1;
        f.rate_limit_reset_in = Some(120);
    }
    let asked = Instant::now();
    server.post("issue_comment", "rl-2", &alice_says(command));
    wait_until("the second reply", || replies(&fake).len() >= 2);
    assert!(asked.elapsed() < std::time::Duration::from_secs(100));
    let r = replies(&fake);
    assert!(
        r[1].starts_with("Not deploying #7: GitHub's rate limit for this server is used up"),
        "{r:?}"
    );
    assert!(
        server
            .log()
            .contains("rate limit exceeded; it resets in 2m, more than github.max_wait (15s)"),
        "{}",
        server.log()
    );
    assert_eq!(fake.lock().expect("fake").rate_limited, 2);
}

#[test]
fn a_rate_limit_beyond_github_max_wait_is_an_error_that_says_so() {
    let (fx, plan, fake, _) = bot_setup(", max_wait: 30s");
    {
        let mut f = fake.lock().expect("fake");
        f.rate_limit_next = 1;
        f.rate_limit_reset_in = Some(3600);
    }
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "-f"])
            .arg(&plan)
            .current_dir(fx.path())
            .env("KCI_TEST_TOKEN", fake_github::TOKEN)
            // Waiting out the hour would fail here, not hang.
            .timeout(PATIENCE),
    );
    assert_eq!(
        code, 1,
        "an error, at once (not killed at the timeout): {out}{err}"
    );
    assert!(
        err.contains("rate limit exceeded; it resets in 1h")
            && err.contains("more than github.max_wait (30s)"),
        "{err}"
    );
    assert_eq!(fake.lock().expect("fake").rate_limited, 1, "not retried");
}

#[test]
fn approve_steps_under_serve_wait_for_a_person_and_nothing_after_them_runs() {
    let (fx, plan) = setup(
        "settle: 0s, cooldown: 1h, full_cycle_interval: 6h",
        r#"  before: { kind: command, on: [config], with: { run: ["sh", "-c", "echo before >> LOG"] } }
  gate: { kind: command, needs: [before], approve: true, with: { run: ["sh", "-c", "echo gate >> LOG"] } }
  after: { kind: command, needs: [gate], with: { run: ["sh", "-c", "echo after >> LOG"] } }
"#,
        0,
    );
    let server = Server::start(&plan);
    server.post("pull_request", "a-1", &fixture("pull_request.opened"));
    let s = server.wait_for("the deploy", PATIENCE, |s| s["last"]["result"].is_string());
    // The run stops at the step (a later `apply -auto-approve` resumes it there).
    assert_eq!(s["last"]["result"], "cancelled", "{s:#}\n{}", server.log());
    assert_eq!(runs_log(&fx), "before\n", "nothing from the gate on ran");
    let state = state_json(&fx);
    let steps = &state["current_run"]["steps"];
    let step = |name: &str| {
        steps
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {state:#}"))
    };
    assert_eq!(step("before")["result"], "success");
    assert_eq!(step("gate")["attempts"], 0, "{state:#}");
    assert!(
        step("gate")["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("awaiting approval")),
        "{state:#}"
    );
    assert_eq!(step("after")["attempts"], 0, "{state:#}");
    assert!(state["steps"]["gate"].is_null(), "not recorded as done");
    assert!(state["steps"]["after"].is_null(), "not recorded as done");
    let metrics = server.metrics();
    assert!(
        !metrics.contains("step=\"gate\",result=\"success\"")
            && !metrics.contains("step=\"after\",result=\"success\""),
        "{metrics}"
    );
    // The stopped run is resumed by a manual apply that confirms.
    drop(server);
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        runs_log(&fx),
        "before\ngate\nafter\n",
        "resumed at the gate"
    );
}

/// The pipe-cleaner counts results over every page of `/latest/nodes`: with pages of seven
/// nodes, 10 builds and 40 tests (38 pass) are all in its summary.
#[test]
fn kernelci_results_over_many_pages_are_all_counted() {
    let fx = Fixture::new();
    fx.repo("core", &[("README", Some("core\n"))]);
    let up = fx.path().join("repos/up-next.git");
    let repo = git2::Repository::init_bare(&up).expect("init");
    let tip = kcideploy::gitops::scratch::commit(
        &repo,
        None,
        &[("Makefile", Some("# next\n"))],
        ALICE,
        NOW - DAY,
        "next",
    )
    .expect("commit");
    kcideploy::gitops::scratch::set_branch(&repo, "master", tip).expect("branch");
    git2::Repository::init_bare(fx.path().join("repos/linux.git")).expect("linux");
    let kci: SharedKci = Arc::new(Mutex::new(FakeKci::default()));
    {
        let mut k = kci.lock().expect("k");
        k.kernel = Some(fx.path().join("repos/linux.git"));
        k.max_page = Some(7);
    }
    let api = fake_kernelci::start(kci.clone());
    let plan = fx.plan_file(&format!(
        r#"version: 1
name: t
kernelci: {{ api_url: "{api}" }}
repos:
  core: {{ url: repos/core.git }}
steps:
  pipe-cleaner:
    kind: pipe_cleaner
    cycle: full
    always: true
    timeout: 30s
    with:
      push_url: repos/linux.git
      trees:
        - {{ name: next, url: repos/up-next.git, branch: master }}
      checkout_timeout: 20s
      interval: 50ms
"#
    ));
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "full", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    let state = fx
        .backend("t")
        .read()
        .expect("state parses")
        .expect("state exists");
    let outputs = state.steps["pipe-cleaner"]
        .outputs
        .clone()
        .expect("outputs");
    let summary = &outputs["summaries"]["next"];
    assert_eq!(summary["test"]["pass"], 38, "{outputs:#}");
    assert_eq!(summary["test"]["fail"], 2, "{outputs:#}");
    assert_eq!(summary["kbuild"]["pass"], 10, "{outputs:#}");
    assert!(
        kci.lock().expect("k").pages > 2,
        "the results came over several pages"
    );
}

/// Blame with the github forge: the PR that breaks a step is left out, and GitHub is told
/// so with a "failure" status on its head; the others get "success".
#[test]
fn a_blamed_pr_gets_a_failure_status_and_the_others_success() {
    let fx = Fixture::new();
    let remote = fx.repo(
        "core",
        &[
            ("config/a.yaml", Some("a: 1\n")),
            ("changes/README", Some("changes\n")),
        ],
    );
    let fake: Shared = Arc::new(Mutex::new(Fake::default()));
    let api = fake_github::start(fake.clone());
    let mut heads = Vec::new();
    for n in 1..=4u64 {
        let path = format!("changes/{n}.txt");
        let text = if n == 3 { "BROKEN\n" } else { "fine\n" };
        heads.push(add_pr(
            &fake,
            &remote,
            pr(n, "alice"),
            &[(path.as_str(), Some(text))],
        ));
    }
    let config = fx.config(&format!(
        r#"version: 1
name: t
github: {{ api_url: "{api}", token_env: KCI_TEST_TOKEN, max_wait: 30s }}
repos:
  core:
    url: repos/core.git
    forge: github
    github_repo: kernelci/core
    pending: {{ trusted: [alice] }}
components:
  changes: {{ repo: core, paths: ["changes/**"] }}
steps:
  verify: {{ kind: command, on: [changes], with: {{ repo: core, shell: "if grep -rqs BROKEN changes; then echo broken >&2; exit 1; fi" }} }}
blame: {{ enabled: true, max_rounds: 10 }}
"#
    ));
    fx.deploy(&config, &[("core", remote.main)], Some(NOW));
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&config.path)
            .env("KCI_TEST_TOKEN", fake_github::TOKEN),
    );
    assert_eq!(code, 0, "the other three are deployed: {out}{err}");
    assert!(out.contains("Blame: core #3 breaks `verify`."), "{out}");
    let f = fake.lock().expect("fake");
    let last_status = |head: &str| {
        f.statuses
            .iter()
            .rev()
            .find(|(sha, _)| sha == head)
            .map(|(_, state)| state.clone())
    };
    for (i, head) in heads.iter().enumerate() {
        let expected = if i == 2 { "failure" } else { "success" };
        assert_eq!(
            last_status(head).as_deref(),
            Some(expected),
            "#{}: {:?}\n{out}",
            i + 1,
            f.statuses
        );
    }
}
