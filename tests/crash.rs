//! kill -9 the apply process at random moments of a 50-step plan: after each kill the state
//! parses, and a re-run finishes without repeating a step that state records as done.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kcideploy::state::LocalState;

const STEPS: usize = 50;
const TRIALS: u64 = 20;

/// Step i > 0 needs step (i-1)/2: a binary tree, as in the benchmark.
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
            "  s{i}: {{ kind: command, always: true{needs}, with: {{ pass_env: [PHASE], shell: \"echo $PHASE $KCIDEPLOY_STEP >> ran.txt; sleep 0.02\" }} }}\n"
        ));
    }
    text
}

fn apply(plan: &std::path::Path, phase: &str) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("kcideploy"));
    cmd.args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
        .arg(plan)
        .env("PHASE", phase)
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

/// xorshift64*: reproducible kill moments without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn kill_9_at_random_moments_then_resume() {
    // How long a whole run takes here, to spread the kills over it.
    let fx = Fixture::new();
    fx.repo("pipe", &[("a", Some("a\n"))]);
    let plan = fx.plan_file(&plan_text());
    let start = Instant::now();
    assert!(apply(&plan, "full").status().expect("apply").success());
    let full_run = start.elapsed();
    assert_eq!(ran(&fx, "full").len(), STEPS);

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut interrupted = 0;
    for trial in 0..TRIALS {
        let fx = Fixture::new();
        fx.repo("pipe", &[("a", Some("a\n"))]);
        let plan = fx.plan_file(&plan_text());
        let delay = Duration::from_micros(rng.next() % (full_run.as_micros() as u64 * 9 / 10 + 1));
        let mut child = apply(&plan, "crash").spawn().expect("apply");
        std::thread::sleep(delay);
        child.kill().expect("kill -9");
        child.wait().expect("wait");

        let backend = LocalState::new(fx.path().join(".kcideploy/crash.state.json"));
        let state = backend
            .read()
            .unwrap_or_else(|e| panic!("trial {trial}: state does not parse after kill -9: {e}"));
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
        if state.as_ref().is_none_or(|s| s.current_run.is_some()) {
            interrupted += 1;
        }
        let crashed_ran = ran(&fx, "crash");
        assert!(
            done.is_subset(&crashed_ran),
            "trial {trial}: state records steps that never ran"
        );

        let rerun_out = apply(&plan, "rerun")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("rerun");
        assert!(
            rerun_out.status.success(),
            "trial {trial}: the re-run after kill -9 at {delay:?} failed:\n{}{}",
            String::from_utf8_lossy(&rerun_out.stdout),
            String::from_utf8_lossy(&rerun_out.stderr)
        );
        let rerun = ran(&fx, "rerun");
        let repeated: Vec<_> = done.intersection(&rerun).collect();
        assert!(
            repeated.is_empty(),
            "trial {trial}: re-run repeated done steps {repeated:?}"
        );
        let all: BTreeSet<String> = crashed_ran.union(&rerun).cloned().collect();
        assert_eq!(all.len(), STEPS, "trial {trial}: every step ran");
        let state = backend.read().expect("state").expect("exists");
        assert!(state.current_run.is_none(), "trial {trial}: run finished");
        assert_eq!(
            state.history.last().map(|r| r.result.as_str()),
            Some("success")
        );
    }
    assert!(
        interrupted >= TRIALS / 2,
        "only {interrupted} of {TRIALS} kills landed during a run"
    );
}
