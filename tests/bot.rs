//! `@kcibot` in a real `kcideploy serve` process against the fake GitHub: who may command it
//! (by numeric user id, never by login), and what the PR is told when something fails (what
//! failed and where to look, never the raw error).

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fake_github::{Fake, Shared, add_pr, pr};
use kcideploy::server::webhook::sign;
use serde_json::{Value, json};

const SECRET: &str = "bot-test-secret";
/// alice's GitHub user id, as the plan file names her.
const ALICE_ID: u64 = 1001;

/// A running `kcideploy serve`; killed on drop.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(plan: &Path, args: &[&str]) -> Server {
        let log = plan.with_file_name("serve.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kcideploy"))
            .args(["serve", "-f"])
            .arg(plan)
            .args(["--listen", "127.0.0.1:0", "--grace", "1s"])
            .args(args)
            .env("KCIDEPLOY_WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", "kcideploy=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("line");
        let url = match line.trim().rsplit(' ').next() {
            Some(u) if u.starts_with("http://") => u.to_string(),
            _ => panic!(
                "no address in {line:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        Server { child, url, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status(&self) -> Value {
        let (code, text) = get(&format!("{}/status", self.url));
        assert_eq!(code, 200, "{text}");
        serde_json::from_str(&text).expect("status JSON")
    }

    /// A new comment on PR `number` of kernelci/core, by `login` with user id `id`.
    fn comment(&self, delivery: &str, number: u64, (login, id): (&str, u64), body: &str) {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/github-webhooks/issue_comment.created.json"
        ))
        .expect("fixture");
        let mut c: Value = serde_json::from_str(&text).expect("fixture JSON");
        c["repository"]["full_name"] = json!("kernelci/core");
        c["issue"]["number"] = json!(number);
        c["issue"]["pull_request"] = json!({
            "url": format!("https://api.github.com/repos/kernelci/core/pulls/{number}")
        });
        c["comment"]["user"]["login"] = json!(login);
        c["comment"]["user"]["id"] = json!(id);
        c["comment"]["author_association"] = json!("CONTRIBUTOR");
        c["comment"]["body"] = json!(body);
        let bytes = serde_json::to_vec(&c).expect("json");
        let sig = sign(SECRET.as_bytes(), &bytes);
        let (code, text) = post_webhook(&self.url, "issue_comment", delivery, &bytes, Some(sig));
        assert_eq!(code, 202, "{text}");
    }

    /// Wait until `ok` holds, with the log in the failure message.
    fn wait(&self, what: &str, timeout: Duration, ok: impl Fn() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A github-forge repo served by the fake, PR #7 by an untrusted author, alice a maintainer
/// by id only (no `maintainer_associations`), and the step `restart` running `run`.
fn setup(run: &str, notify: bool) -> (Fixture, Shared, PathBuf, String) {
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
github: {{ api_url: "{api}", token_env: KCI_TEST_TOKEN }}
notify: {notify}
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
  restart: {{ kind: command, on: [config], with: {{ run: {run} }} }}
"#
    ));
    // A full cycle just ran: nothing deploys before a command.
    let config = kcideploy::config::Config::load(&plan).expect("config");
    let mut state = kcideploy::state::State::default();
    state.cycles.last_full = Some(jiff::Timestamp::now());
    kcideploy::state::Backend::open(&config)
        .expect("backend")
        .write(&mut state)
        .expect("state");
    (fx, fake, plan, head)
}

/// The bodies of the comments on PR `number`, oldest first.
fn comments(fake: &Shared, number: u64) -> Vec<String> {
    fake.lock()
        .expect("fake")
        .comments
        .get(&number)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| c["body"].as_str().unwrap_or("").to_string())
        .collect()
}

/// What a PR comment must never hold: paths, Rust debug output, library and OS messages,
/// API routes, the host's identity.
fn assert_no_raw_error(body: &str, fx: &Fixture) {
    let dir = fx.path().display().to_string();
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into());
    for raw in [
        dir.as_str(),
        "/tmp/",
        "/nonexistent",
        "Error {",
        "os error",
        "error sending request",
        "libgit2",
        "/repos/",
        "Not Found",
        "docs.github.com",
        "pid ",
        host.as_str(),
    ] {
        assert!(!body.contains(raw), "{raw:?} in the comment:\n{body}");
    }
}

#[test]
fn maintainers_are_known_by_id_not_by_login() {
    let (fx, fake, plan, head) = setup(r#"["true"]"#, false);
    let server = Server::start(&plan, &[]);

    // Someone who took the login `alice` (or a lookalike account): refused.
    server.comment("c-1", 7, ("alice", 6666), "@kcibot deploy");
    server.wait("the refusal", Duration::from_secs(60), || {
        comments(&fake, 7).len() == 1
    });
    let r = comments(&fake, 7);
    assert!(
        r[0].starts_with("Sorry @alice, only the maintainers"),
        "{r:?}"
    );
    let s = server.status();
    assert_eq!(s["approvals_pending"], 0, "{s:#}");
    assert!(s["last"].is_null(), "nothing ran: {s:#}");

    // alice after renaming her account: the same id, obeyed.
    server.comment("c-2", 7, ("alice-renamed", ALICE_ID), "@kcibot deploy");
    server.wait("the answer", Duration::from_secs(60), || {
        comments(&fake, 7).len() == 2
    });
    let r = comments(&fake, 7);
    assert!(
        r[1].contains(&format!("Approved #7 by @mallory at `{}`", &head[..12])),
        "{r:?}"
    );
    server.wait("the deploy", Duration::from_secs(30), || {
        server.status()["last"]["result"].is_string()
    });
    let s = server.status();
    assert_eq!(s["last"]["result"], "success", "{s:#}\n{}", server.log());
    assert_eq!(s["changes"][0]["state"], "included", "{s:#}");

    // A PR GitHub does not know: the reply says so in words; the log has GitHub's answer.
    server.comment("c-3", 8, ("alice-renamed", ALICE_ID), "@kcibot deploy");
    server.wait("the answer on #8", Duration::from_secs(60), || {
        !comments(&fake, 8).is_empty()
    });
    let r = comments(&fake, 8);
    assert_eq!(
        r[0],
        "Not deploying #8: GitHub would not give me this PR; nothing was approved; the server \
         log has the details."
    );
    assert_no_raw_error(&r[0], &fx);
    assert!(
        server
            .log()
            .contains("GET /repos/kernelci/core/pulls/8: 404 Not Found: Not Found"),
        "{}",
        server.log()
    );
}

#[test]
fn a_deploy_that_cannot_lock_the_state_is_reported_without_the_error() {
    let (fx, fake, plan, _) = setup(r#"["true"]"#, false);
    // A manual `kcideploy apply` holds the state lock for the whole test.
    let config = kcideploy::config::Config::load(&plan).expect("config");
    let _lock = kcideploy::state::Backend::open(&config)
        .expect("backend")
        .lock("apply", Duration::ZERO)
        .expect("lock");
    let server = Server::start(&plan, &["--lock-timeout", "1s"]);

    server.comment("c-1", 7, ("alice", ALICE_ID), "@kcibot deploy");
    server.wait(
        "the answer and the failure",
        Duration::from_secs(60),
        || comments(&fake, 7).len() == 2,
    );
    let r = comments(&fake, 7);
    assert!(
        r[0].contains("Starting a partial deploy (no test kernel) now."),
        "{r:?}"
    );
    let failure = &r[1];
    assert!(
        failure.starts_with(
            "The partial deploy of staging asked for here did not run: the state is locked by \
             another `apply` run"
        ),
        "{failure}"
    );
    for hint in ["`/status`", "`kcideploy state history`", "server log"] {
        assert!(failure.contains(hint), "{hint} missing:\n{failure}");
    }
    assert_no_raw_error(failure, &fx);
    // The whole error is for the operator: in the log and in /status.
    let s = server.status();
    assert_eq!(s["last"]["result"], "error", "{s:#}");
    let error = s["last"]["error"].as_str().unwrap_or("");
    assert!(error.contains("the state is locked: lock "), "{s:#}");
    assert!(
        server.log().contains("the state is locked: lock "),
        "{}",
        server.log()
    );
}

#[test]
fn a_failed_step_is_named_in_the_pr_comment_without_its_error() {
    let (fx, fake, plan, _) = setup(r#"["/nonexistent/kcideploy/prog"]"#, true);
    let server = Server::start(&plan, &[]);

    server.comment("c-1", 7, ("alice", ALICE_ID), "@kcibot deploy");
    server.wait("the deploy", Duration::from_secs(30), || {
        server.status()["last"]["result"].is_string()
    });
    let s = server.status();
    assert_eq!(s["last"]["result"], "failed", "{s:#}\n{}", server.log());
    let run = s["last"]["run_id"].as_str().expect("run id").to_string();
    let r = comments(&fake, 7);
    let report = r
        .iter()
        .find(|b| b.contains("<!-- kcideploy:staging:core -->"))
        .unwrap_or_else(|| panic!("no deploy comment in {r:?}"));
    assert!(report.contains("| `restart` | ❌ failed |"), "{report}");
    assert!(
        report.contains(&format!(
            "Why is in its log `restart.log` of run `{run}`, and in `kcideploy state history`"
        )),
        "{report}"
    );
    assert_no_raw_error(report, &fx);
    // The error itself is in the server log.
    assert!(
        server
            .log()
            .contains("restart: failed: cannot start `/nonexistent/kcideploy/prog`"),
        "{}",
        server.log()
    );
}

#[test]
fn a_maintainer_rolls_back_to_the_last_good_run() {
    let (fx, fake, plan, _) = setup(r#"["true"]"#, false);
    let apply = || {
        let (code, out, err) = output(
            kcideploy()
                .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
                .arg(&plan),
        );
        assert_eq!(code, 0, "{out}{err}");
    };
    apply();
    // `main` moves: the second run deploys it.
    let git = git2::Repository::open_bare(fx.path().join("repos/core.git")).expect("repo");
    let main = git.refname_to_id("refs/heads/main").expect("main");
    let moved = kcideploy::gitops::scratch::commit(
        &git,
        Some(main),
        &[("config/a.yaml", Some("a: 2\n"))],
        BOB,
        NOW - DAY,
        "main moves",
    )
    .expect("commit");
    kcideploy::gitops::scratch::set_branch(&git, "main", moved).expect("branch");
    apply();
    let state = state_of(&fx, "staging");
    let first = state.history[state.history.len() - 2].clone();
    assert_eq!(
        state.repos["core"].deployed,
        state.history.last().expect("run").revisions["core"].staging
    );
    let server = Server::start(&plan, &[]);

    // Not a maintainer: refused, nothing runs.
    server.comment("c-1", 7, ("mallory", 6666), "@kcibot rollback");
    server.wait("the refusal", Duration::from_secs(60), || {
        comments(&fake, 7).len() == 1
    });
    assert!(comments(&fake, 7)[0].starts_with("Sorry @mallory"));

    server.comment("c-2", 7, ("alice", ALICE_ID), "@kcibot rollback");
    server.wait("the answer", Duration::from_secs(60), || {
        comments(&fake, 7).len() == 2
    });
    let r = comments(&fake, 7);
    assert!(
        r[1].starts_with(&format!(
            "Rolling back staging to the revisions run `{}` deployed",
            first.id
        )),
        "{r:?}"
    );
    server.wait("the rollback", Duration::from_secs(60), || {
        state_of(&fx, "staging").history.len() == state.history.len() + 1
    });
    let after = state_of(&fx, "staging");
    let run = after.history.last().expect("the rollback run");
    assert_eq!(
        run.scope.rollback_of.as_deref(),
        Some(first.id.as_str()),
        "{}",
        server.log()
    );
    assert_eq!(run.result, kcideploy::state::RunResult::Success);
    assert_eq!(
        after.repos["core"].deployed,
        first.revisions["core"].staging
    );

    // A run that is not in the history: said so, with the runs there are.
    server.comment(
        "c-3",
        7,
        ("alice", ALICE_ID),
        "@kcibot rollback 19990101T000000Z-abcdef",
    );
    server.wait("the answer", Duration::from_secs(60), || {
        comments(&fake, 7).len() == 3
    });
    let r = comments(&fake, 7);
    assert!(
        r[2].starts_with("Not rolling back staging: no run `19990101T000000Z-abcdef`"),
        "{r:?}"
    );
    assert_no_raw_error(&r[2], &fx);
}
