//! kill -9 the apply process at chosen moments of a 50-step plan: after each kill the state
//! parses, and a re-run finishes without repeating a step that state records as done.
//!
//! The kill moments are events, not delays: the test waits until a chosen step has written
//! its marker, then kills, either while that step is held (it waits for a file the test
//! writes only after the kill) or as soon as the marker is seen while the run goes on.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const STEPS: usize = 50;
/// Steps the kills are timed by: the root, inner nodes at several depths, the last leaf.
const KILL_AT: [usize; 6] = [0, 1, 4, 11, 24, 49];
/// The ceiling for a marker to appear (generous: a loaded machine only makes it slower).
const PATIENCE: Duration = Duration::from_secs(60);

/// Step i > 0 needs step (i-1)/2: a binary tree, as in the benchmark. Each step appends
/// `$PHASE name` to ran.txt; the step named by `$HOLD` then writes `held` and waits for
/// `release` (which the test writes after the kill, so no orphan outlives the test).
fn plan_text() -> String {
    let mut text =
        String::from("version: 1\nname: crash\nrepos:\n  pipe: { url: repos/pipe.git }\nsteps:\n");
    for i in 0..STEPS {
        let needs = if i == 0 {
            String::new()
        } else {
            format!(", needs: [s{}]", (i - 1) / 2)
        };
        text.push_str(&format!(
            "  s{i}: {{ kind: command, always: true{needs}, with: {{ pass_env: [PHASE, HOLD], shell: \"echo $PHASE $KCIDEPLOY_STEP >> ran.txt; \
             if [ \\\"$KCIDEPLOY_STEP\\\" = \\\"$HOLD\\\" ]; then touch held; while [ ! -f release ]; do sleep 0.05; done; fi; \
             sleep 0.02\" }} }}\n"
        ));
    }
    text
}

fn apply(plan: &Path, phase: &str, hold: &str) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("kcideploy"));
    cmd.args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
        .arg(plan)
        .env("PHASE", phase)
        .env("HOLD", hold)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn ran(fx: &Fixture, phase: &str) -> BTreeSet<String> {
    std::fs::read_to_string(fx.path().join("ran.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(phase).map(|s| s.trim().to_string()))
        .collect()
}

/// Wait until `ok()` holds, or fail after [`PATIENCE`].
fn wait_until(what: &str, ok: impl Fn() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn kill_9_at_chosen_moments_then_resume() {
    let mut trials = Vec::new();
    for k in KILL_AT {
        trials.push((k, true));
        trials.push((k, false));
    }
    for (trial, (k, held)) in trials.into_iter().enumerate() {
        let step = format!("s{k}");
        let fx = Fixture::new();
        fx.repo("pipe", &[("a", Some("a\n"))]);
        let plan = fx.plan_file(&plan_text());
        let trial = format!("trial {trial} (kill at {step}, held: {held})");
        let mut child = apply(&plan, "crash", if held { &step } else { "" })
            .spawn()
            .expect("apply");
        if held {
            wait_until(&format!("{trial}: {step} to be held"), || {
                fx.path().join("held").exists()
            });
        } else {
            wait_until(&format!("{trial}: {step} to run"), || {
                ran(&fx, "crash").contains(&step)
            });
        }
        child.kill().expect("kill -9");
        child.wait().expect("wait");
        std::fs::write(fx.path().join("release"), "").expect("release");

        let backend = fx.backend("crash");
        let state = backend
            .read()
            .unwrap_or_else(|e| panic!("{trial}: state does not parse after kill -9: {e}"));
        // Steps recorded as done in the interrupted run (a run that completed before the
        // kill is over: the next run is a new one and runs its `always` steps again).
        let done: BTreeSet<String> = state
            .as_ref()
            .filter(|s| s.current_run.is_some())
            .map(|s| {
                s.steps
                    .iter()
                    .filter(|(_, r)| r.result == "success")
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        let crashed_ran = ran(&fx, "crash");
        assert!(
            done.is_subset(&crashed_ran),
            "{trial}: state records steps that never ran"
        );
        if held {
            // Killed while the held step ran: the run is interrupted, and the step (which
            // never finished) is not done.
            let state = state.as_ref().expect("state exists");
            assert!(
                state.current_run.is_some(),
                "{trial}: the run is unfinished"
            );
            assert!(!done.contains(&step), "{trial}: {step} never finished");
        }

        let rerun_out = apply(&plan, "rerun", "")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("rerun");
        assert!(
            rerun_out.status.success(),
            "{trial}: the re-run after kill -9 failed:\n{}{}",
            String::from_utf8_lossy(&rerun_out.stdout),
            String::from_utf8_lossy(&rerun_out.stderr)
        );
        let rerun = ran(&fx, "rerun");
        let repeated: Vec<_> = done.intersection(&rerun).collect();
        assert!(
            repeated.is_empty(),
            "{trial}: re-run repeated done steps {repeated:?}"
        );
        if held {
            assert!(rerun.contains(&step), "{trial}: {step} runs again");
        }
        let all: BTreeSet<String> = crashed_ran.union(&rerun).cloned().collect();
        assert_eq!(all.len(), STEPS, "{trial}: every step ran");
        let state = backend.read().expect("state").expect("exists");
        assert!(state.current_run.is_none(), "{trial}: run finished");
        assert_eq!(
            state.history.last().map(|r| r.result.as_str()),
            Some("success")
        );
    }
}
