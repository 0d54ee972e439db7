//! Two `kcideploy serve` replicas on one PostgreSQL database (a real throwaway cluster,
//! tests/common/postgres.rs), against the fake GitHub: one leads, the other follows; when
//! the leader is killed in the middle of a deploy, the follower takes the lead, resumes the
//! interrupted run without repeating a finished step, and every webhook delivery sent to
//! either replica is handled exactly once.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;
#[path = "common/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::*;
use fake_github::{Fake, Shared, add_pr, pr};
use kcideploy::server::webhook::sign;
use serde_json::{Value, json};
use server::{SECRET, Server};

/// alice's GitHub user id, as the plan file names her.
const ALICE_ID: u64 = 1001;

/// A github-forge repo served by the fake with alice's PR #7, and two chained steps: `first`
/// (quick) and `slow` (long enough to kill the leader in); each appends to `runs.log`.
fn setup() -> (Fixture, Shared, PathBuf) {
    let fx = Fixture::new();
    let remote = fx.repo("core", &[("config/a.yaml", Some("a: 1\n"))]);
    let fake: Shared = Arc::new(Mutex::new(Fake::default()));
    let api = fake_github::start(fake.clone());
    add_pr(
        &fake,
        &remote,
        pr(7, "alice"),
        &[("config/m.yaml", Some("m\n"))],
    );
    let log = fx.path().join("runs.log");
    let log = log.display();
    let plan = fx.plan_file(&format!(
        r#"version: 1
name: staging
policy: {{ settle: 0s, cooldown: 0s, full_cycle_interval: 6h }}
github: {{ api_url: "{api}", token_env: KCI_TEST_TOKEN }}
notify: false
server:
  maintainers:
    - {{ login: alice, id: {ALICE_ID} }}
repos:
  core:
    url: repos/core.git
    forge: github
    github_repo: kernelci/core
    pending: {{ trusted: [alice] }}
components:
  config: {{ repo: core, paths: ["config/**"] }}
steps:
  first: {{ kind: command, on: [config], with: {{ run: ["sh", "-c", "echo first >> {log}"] }} }}
  slow:
    kind: command
    needs: [first]
    on: [config]
    with: {{ run: ["sh", "-c", "echo slow-start >> {log}; sleep 3; echo slow-end >> {log}"] }}
"#
    ));
    (fx, fake, plan)
}

fn comment_body(number: u64, body: &str) -> Vec<u8> {
    let mut c = server::fixture("issue_comment.created");
    c["repository"]["full_name"] = json!("kernelci/core");
    c["issue"]["number"] = json!(number);
    c["issue"]["pull_request"] = json!({
        "url": format!("https://api.github.com/repos/kernelci/core/pulls/{number}")
    });
    c["comment"]["user"]["login"] = json!("alice");
    c["comment"]["user"]["id"] = json!(ALICE_ID);
    c["comment"]["author_association"] = json!("MEMBER");
    c["comment"]["body"] = json!(body);
    serde_json::to_vec(&c).expect("json")
}

/// Post a comment delivery to the first replica that answers it, as GitHub redelivers;
/// the status code of the one that answered.
fn deliver(urls: &[&str], delivery: &str, number: u64, body: &str) -> u16 {
    let bytes = comment_body(number, body);
    let sig = sign(SECRET.as_bytes(), &bytes);
    for url in urls {
        // A replica that is gone refuses the connection: GitHub then redelivers elsewhere.
        if std::net::TcpStream::connect(url.trim_start_matches("http://")).is_err() {
            continue;
        }
        let (code, _) = post_webhook(url, "issue_comment", delivery, &bytes, Some(sig.clone()));
        return code;
    }
    panic!("no replica answered delivery {delivery}");
}

fn role(s: &Value) -> &str {
    s["replica"]["role"].as_str().unwrap_or("")
}

fn comments_on(fake: &Shared, number: u64) -> usize {
    fake.lock()
        .expect("fake")
        .comments
        .get(&number)
        .map_or(0, Vec::len)
}

fn start(plan: &Path, url: &str) -> Server {
    Server::start_with_env(
        plan,
        &[],
        &[
            ("KCIDEPLOY_BACKEND", url),
            ("KCI_TEST_TOKEN", fake_github::TOKEN),
        ],
    )
}

#[test]
fn the_follower_takes_over_resumes_the_run_and_loses_no_delivery() {
    let pg = Postgres::start();
    let url = pg.database();
    let (fx, fake, plan) = setup();
    let a = start(&plan, &url);
    let first = a.wait_for("a role", Duration::from_secs(20), |s| role(s) == "leader");
    assert_eq!(
        first["replica"]["leader"]["listen"],
        json!(a.url.trim_start_matches("http://"))
    );
    let b = start(&plan, &url);
    let seen = b.wait_for("b follows a", Duration::from_secs(20), |s| {
        role(s) == "follower" && s["replica"]["leader"]["id"] == first["replica"]["id"]
    });
    assert!(
        b.metrics().contains("kcideploy_leader 0"),
        "{}",
        b.metrics()
    );
    assert!(
        a.metrics().contains("kcideploy_leader 1"),
        "{}",
        a.metrics()
    );
    drop(seen);

    // Deliveries to either replica before the failover, all at once (the two replicas
    // commit concurrently): the leader handles them all.
    let mut sent: Vec<u64> = (0..12u64).map(|i| 100 + i).collect();
    std::thread::scope(|scope| {
        for i in 0..12u64 {
            let target = if i % 2 == 0 {
                a.url.clone()
            } else {
                b.url.clone()
            };
            scope.spawn(move || {
                let delivery = format!("before-{i}");
                assert_eq!(deliver(&[&target], &delivery, 100 + i, "@kcibot help"), 202);
            });
        }
    });
    // A deploy: `slow` is running when the leader dies.
    assert_eq!(deliver(&[&a.url], "deploy-7", 7, "@kcibot deploy"), 202);
    let log = fx.path().join("runs.log");
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("slow-start")
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "slow never started; leader log:\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (a_url, a_log) = (a.url.clone(), a.log.clone());
    a.kill9();
    let killed = Instant::now();

    // During the failover: to both, the dead one first (refused, then sent to b).
    for i in 12..18u64 {
        let delivery = format!("during-{i}");
        let urls: [&str; 2] = if i % 2 == 0 {
            [&a_url, &b.url]
        } else {
            [&b.url, &a_url]
        };
        assert_eq!(deliver(&urls, &delivery, 100 + i, "@kcibot help"), 202);
        sent.push(100 + i);
    }
    // GitHub redelivers one: still handled once.
    assert_eq!(deliver(&[&b.url], "during-13", 113, "@kcibot help"), 200);

    let led = b.wait_for("b leads", Duration::from_secs(15), |s| role(s) == "leader");
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "b took {took:?} to lead");
    assert_eq!(led["replica"]["leader"]["id"], led["replica"]["id"]);

    // The interrupted run is resumed: `first` does not run again, `slow` finishes once.
    b.wait_for("the resumed run ends", Duration::from_secs(60), |s| {
        s["running"].is_null() && s["last"]["result"].as_str() == Some("success")
    });
    let text = std::fs::read_to_string(&log).expect("runs.log");
    assert_eq!(text.matches("first").count(), 1, "{text}");
    assert_eq!(text.matches("slow-end").count(), 1, "{text}");
    assert!(
        b.log().contains("resuming it"),
        "b did not resume the run:\n{}\n--- a:\n{}",
        b.log(),
        std::fs::read_to_string(&a_log).unwrap_or_default()
    );

    // Every delivery answered exactly once.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sent.iter().any(|n| comments_on(&fake, *n) == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let counts: Vec<(u64, usize)> = sent.iter().map(|n| (*n, comments_on(&fake, *n))).collect();
    assert!(
        counts.iter().all(|(_, c)| *c == 1),
        "replies per delivery: {counts:?}\nb:\n{}",
        b.log()
    );
    // Each delivery is one row, handled and acknowledged once, by one replica or the other.
    let rows = pg.psql_in(
        &url,
        "SELECT count(*), count(*) FILTER (WHERE acks = 1), count(DISTINCT accepted_by) \
         FROM kcideploy_webhooks",
    );
    assert_eq!(
        rows,
        format!("{n}|{n}|2", n = sent.len() + 1),
        "rows, acked once, replicas"
    );

    // A follower started now shows the leader and the last deploy it recorded.
    let last = b.status()["last"]["run_id"].clone();
    assert!(last.is_string(), "{}", b.status());
    let c = start(&plan, &url);
    let seen = c.wait_for("c follows b", Duration::from_secs(20), |s| {
        role(s) == "follower" && s["replica"]["leader"]["id"] == led["replica"]["id"]
    });
    assert_eq!(seen["last"]["run_id"], last, "{seen:#}");
    drop(c);

    // Acknowledged rows are kept to recognise redeliveries, then forgotten.
    let setting = kcideploy::config::backend::parse(&url, "test", true).expect("url");
    let kcideploy::state::Backend::Postgres(state) =
        kcideploy::state::Backend::of(setting, "staging", fx.path().join("s.json")).expect("pg")
    else {
        panic!("not PostgreSQL")
    };
    let queue = kcideploy::server::pg_queue::PgQueue::new(state, "test");
    let kept = kcideploy::support::rt::block_on(queue.prune(Duration::from_secs(3600)));
    assert_eq!(kept, Ok(0), "an hour old at most: kept");
    let gone = kcideploy::support::rt::block_on(queue.prune(Duration::ZERO));
    assert_eq!(gone, Ok(sent.len() as u64 + 1));
}

#[test]
fn a_leader_whose_connection_is_cut_exits_rather_than_deploy_beside_another() {
    let pg = Postgres::start();
    let url = pg.database();
    let (_fx, _fake, plan) = setup();
    let mut a = start(&plan, &url);
    let s = a.wait_for("a leads", Duration::from_secs(20), |s| role(s) == "leader");
    assert_eq!(s["replica"]["leader"]["pid"], json!(a.child.id()));
    // The session holding the leader lock ends (a network cut, a DBA's pg_terminate_backend).
    let ended = pg.psql_in(
        &url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()",
    );
    // The leader lock's session, and the state lock's when a deploy runs.
    assert!(
        ["1", "2"].contains(&ended.as_str()),
        "sessions holding locks: {ended}"
    );
    let start = Instant::now();
    let code = loop {
        if let Some(status) = a.child.try_wait().expect("wait") {
            break status.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "a still runs without its lock:\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(1), "{}", a.log());
    assert!(a.log().contains("lost the lead"), "{}", a.log());
}
