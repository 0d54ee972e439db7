//! Every network operation stops at its limit in the plan file's `timeouts:`, and its error
//! names the operation, the host and the cause: `git fetch`, `git ls-remote` and `git push`
//! against a remote on 127.0.0.1 that accepts connections and never answers, the KernelCI API
//! likewise, and hosts that do not resolve (`.invalid`). The GitHub client's are in
//! github_net.rs.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A plan file with repo `core` at `url`, `timeouts:` set to `timeouts` and `steps`.
fn plan_text(url: &str, timeouts: &str, steps: &str) -> String {
    format!(
        "version: 1\nname: t\ntimeouts: {{ {timeouts} }}\nrepos:\n  core: {{ url: \"{url}\" }}\ncomponents:\n  all: {{ repo: core, paths: [\"**\"] }}\nsteps:\n{steps}"
    )
}

const NOTHING: &str = "  noop: { kind: command, on: [all], with: { run: [\"true\"] } }\n";

/// `kcideploy plan`: exit code, stdout and stderr, and how long it took.
fn plan(fx: &Fixture, text: &str) -> (i32, String, Duration) {
    let path = fx.plan_file(text);
    let started = Instant::now();
    let (code, out, err) = output(kcideploy().args(["plan", "--at", &at(), "-f"]).arg(&path));
    (code, format!("{out}{err}"), started.elapsed())
}

/// `kcideploy apply -auto-approve`: exit code, what it printed, and how long it took.
fn apply(fx: &Fixture, text: &str) -> (i32, String, Duration) {
    let path = fx.plan_file(text);
    let started = Instant::now();
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--at", &at(), "-f"])
            .arg(&path),
    );
    (code, format!("{out}{err}"), started.elapsed())
}

#[test]
fn a_fetch_from_a_silent_remote_stops_at_timeouts_git_fetch_naming_host_and_operation() {
    let fx = Fixture::new();
    let host = silent_listener();
    let url = format!("git://{host}/core.git");
    let (code, out, took) = plan(&fx, &plan_text(&url, "git_fetch: 2s", NOTHING));
    assert_eq!(code, 1, "{out}");
    // Without the setting, the fetch waits 10 minutes (the default).
    assert!(took < Duration::from_secs(30), "{took:?}: {out}");
    assert!(
        out.contains(&format!(
            "cannot fetch repo `core`: git fetch from {url}: timed out: not finished within 2s (timeouts.git_fetch)"
        )),
        "{out}"
    );
}

#[test]
fn the_setting_in_the_plan_file_is_the_limit() {
    let fx = Fixture::new();
    let host = silent_listener();
    let url = format!("git://{host}/core.git");
    let (code, out, took) = plan(&fx, &plan_text(&url, "git_fetch: 4s", NOTHING));
    assert_eq!(code, 1, "{out}");
    assert!(took >= Duration::from_secs(4), "waited 4 s: {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}: {out}");
    assert!(out.contains("within 4s (timeouts.git_fetch)"), "{out}");

    // `git ls-remote` (a staging branch's head before pushes and in blame rounds).
    let config = fx.config(&plan_text(&url, "git_ls_remote: 1s", NOTHING));
    let started = Instant::now();
    let err = kcideploy::gitops::remote::branch_head(&url, "staging", &config.file.timeouts)
        .expect_err("no answer");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        err.to_string(),
        format!(
            "git ls-remote from {url}: timed out: not finished within 1s (timeouts.git_ls_remote)"
        )
    );
}

#[test]
fn a_push_to_a_silent_remote_stops_at_timeouts_git_push_naming_host_and_operation() {
    let fx = Fixture::new();
    fx.repo("core", &[("README", Some("core\n"))]);
    let host = silent_listener();
    let url = format!("git://{host}/core.git");
    // The step's own limit (1 h by default) is the backstop: 60 s here.
    let steps = format!(
        "  push: {{ kind: git_push, always: true, timeout: 60s, with: {{ repo: core, url: \"{url}\" }} }}\n"
    );
    let (code, out, took) = apply(&fx, &plan_text("repos/core.git", "git_push: 2s", &steps));
    assert_eq!(code, 1, "{out}");
    assert!(took < Duration::from_secs(30), "{took:?}: {out}");
    assert!(
        out.contains(&format!(
            "git push to {url}: timed out: not finished within 2s (timeouts.git_push)"
        )),
        "{out}"
    );
}

#[test]
fn an_unresolvable_host_shows_the_dns_cause() {
    let fx = Fixture::new();
    fx.repo("core", &[("README", Some("core\n"))]);
    let url = "http://kcideploy-test.invalid/core.git";

    let (code, out, _) = plan(&fx, &plan_text(url, "", NOTHING));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("git fetch from {url}: fatal: unable to access"))
            && out.contains("Could not resolve host: kcideploy-test.invalid"),
        "{out}"
    );

    // The step's error itself says why, not only its log (before: "`git push` exited
    // with exit status: 128").
    let steps = format!(
        "  push: {{ kind: git_push, always: true, with: {{ repo: core, url: \"{url}\" }} }}\n"
    );
    let (code, out, _) = apply(&fx, &plan_text("repos/core.git", "", &steps));
    assert_eq!(code, 1, "{out}");
    let failed = out
        .lines()
        .find(|l| l.contains("FAILED"))
        .unwrap_or_else(|| panic!("no FAILED line: {out}"));
    assert!(
        failed.contains(&format!("git push to {url}: fatal: unable to access"))
            && failed.contains("Could not resolve host: kcideploy-test.invalid"),
        "{out}"
    );

    // The KernelCI API.
    let steps =
        "  drain: { kind: kernelci_drain, always: true, timeout: 60s, with: { interval: 1s } }\n";
    let text = plan_text("repos/core.git", "", steps).replace(
        "timeouts:",
        "kernelci: { api_url: \"http://kcideploy-test.invalid\" }\ntimeouts:",
    );
    let (code, out, _) = apply(&fx, &text);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "GET /latest/count: cannot reach the KernelCI API at kcideploy-test.invalid:80: "
        ) && out.contains("dns error"),
        "{out}"
    );
}

#[test]
fn a_silent_kernelci_api_stops_at_timeouts_kernelci_naming_host_and_operation() {
    let fx = Fixture::new();
    fx.repo("core", &[("README", Some("core\n"))]);
    let host = silent_listener();
    // Before: 30 s a request, five requests, cut short by the step's 60 s.
    let steps =
        "  drain: { kind: kernelci_drain, always: true, timeout: 60s, with: { interval: 1s } }\n";
    let text = plan_text("repos/core.git", "kernelci: 3s", steps).replace(
        "timeouts:",
        &format!("kernelci: {{ api_url: \"http://{host}\" }}\ntimeouts:"),
    );
    let (code, out, took) = apply(&fx, &text);
    assert_eq!(code, 1, "{out}");
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}: {out}");
    assert!(
        out.contains(&format!(
            "GET /latest/count: cannot reach the KernelCI API at {host}: timed out: no answer within 3s (timeouts.kernelci)"
        )),
        "{out}"
    );
}

#[test]
fn a_timeout_of_zero_is_refused() {
    let fx = Fixture::new();
    fx.repo("core", &[("README", Some("core\n"))]);
    let path = fx.plan_file(&plan_text("repos/core.git", "git_push: 0s", NOTHING));
    let (code, out, err) = output(kcideploy().args(["validate", "-f"]).arg(&path));
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("a time limit of 0 fails every call"),
        "{out}{err}"
    );
}
