//! `kcideploy serve` as a process on 127.0.0.1: real payloads signed in the test, real git
//! repos, real command steps; a fake GitHub only for the bot's reads and replies.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;
#[path = "common/server.rs"]
mod server;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fake_github::{Fake, Shared, add_pr, pr};
use kcideploy::server::webhook::sign;
use serde_json::{Value, json};
use server::{PATIENCE, SECRET, Server, fixture, set_policy};

/// A git-forge repo known to GitHub as Codertocat/Hello-World (the fixtures' repo), a
/// pending branch so a deploy has work, and a step that appends to `runs.log`; a full cycle
/// just ran, so the server has no reason to deploy before an event.
fn setup(policy: &str, step_run: &str) -> (Fixture, PathBuf) {
    server::hello_world_plan(
        policy,
        &format!(
            "  restart: {{ kind: command, on: [config], with: {{ run: [\"sh\", \"-c\", \"{step_run}\"] }} }}\n"
        ),
        0,
    )
}

/// The status answered to a signed-looking `POST /webhook` head announcing `length` bytes,
/// none of which is sent.
fn too_large(url: &str, length: usize) -> u16 {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: bad-3\r\nX-Hub-Signature-256: sha256={}\r\n\
         Content-Length: {length}\r\n\r\n",
        "0".repeat(64)
    );
    s.write_all(head.as_bytes()).expect("head");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut answer = [0u8; 64];
    let n = s.read(&mut answer).expect("answer");
    String::from_utf8_lossy(&answer[..n])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn runs_log(fx: &Fixture) -> String {
    std::fs::read_to_string(fx.path().join("runs.log")).unwrap_or_default()
}

/// Entries waiting in the durable queue: in its segments and not acknowledged in `seen.log`
/// (with state in PostgreSQL: rows of the queue table not acknowledged).
fn queued_files(fx: &Fixture) -> usize {
    if let Some(db) = &fx.db {
        let n = common::postgres::shared().psql_in(
            db,
            "SELECT count(*) FROM kcideploy_webhooks WHERE acked_at IS NULL",
        );
        return n.parse().unwrap_or_else(|_| panic!("not a count: {n}"));
    }
    let dir = fx.path().join(".kcideploy/staging.webhooks");
    let acked = std::fs::read_to_string(dir.join("seen.log")).unwrap_or_default();
    let acked: std::collections::HashSet<&str> = acked.lines().collect();
    std::fs::read_dir(dir.join("pending"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .flat_map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .filter(|e| !acked.contains(e["delivery"].as_str().unwrap_or("")))
        .count()
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

#[test]
fn replayed_payloads_schedule_one_settled_deploy_and_bad_requests_change_nothing() {
    // A settle of an hour: while the test looks, no deploy can start behind its back, however
    // slow the machine. The deploy itself comes from a restart with a short settle.
    let (fx, plan) = setup(
        "settle: 1h, cooldown: 1h, full_cycle_interval: 6h",
        "echo run >> LOG",
    );
    let server = Server::start(&plan);
    let idle = server.status();
    assert!(idle["running"].is_null(), "{idle:#}");
    assert!(
        ts(&idle["next_deploy"]) > jiff::Timestamp::now() + jiff::SignedDuration::from_hours(5),
        "no event: the next deploy is the next full cycle: {idle:#}"
    );

    // Refused, with nothing queued: a bad signature, garbled JSON, an oversized body.
    let opened = fixture("pull_request.opened");
    let bytes = serde_json::to_vec(&opened).expect("json");
    let bad = post_webhook(
        &server.url,
        "pull_request",
        "bad-1",
        &bytes,
        Some(sign(b"wrong", &bytes)),
    );
    assert_eq!(bad.0, 401, "{}", bad.1);
    let garbled = b"{\"action\": \"opened\", \"pull_request\": ";
    let (code, text) = post_webhook(
        &server.url,
        "pull_request",
        "bad-2",
        garbled,
        Some(sign(SECRET.as_bytes(), garbled)),
    );
    assert_eq!(code, 400, "{text}");
    // Over the limit: 413 from the Content-Length, before the body (an HTTP client that
    // sends the body anyway sees the connection closed under it, hence a raw request).
    assert_eq!(too_large(&server.url, 26 * 1024 * 1024), 413);
    assert_eq!(queued_files(&fx), 0);
    assert_eq!(server.status()["queue"], 0);

    // Every fixture: the PR events are queued; a ping is answered; a tag push and comments
    // on an issue are ignored.
    let replay = [
        ("ping", "ping", 200),
        ("push", "push", 202),
        ("issue_comment", "issue_comment.created", 202),
        ("issue_comment", "issue_comment.edited", 202),
        ("pull_request", "pull_request.opened", 202),
    ];
    let before = jiff::Timestamp::now();
    for (i, (event, name, expected)) in replay.iter().enumerate() {
        let (code, text) = server.post(event, &format!("d-{i}"), &fixture(name));
        assert_eq!(code, *expected, "{name}: {text}");
    }
    let s = server.wait_for("the PR event to be scheduled", PATIENCE, |s| {
        s["queue"] == 1
    });
    let first_due = ts(&s["next_deploy"]);
    assert_eq!(s["next_cycle"], "partial", "{s:#}");
    let hour = jiff::SignedDuration::from_hours(1);
    assert!(
        first_due >= before + hour - jiff::SignedDuration::from_millis(100)
            && first_due <= jiff::Timestamp::now() + hour,
        "settle: 1h after the event: {s:#}"
    );
    // A fixup within the settle window pushes the deploy back, never beyond one more settle.
    assert_eq!(
        server
            .post(
                "pull_request",
                "d-sync",
                &fixture("pull_request.synchronize")
            )
            .0,
        202
    );
    let s = server.wait_for("the fixup", PATIENCE, |s| s["queue"] == 2);
    let second_due = ts(&s["next_deploy"]);
    assert!(second_due > first_due, "{first_due} then {second_due}");
    assert!(second_due <= first_due + hour);
    assert!(s["running"].is_null() && s["last"].is_null(), "{s:#}");
    // The same delivery again is not a new event.
    let (code, text) = server.post(
        "pull_request",
        "d-sync",
        &fixture("pull_request.synchronize"),
    );
    assert_eq!(code, 200, "{text}");
    let metrics = server.metrics();
    for line in [
        "kcideploy_webhook_deliveries_total{outcome=\"unauthorized\"} 1",
        "kcideploy_webhook_deliveries_total{outcome=\"malformed\"} 1",
        "kcideploy_webhook_deliveries_total{outcome=\"too_large\"} 1",
        "kcideploy_webhook_deliveries_total{outcome=\"queued\"} 2",
        "kcideploy_webhook_deliveries_total{outcome=\"ping\"} 1",
        "kcideploy_webhook_deliveries_total{outcome=\"ignored\"} 3",
        "kcideploy_webhook_deliveries_total{outcome=\"duplicate\"} 1",
        "kcideploy_queue_depth 2",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert_eq!(runs_log(&fx), "", "nothing ran inside the settle window");
    assert!(!server.log().contains(SECRET), "the secret is never logged");
    assert_eq!(
        server.terminate(),
        0,
        "SIGTERM with nothing running: a clean exit"
    );

    // One deploy for both events, after a short settle; the queue is empty after it.
    set_policy(&plan, "settle: 1s, cooldown: 1h, full_cycle_interval: 6h");
    let server = Server::start(&plan);
    let s = server.wait_for("the deploy", PATIENCE, |s| s["last"]["result"].is_string());
    assert_eq!(s["last"]["result"], "success", "{s:#}\n{}", server.log());
    assert_eq!(s["last"]["cycle"], "partial");
    assert_eq!(s["queue"], 0);
    assert_eq!(queued_files(&fx), 0);
    assert_eq!(runs_log(&fx), "run\n", "one deploy, one step run");
    assert_eq!(s["changes"][0]["change"], "staging-fix");
    assert_eq!(s["changes"][0]["state"], "included");
    // Inside the cooldown (1h) the next deploy waits for its end, whatever comes.
    let finished = ts(&s["last"]["finished_at"]);
    assert_eq!(
        server
            .post("pull_request", "d-late", &fixture("pull_request.closed"))
            .0,
        202
    );
    let s = server.wait_for("the late event", PATIENCE, |s| s["queue"] == 1);
    let due = ts(&s["next_deploy"]);
    assert!(
        due >= finished + jiff::SignedDuration::from_secs(3599)
            && due <= finished + jiff::SignedDuration::from_secs(3601),
        "the cooldown's end: {s:#}"
    );
    let metrics = server.metrics();
    for line in [
        "kcideploy_webhook_deliveries_total{outcome=\"queued\"} 1",
        "kcideploy_deploys_total{cycle=\"partial\",result=\"success\"} 1",
        "kcideploy_step_duration_seconds_count{step=\"restart\",result=\"success\"} 1",
        "kcideploy_queue_depth 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    let (code, html) = get(&format!("{}/", server.url));
    assert_eq!(code, 200);
    assert!(
        html.contains("Last deploy") && html.contains("staging-fix"),
        "{html}"
    );
    assert!(!server.log().contains(SECRET), "the secret is never logged");
    assert_eq!(
        server.terminate(),
        0,
        "SIGTERM with nothing running: a clean exit"
    );
}

#[test]
fn an_event_survives_kill_9_after_the_reply() {
    // Killed inside an hour's settle: the deploy cannot have started, however slow the
    // machine; the next start settles for a second.
    let (fx, plan) = setup(
        "settle: 1h, cooldown: 1h, full_cycle_interval: 6h",
        "echo run >> LOG",
    );
    let server = Server::start(&plan);
    let (code, _) = server.post("pull_request", "k-1", &fixture("pull_request.opened"));
    assert_eq!(code, 202);
    server.kill9();
    assert_eq!(runs_log(&fx), "", "killed before the settle ended");
    assert_eq!(queued_files(&fx), 1, "on disk before the 2xx");

    set_policy(&plan, "settle: 1s, cooldown: 1h, full_cycle_interval: 6h");
    let server = Server::start(&plan);
    let s = server.wait_for("the replayed event's deploy", PATIENCE, |s| {
        s["last"]["result"].is_string()
    });
    assert_eq!(s["last"]["result"], "success", "{}", server.log());
    assert_eq!(runs_log(&fx), "run\n");
    assert_eq!(queued_files(&fx), 0);
    // The delivery is still known: GitHub's redelivery is not a second event.
    let (code, _) = server.post("pull_request", "k-1", &fixture("pull_request.opened"));
    assert_eq!(code, 200);
}

#[test]
fn an_event_restarts_a_partial_deploy_once_then_waits_for_the_cooldown() {
    let (fx, plan) = setup(
        // A cooldown of an hour: the waiting event cannot start a deploy while the test
        // looks; the next start (cooldown 0s) deploys it.
        "settle: 1s, cooldown: 1h, full_cycle_interval: 6h, max_restarts: 1",
        // The step runs until the test has sent its events (no race against a sleep).
        "echo start >> LOG; while [ ! -f LOG.go ]; do sleep 0.05; done; echo end >> LOG",
    );
    let server = Server::start(&plan);
    server.post("pull_request", "r-1", &fixture("pull_request.opened"));
    server.wait_for("the deploy to start", PATIENCE, |s| {
        s["running"]["steps"]["restart"]["state"] == "running"
    });
    // During the partial deploy: restart it from the beginning.
    server.post("pull_request", "r-2", &fixture("pull_request.synchronize"));
    // The stopped deploy has ended and the new one runs its step (until then the stopping
    // one still shows its step running, and a later event would be taken by the new one).
    server.wait_for("the restart", PATIENCE, |s| {
        s["running"]["restarts"] == 1
            && s["running"]["trigger"]
                .as_str()
                .is_some_and(|t| t.starts_with("restarted for"))
            && s["running"]["steps"]["restart"]["state"] == "running"
    });
    // Again: the budget is spent, the event waits for the next deploy.
    server.post("pull_request", "r-3", &fixture("pull_request.reopened"));
    // The worker has seen it while the deploy runs (three deliveries not acknowledged).
    server.wait_for("the third event", PATIENCE, |s| {
        s["queue"] == 3 && s["running"]["restarts"] == 1
    });
    std::fs::write(fx.path().join("runs.log.go"), "").expect("go");
    let s = server.wait_for("the restarted deploy to end", PATIENCE, |s| {
        s["last"]["result"].is_string()
    });
    assert_eq!(s["last"]["result"], "success", "{}", server.log());
    assert_eq!(
        runs_log(&fx),
        "start\nstart\nend\n",
        "stopped once, then ran to the end"
    );
    assert_eq!(s["queue"], 1, "the third event waits: {s:#}");
    let finished = ts(&s["last"]["finished_at"]);
    let due = ts(&s["next_deploy"]);
    assert!(
        due >= finished + jiff::SignedDuration::from_secs(3599),
        "after the cooldown: {s:#}"
    );
    assert!(s["running"].is_null(), "{s:#}");
    let metrics = server.metrics();
    assert!(
        metrics.contains("kcideploy_deploys_total{cycle=\"partial\",result=\"cancelled\"} 1"),
        "{metrics}"
    );
    assert_eq!(runs_log(&fx), "start\nstart\nend\n", "nothing more ran");
    assert_eq!(server.terminate(), 0);
    // The waiting event's deploy (the next start, without the cooldown): nothing changed
    // since, so nothing to do.
    set_policy(&plan, "settle: 0s, cooldown: 0s, full_cycle_interval: 6h");
    let server = Server::start(&plan);
    let s = server.wait_for("the next deploy", PATIENCE, |s| {
        s["queue"] == 0 && s["running"].is_null() && s["last"]["result"] != "success"
    });
    assert_eq!(s["last"]["result"], "nothing", "{s:#}");
}

#[test]
fn sigterm_stops_a_running_deploy_cleanly_and_the_next_start_resumes_it() {
    let (fx, plan) = setup(
        "settle: 0s, cooldown: 1s, full_cycle_interval: 6h",
        // Without LOG.go the step would sleep far beyond the test's ceiling.
        "echo start >> LOG; [ -f LOG.go ] || sleep 300; echo end >> LOG",
    );
    let server = Server::start(&plan);
    server.post("pull_request", "t-1", &fixture("pull_request.opened"));
    let s = server.wait_for("the deploy to start", PATIENCE, |s| {
        s["running"]["steps"]["restart"]["state"] == "running"
    });
    let run_id = s["running"]["run_id"].clone();
    // `running` is shown when the step is started, maybe before its shell has written.
    let begun = Instant::now();
    while runs_log(&fx) != "start\n" {
        assert!(
            begun.elapsed() < PATIENCE,
            "the step never began: {:?}",
            runs_log(&fx)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    assert_eq!(server.terminate(), 0);
    assert!(
        started.elapsed() < PATIENCE,
        "the step was stopped, not waited for"
    );
    let state =
        serde_json::to_value(fx.backend("staging").read().expect("state")).expect("state JSON");
    assert_eq!(state["current_run"]["result"], "cancelled", "{state:#}");
    assert_eq!(state["current_run"]["id"], run_id);
    assert_eq!(queued_files(&fx), 1, "the event waits for the next start");

    // The next start replays the event and resumes the same run.
    std::fs::write(fx.path().join("runs.log.go"), "").expect("flag");
    let server = Server::start(&plan);
    // (Until it ends, `last` is the stopped run, read from state.)
    let s = server.wait_for("the resumed deploy", PATIENCE, |s| {
        s["last"]["result"] != "cancelled"
    });
    assert_eq!(s["last"]["result"], "success", "{}", server.log());
    assert_eq!(s["last"]["run_id"], run_id, "resumed, not a new run");
    assert_eq!(runs_log(&fx), "start\nstart\nend\n");
    assert_eq!(queued_files(&fx), 0);

    // A restart shows the last deploy and what it deployed, from state.
    drop(server);
    let server = Server::start(&plan);
    let s = server.status();
    assert_eq!(s["last"]["run_id"], run_id, "{s:#}");
    assert_eq!(s["last"]["result"], "success");
    assert_eq!(s["changes"][0]["change"], "staging-fix");
    assert_eq!(s["changes"][0]["state"], "included");
}

/// The bot against a fake GitHub: who may command it, approvals of untrusted PRs, replies.
#[test]
fn kcibot_commands_from_maintainers_and_refusals_for_others() {
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
policy: {{ settle: 1h, cooldown: 1s, full_cycle_interval: 6h }}
github: {{ api_url: "{api}", token_env: KCI_TEST_TOKEN }}
notify: false
server: {{ maintainers: [{{ login: alice, id: 1001 }}], maintainer_associations: [OWNER] }}
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
    {
        let config = kcideploy::config::Config::load(&plan).expect("config");
        let mut state = kcideploy::state::State::default();
        state.cycles.last_full = Some(jiff::Timestamp::now());
        kcideploy::state::Backend::open(&config)
            .expect("backend")
            .write(&mut state)
            .expect("state");
    }
    let server = Server::start(&plan);
    let comment = |login: &str, association: &str, body: &str| {
        let mut c = fixture("issue_comment.created");
        c["repository"]["full_name"] = json!("kernelci/core");
        c["issue"]["number"] = json!(7);
        c["issue"]["pull_request"] =
            json!({"url": "https://api.github.com/repos/kernelci/core/pulls/7"});
        c["comment"]["user"]["login"] = json!(login);
        // Maintainers are checked by id: alice's is in the plan file.
        c["comment"]["user"]["id"] = json!(if login == "alice" { 1001 } else { 9999 });
        c["comment"]["author_association"] = json!(association);
        c["comment"]["body"] = json!(body);
        c
    };
    let replies = || -> Vec<String> {
        fake.lock()
            .expect("fake")
            .comments
            .get(&7)
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|c| c["body"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let wait_replies = |n: usize| {
        let start = Instant::now();
        while replies().len() < n {
            assert!(
                start.elapsed() < PATIENCE,
                "{n} replies expected, got {:?}\n{}",
                replies(),
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        replies()
    };

    // Not a maintainer: a polite refusal, nothing queued, nothing approved.
    let (code, _) = server.post(
        "issue_comment",
        "c-1",
        &comment("eve", "CONTRIBUTOR", "@kcibot deploy"),
    );
    assert_eq!(code, 202);
    let r = wait_replies(1);
    assert!(r[0].starts_with("Sorry @eve"), "{r:?}");
    let s = server.wait_for("the refusal to be done", PATIENCE, |s| s["queue"] == 0);
    assert_eq!(s["approvals_pending"], 0);
    assert!(
        s["running"].is_null() && s["last"].is_null(),
        "nothing ran: {s:#}"
    );

    // help and a typo.
    server.post(
        "issue_comment",
        "c-2",
        &comment("alice", "MEMBER", "@kcibot help\n\n@kcibot depoly"),
    );
    let r = wait_replies(2);
    assert!(r[1].contains("`@kcibot trigger`"), "{r:?}");
    assert!(r[1].contains("did you mean `deploy`?"), "{r:?}");

    // Bound to a SHA that is not the head: nothing approved, nothing deployed.
    server.post(
        "issue_comment",
        "c-sha",
        &comment("alice", "MEMBER", "@kcibot deploy 0000000"),
    );
    let r = wait_replies(3);
    assert!(
        r[2].starts_with(&format!(
            "Not deploying #7: its head is `{}` now, not `0000000`",
            &head[..12]
        )),
        "{r:?}"
    );
    // The bot's own comment (its help text quotes commands) is never a command.
    server.post(
        "issue_comment",
        "c-own",
        &comment("kcibot[bot]", "NONE", "@kcibot deploy"),
    );
    let s = server.wait_for("the two comments to be done", PATIENCE, |s| s["queue"] == 0);
    assert_eq!(s["approvals_pending"], 0);
    assert!(s["last"].is_null(), "nothing ran: {s:#}");
    assert_eq!(replies().len(), 3, "no answer to itself");

    // A maintainer's deploy: approves the untrusted PR's head and deploys now, not after the
    // 1h settle.
    server.post(
        "issue_comment",
        "c-3",
        &comment("alice", "MEMBER", "LGTM\n\n@kcibot deploy"),
    );
    let r = wait_replies(4);
    assert!(
        r[3].contains(&format!("Approved #7 by @mallory at `{}`", &head[..12])),
        "{r:?}"
    );
    assert!(
        r[3].contains("Starting a partial deploy (no test kernel) now."),
        "{r:?}"
    );
    let s = server.wait_for("the deploy", PATIENCE, |s| s["last"]["result"].is_string());
    assert_eq!(s["last"]["result"], "success", "{s:#}\n{}", server.log());
    assert_eq!(s["changes"][0]["change"], "#7");
    assert_eq!(
        s["changes"][0]["state"], "included",
        "approved at this head: {s:#}"
    );
    let state =
        serde_json::to_value(fx.backend("staging").read().expect("state")).expect("state JSON");
    assert_eq!(state["approvals"][0]["head"], head);
    assert_eq!(state["approvals"][0]["by"], "alice");

    // An OWNER by association may command too; status tells where the PR stands.
    server.post(
        "issue_comment",
        "c-4",
        &comment("root", "OWNER", "@kcibot status"),
    );
    let r = wait_replies(5);
    assert!(
        r[4].contains(&format!(
            "#7 at `{}` was included in the last deploy (partial cycle, success",
            &head[..12]
        )),
        "{r:?}"
    );
    // Nothing said twice: every comment was answered once.
    assert_eq!(replies().len(), 5);
    assert!(
        !server.log().contains(fake_github::TOKEN),
        "the token is never logged"
    );
    server.terminate();

    // A push to the PR revokes the approval: the next deploy leaves the new head out.
    let new_head = kcideploy::gitops::scratch::commit(
        &remote.repo,
        Some(remote.main),
        &[("config/m.yaml", Some("m2\n"))],
        ALICE,
        NOW - DAY,
        "push",
    )
    .expect("commit");
    remote
        .repo
        .reference("refs/pull/7/head", new_head, true, "push")
        .expect("ref");
    fake.lock().expect("fake").prs[0]["head"]["sha"] = json!(new_head.to_string());
    std::fs::write(
        &plan,
        std::fs::read_to_string(&plan)
            .expect("plan")
            .replace("settle: 1h", "settle: 0s"),
    )
    .expect("plan");
    let server = Server::start(&plan);
    let mut sync = fixture("pull_request.synchronize");
    sync["repository"]["full_name"] = json!("kernelci/core");
    sync["pull_request"]["number"] = json!(7);
    sync["pull_request"]["head"]["sha"] = json!(new_head.to_string());
    let before = server.status()["last"]["run_id"].clone();
    assert!(before.is_string(), "the first deploy, from state");
    assert_eq!(server.post("pull_request", "p-1", &sync).0, 202);
    let s = server.wait_for("the deploy after the push", PATIENCE, |s| {
        s["last"]["run_id"] != before
    });
    assert_eq!(s["changes"][0]["head"], new_head.to_string(), "{s:#}");
    assert_eq!(s["changes"][0]["state"], "untrusted", "{s:#}");
}

#[test]
fn policy_schedule_runs_full_cycles() {
    let (_fx, plan) = setup(
        "settle: 1h, cooldown: 0s, full_cycle_interval: 6h, schedule: \"*/2 * * * * *\"",
        "true",
    );
    let server = Server::start(&plan);
    assert!(
        server.status()["schedule_next"].is_string(),
        "{}",
        server.log()
    );
    let s = server.wait_for("the scheduled full cycle", PATIENCE, |s| {
        s["last"]["result"].is_string()
    });
    assert_eq!(s["last"]["cycle"], "full", "{s:#}");
    assert_eq!(s["last"]["result"], "success", "{s:#}\n{}", server.log());
}

#[test]
fn refuses_to_start_without_a_secret_or_on_a_bad_address() {
    let (_fx, plan) = setup("settle: 1s", "true");
    let (code, _, err) = output(
        kcideploy()
            .args(["serve", "-f"])
            .arg(&plan)
            .env_remove("KCIDEPLOY_WEBHOOK_SECRET"),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "the webhook secret is missing: set the environment variable KCIDEPLOY_WEBHOOK_SECRET"
        ),
        "{err}"
    );
    let (code, _, err) = output(
        kcideploy()
            .args(["serve", "--listen", "256.0.0.1:99999", "-f"])
            .arg(&plan)
            .env("KCIDEPLOY_WEBHOOK_SECRET", SECRET),
    );
    assert_eq!(code, 1);
    assert!(err.contains("cannot listen on 256.0.0.1:99999"), "{err}");
    assert!(!err.contains(SECRET), "the secret is never printed");
}
