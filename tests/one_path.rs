//! One path from plan file to plan: `run` fetches each forge once and plans once, with the
//! git forge (a `git` on PATH that counts fetches, then runs the real one) and with the
//! fake GitHub (which logs every request).

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use common::*;

/// A directory with a `git` that appends a line to `log` for each fetch, then runs the real
/// `git` with the same arguments.
fn counting_git(fx: &Fixture) -> (std::path::PathBuf, std::path::PathBuf) {
    let real = std::process::Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .expect("sh");
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    assert!(!real.is_empty(), "git on PATH");
    let bin = fx.path().join("shim");
    std::fs::create_dir_all(&bin).expect("dir");
    let log = fx.path().join("fetches.log");
    let script = format!(
        "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = fetch ] && echo \"$*\" >> '{}'; done\nexec '{real}' \"$@\"\n",
        log.display()
    );
    let shim = bin.join("git");
    std::fs::write(&shim, script).expect("write");
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (bin, log)
}

fn path_with(bin: &std::path::Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `kcideploy run` at the test clock with the counting `git` first on PATH.
fn run(plan: &std::path::Path, bin: &std::path::Path) -> (i32, String, String) {
    output(
        kcideploy()
            .env("PATH", path_with(bin))
            .args(["run", "-f"])
            .arg(plan)
            .args(["--at", at().as_str()]),
    )
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn run_fetches_a_git_forge_once() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    let plan = fx.plan_file(ONE_STEP_PLAN);
    let (bin, log) = counting_git(&fx);
    let (code, out, err) = run(&plan, &bin);
    assert_eq!(code, 2, "applied: {out}{err}");
    assert!(out.contains("+ restart (command)"), "{out}");
    assert_eq!(lines(&log), 1, "one fetch of the one repo");
    // A branch that is not a pending change: the remote moved, so there is something to
    // fetch, and nothing to do; still one fetch for the run.
    remote.branch("notes", ALICE, &[("notes.txt", Some("x\n"))]);
    let (code, out, err) = run(&plan, &bin);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Nothing to do"), "{out}");
    assert_eq!(lines(&log), 2);
    // The local remote did not move: its refs are compared in-process and `git fetch` is
    // not started.
    let (code, out, err) = run(&plan, &bin);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Nothing to do"), "{out}");
    assert_eq!(lines(&log), 2, "no fetch from an unchanged local remote");
}

#[test]
fn run_lists_github_pulls_once() {
    let fx = Fixture::new();
    let remote = fx.repo("core", &[("config/a.yaml", Some("a: 1\n"))]);
    // A deployed system has its staging branch (without it the forge fetches once more,
    // leaving the missing branch out).
    kcideploy::gitops::scratch::set_branch(&remote.repo, "staging.kernelci.org", remote.main)
        .expect("branch");
    let fake: fake_github::Shared = Arc::new(Mutex::new(fake_github::Fake::default()));
    let api = fake_github::start(fake.clone());
    fake_github::add_pr(
        &fake,
        &remote,
        fake_github::pr(1, "alice"),
        &[("config/a.yaml", Some("a: 2\n"))],
    );
    let plan = fx.plan_file(&format!(
        r#"version: 1
name: t
github: {{ api_url: "{api}", token_env: KCI_TEST_TOKEN }}
notify: false
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
    let (bin, log) = counting_git(&fx);
    let (code, out, err) = run(&plan, &bin);
    assert_eq!(code, 2, "applied: {out}{err}");
    let f = fake.lock().expect("fake");
    let listed = f
        .requests
        .iter()
        .filter(|r| r.starts_with("GET /repos/kernelci/core/pulls?"))
        .count();
    assert_eq!(listed, 1, "{:#?}", f.requests);
    assert_eq!(lines(&log), 1, "one fetch of base and PR heads");
}
