//! A `kcideploy serve` process on 127.0.0.1 for tests: started on a plan file, fed signed
//! webhook payloads from tests/fixtures/github-webhooks, read through `/status`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kcideploy::server::webhook::sign;
use serde_json::Value;

use super::common::{get, post_webhook};

/// The ceiling for anything a test waits for: generous, so a loaded machine only makes
/// the test slower, never wrong.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Replace the plan file's `policy:` line (the next start reads it).
pub fn set_policy(plan: &Path, policy: &str) {
    let text = std::fs::read_to_string(plan).expect("plan");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("policy:") {
                format!("policy: {{ {policy} }}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(plan, text).expect("plan");
}

pub const SECRET: &str = "serve-test-secret";

pub fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/github-webhooks/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

/// A running `kcideploy serve`; killed on drop.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Server {
    pub fn start(plan: &Path) -> Server {
        Server::start_with(plan, &[])
    }

    /// Started with more arguments (`--lock-timeout 1s`, say).
    pub fn start_with(plan: &Path, args: &[&str]) -> Server {
        Server::start_with_env(plan, args, &[])
    }

    /// Started with more arguments and environment variables.
    pub fn start_with_env(plan: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log = plan.with_file_name(format!(
            "serve-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_kcideploy"))
            .args(["serve", "-f"])
            .arg(plan)
            .args(["--listen", "127.0.0.1:0", "--grace", "1s"])
            .args(args)
            .env("KCIDEPLOY_WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", "kcideploy=info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("line");
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://"))
            .unwrap_or_else(|| {
                panic!(
                    "no address in {line:?}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Server { child, url, log }
    }

    pub fn post(&self, event: &str, delivery: &str, body: &Value) -> (u16, String) {
        let bytes = serde_json::to_vec(body).expect("json");
        post_webhook(
            &self.url,
            event,
            delivery,
            &bytes,
            Some(sign(SECRET.as_bytes(), &bytes)),
        )
    }

    pub fn status(&self) -> Value {
        let (code, text) = get(&format!("{}/status", self.url));
        assert_eq!(code, 200, "{text}");
        serde_json::from_str(&text).expect("status JSON")
    }

    pub fn metrics(&self) -> String {
        get(&format!("{}/metrics", self.url)).1
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until `ok(status)` holds.
    pub fn wait_for(&self, what: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status();
            if ok(&s) {
                return s;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out waiting for {what}; status:\n{s:#}\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit code.
    pub fn terminate(mut self) -> i32 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.child.wait().ok().and_then(|s| s.code()).unwrap_or(-1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A git-forge repo known to GitHub as Codertocat/Hello-World (the fixtures' repo), a
/// pending branch so a deploy has work, and `steps` (YAML lines under `steps:`; `LOG` is
/// `runs.log` in the fixture). State says a full cycle ran `last_full_ago` seconds ago.
pub fn hello_world_plan(
    policy: &str,
    steps: &str,
    last_full_ago: i64,
) -> (super::common::Fixture, PathBuf) {
    let fx = super::common::Fixture::new();
    let steps = steps.replace("LOG", &fx.path().join("runs.log").display().to_string());
    let remote = fx.repo("core", &[("config/a.yaml", Some("a: 1\n"))]);
    remote.branch(
        "staging-fix",
        super::common::ALICE,
        &[("config/a.yaml", Some("a: 2\n"))],
    );
    let plan = fx.plan_file(&format!(
        r#"version: 1
name: staging
policy: {{ {policy} }}
notify: false
repos:
  core:
    url: repos/core.git
    base: master
    github_repo: Codertocat/Hello-World
    pending: {{ branches: "staging-*" }}
components:
  config: {{ repo: core, paths: ["config/**"] }}
steps:
{steps}"#
    ));
    let repo = git2::Repository::open_bare(fx.path().join("repos/core.git")).expect("repo");
    kcideploy::gitops::scratch::set_branch(&repo, "master", remote.main).expect("branch");
    let config = kcideploy::config::Config::load(&plan).expect("config");
    let mut state = kcideploy::state::State::default();
    state.cycles.last_full =
        Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(last_full_ago));
    kcideploy::state::Backend::open(&config)
        .expect("backend")
        .write(&mut state)
        .expect("state");
    (fx, plan)
}
