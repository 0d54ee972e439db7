//! Blame runs its rounds through apply's executor: `approve: true` steps are asked for
//! approval in rounds too, SIGTERM stops a bisection within the step's grace, and a step's
//! `timeout` holds in rounds as in an apply. Real repos, the real binary, real processes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kcideploy::state::State;

const CHECK: &str = "#!/bin/sh\nif grep -rqs BROKEN changes; then echo 'found a BROKEN change' >&2; exit 1; fi\necho ok\n";

fn plan_text(steps: &str, blame: bool) -> String {
    format!(
        r#"version: 1
name: t
repos:
  pipe: {{ url: repos/pipe.git, pending: {{ branches: "pr/*" }} }}
components:
  changes: {{ repo: pipe, paths: ["changes/**"] }}
steps:
{steps}blame: {{ enabled: {blame}, max_rounds: 10 }}
"#
    )
}

/// 4 pending changes `pr/1`..`pr/4`; `pr/3` is BROKEN.
fn fixture(blame: bool) -> (Fixture, PathBuf) {
    let fx = Fixture::new();
    let remote = fx.repo(
        "pipe",
        &[
            ("check.sh", Some(CHECK)),
            ("changes/README", Some("changes\n")),
        ],
    );
    for n in 1..=4 {
        let path = format!("changes/{n}.txt");
        let text = if n == 3 { "BROKEN\n" } else { "fine\n" };
        remote.branch(&format!("pr/{n}"), ALICE, &[(path.as_str(), Some(text))]);
    }
    // The tests write their steps after: they name files in the fixture.
    let placeholder = "  noop: { kind: command, with: { run: [\"true\"] } }\n";
    let config = fx.config(&plan_text(placeholder, blame));
    fx.deploy(&config, &[("pipe", remote.main)], Some(NOW));
    (fx, config.path.clone())
}

fn state(fx: &Fixture) -> State {
    fx.backend("t").read().expect("parses").expect("exists")
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// A `command` step that appends to `file` in the fixture.
fn gate(fx: &Fixture) -> String {
    let file = fx.path().join("gate.txt");
    format!(
        "  gate: {{ kind: command, on: [changes], approve: true, with: {{ shell: \"echo gate >> {}\" }} }}\n  verify: {{ kind: command, on: [changes], needs: [gate], with: {{ repo: pipe, shell: \"sh check.sh\" }} }}\n",
        file.display()
    )
}

#[test]
fn approve_steps_run_in_rounds_with_auto_approve() {
    let (fx, _) = fixture(true);
    let plan = fx.plan_file(&plan_text(&gate(&fx), true));
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "the three good changes are deployed: {out}{err}");
    assert!(out.contains("Blame: pipe pr/3 breaks `verify`."), "{out}");
    let record = state(&fx).blames.pop().expect("bisection recorded");
    assert_eq!(record.verdict, "blamed");
    for round in record.rounds.iter().filter(|r| r.result != "conflict") {
        let gate = round.steps.iter().find(|s| s.name == "gate");
        assert_eq!(
            gate.map(|s| s.result.as_str()),
            Some("success"),
            "round {}: {:?}",
            round.n,
            round.steps
        );
    }
    // The first apply, each round, and the apply without pr/3 ran the gate.
    let rounds = record.rounds.len();
    assert_eq!(lines(&fx.path().join("gate.txt")), rounds + 2);
}

#[test]
fn approve_steps_in_rounds_await_approval_without_a_terminal() {
    // First without blame: the gate is approved and succeeds, verify fails on pr/3.
    let (fx, _) = fixture(false);
    let plan = fx.plan_file(&plan_text(&gate(&fx), false));
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(lines(&fx.path().join("gate.txt")), 1);
    // With blame, a saved plan applied with nobody to ask: the gate is done before in the
    // run, but a round must run it again, and may not.
    fx.plan_file(&plan_text(&gate(&fx), true));
    let saved = fx.path().join("p.json");
    kcideploy()
        .args(["plan", "--cycle", "partial", "-f"])
        .arg(&plan)
        .arg("-out")
        .arg(&saved)
        .assert()
        .success();
    let (code, out, err) = output(kcideploy().arg("apply").arg(&saved));
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        lines(&fx.path().join("gate.txt")),
        1,
        "no round ran the gate"
    );
    let st = state(&fx);
    let record = st.blames.last().expect("bisection recorded");
    assert_eq!(record.verdict, "undecided", "{record:?}");
    assert!(
        record.summary.contains("awaiting approval"),
        "{}",
        record.summary
    );
    let round = &record.rounds[0];
    assert_eq!(round.result, "cancelled");
    let gate = round.steps.iter().find(|s| s.name == "gate").expect("gate");
    assert_eq!(gate.result, "cancelled");
    assert!(
        gate.detail
            .as_deref()
            .unwrap_or("")
            .starts_with("awaiting approval"),
        "{gate:?}"
    );
    assert!(st.exclusions.is_empty(), "nobody blamed");
}

/// A step that sleeps in bisection rounds only (their run ids start with `blame-`).
fn slow_in_rounds(fx: &Fixture, timeout: &str) -> String {
    let pid = fx.path().join("round.pid");
    format!(
        "  slow: {{ kind: command, on: [changes], {timeout}with: {{ shell: \"case $KCIDEPLOY_RUN_ID in blame-*) echo $$ > {}; exec sleep 60;; esac\" }} }}\n  verify: {{ kind: command, on: [changes], after: [slow], with: {{ repo: pipe, shell: \"sh check.sh\" }} }}\n",
        pid.display()
    )
}

#[test]
fn sigterm_stops_a_bisection_within_the_grace() {
    let (fx, _) = fixture(true);
    let plan = fx.plan_file(&plan_text(&slow_in_rounds(&fx, ""), true));
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("kcideploy"))
        .env("NO_COLOR", "1")
        .args([
            "apply",
            "-auto-approve",
            "--cycle",
            "partial",
            "--grace",
            "2s",
            "-f",
        ])
        .arg(&plan)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("apply");
    let pid_file = fx.path().join("round.pid");
    let start = Instant::now();
    while !pid_file.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no round started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let stopped = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = child.wait().expect("wait");
    // The round's `sleep 60` gets SIGTERM at once: far less than its 60 s.
    assert!(
        stopped.elapsed() < Duration::from_secs(30),
        "stopped after {:?}",
        stopped.elapsed()
    );
    assert!(!status.success());
    let pid = std::fs::read_to_string(&pid_file).expect("pid");
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .is_ok_and(|s| s.contains(") Z")),
        "the round's process is gone"
    );
    let st = state(&fx);
    let record = st.blames.last().expect("bisection recorded");
    assert_eq!(record.verdict, "undecided");
    assert!(
        record.summary.contains("cancelled by SIGTERM"),
        "{}",
        record.summary
    );
    assert_eq!(record.rounds.len(), 1, "no round after the stop");
    assert_eq!(record.rounds[0].result, "cancelled");
    assert!(st.exclusions.is_empty());
    assert!(
        fx.backend("t").holder().expect("lock").is_none(),
        "the lock is released"
    );
}

#[test]
fn a_step_timeout_holds_in_rounds_as_in_an_apply() {
    let (fx, _) = fixture(true);
    let plan = fx.plan_file(&plan_text(&slow_in_rounds(&fx, "timeout: 1s, "), true));
    let start = Instant::now();
    let (code, out, err) = output(
        kcideploy()
            .args([
                "apply",
                "-auto-approve",
                "--cycle",
                "partial",
                "--grace",
                "1s",
                "-f",
            ])
            .arg(&plan),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "rounds of 1 s steps took {:?}",
        start.elapsed()
    );
    let record = state(&fx).blames.pop().expect("bisection recorded");
    assert!(!record.rounds.is_empty());
    for round in &record.rounds {
        assert_eq!(round.result, "fail", "{round:?}");
        let slow = round.steps.iter().find(|s| s.name == "slow").expect("slow");
        assert_eq!(slow.result, "failed");
        assert_eq!(
            slow.detail.as_deref(),
            Some("timed out after 1s"),
            "{slow:?}"
        );
        let verify = round.steps.iter().find(|s| s.name == "verify");
        assert_eq!(verify.map(|s| s.result.as_str()), Some("skipped"));
    }
    assert_eq!(record.verdict, "infrastructure", "{}", record.summary);
}
