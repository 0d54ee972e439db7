//! State writes proportional to the work (issue #20): an apply writes the state file when
//! its run starts and when it ends, whatever its number of steps; each step's end goes only
//! to the run's journal (synced before any dependent starts), and whoever reads the state
//! reads it with the journal folded in, also after a kill -9.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use kcideploy::state::journal::{self, Entry};
use kcideploy::state::{LocalState, StepResult};

const STEPS: usize = 30;

fn chain(steps: usize, last: &str) -> String {
    let mut text =
        String::from("version: 1\nname: w\nrepos:\n  pipe: { url: repos/pipe.git }\nsteps:\n");
    for i in 0..steps {
        let needs = if i == 0 {
            String::new()
        } else {
            format!(", needs: [s{}]", (i - 1) / 2)
        };
        let run = if i + 1 == steps { last } else { "true" };
        text.push_str(&format!(
            "  s{i}: {{ kind: command, always: true{needs}, with: {{ shell: \"{run}\" }} }}\n"
        ));
    }
    text
}

#[test]
fn an_apply_writes_the_state_file_twice_whatever_its_number_of_steps() {
    let fx = Fixture::new();
    fx.repo("pipe", &[("a", Some("a\n"))]);
    let plan = fx.plan_file(&chain(STEPS, "true"));
    kcideploy()
        .current_dir(fx.path())
        .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
        .arg(&plan)
        .assert()
        .success();
    let state = state_of(&fx, "w");
    // Every write increments the serial: one when the run starts, one when it ends.
    assert_eq!(state.serial, 2, "state written once per step?");
    let run = state.history.last().expect("the run is in the history");
    assert_eq!(run.steps.len(), STEPS);
    assert!(
        (0..STEPS).all(|i| state.steps[&format!("s{i}")].result == StepResult::Success),
        "{:?}",
        state.steps
    );
    let journal = LocalState::new(fx.path().join(".kcideploy/w.state.json")).journal_path();
    assert_eq!(
        std::fs::read(&journal).expect("journal").len(),
        0,
        "state holds all of the journal: emptied"
    );
}

#[test]
fn steps_that_ended_before_a_kill_are_in_the_state_read_after_it() {
    let fx = Fixture::new();
    fx.repo("pipe", &[("a", Some("a\n"))]);
    // The last step waits for a file the test never writes, after saying it started.
    let plan = fx.plan_file(&chain(
        STEPS,
        "touch held; while [ ! -f release ]; do sleep 0.05; done",
    ));
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("kcideploy"))
        .current_dir(fx.path())
        .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
        .arg(&plan)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("apply");
    let backend = LocalState::new(fx.path().join(".kcideploy/w.state.json"));
    let exited = || {
        journal::read(&backend.journal_path())
            .unwrap_or_default()
            .iter()
            .filter(|e| matches!(e, Entry::Exited { .. }))
            .count()
    };
    let start = Instant::now();
    while !fx.path().join("held").exists() || exited() < STEPS - 1 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the other steps never ended"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    std::fs::write(fx.path().join("release"), "").expect("release");

    let file = backend.read_file().expect("parses").expect("exists");
    let done_in_file = file.steps.len();
    let state = backend.read().expect("parses").expect("exists");
    let run = state.current_run.as_ref().expect("the run is unfinished");
    let last = format!("s{}", STEPS - 1);
    for i in 0..STEPS - 1 {
        let name = format!("s{i}");
        assert_eq!(
            state.steps.get(&name).map(|r| r.result),
            Some(StepResult::Success),
            "{name} ended before the kill: {:?}",
            state.steps.keys()
        );
        assert!(
            run.steps.iter().any(|s| s.name == name),
            "{name} in the run"
        );
    }
    assert!(!state.steps.contains_key(&last), "{last} never ended");
    assert_eq!(
        done_in_file, 0,
        "the file alone has none of them (the journal has)"
    );

    // The next apply runs only the step that never ended.
    let out = kcideploy()
        .current_dir(fx.path())
        .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
        .arg(&plan)
        .output()
        .expect("apply");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = backend.read().expect("parses").expect("exists");
    let run = state.history.last().expect("finished");
    let ran: Vec<&str> = run
        .steps
        .iter()
        .filter(|s| s.result == StepResult::Success)
        .map(|s| s.name.as_str())
        .collect();
    assert!(ran.contains(&last.as_str()), "{ran:?}");
    assert_eq!(
        run.steps
            .iter()
            .filter(|s| s.result == StepResult::DoneBefore)
            .count(),
        0,
        "a resumed run keeps the successes of its first part: {:?}",
        run.steps
    );
    assert_eq!(ran.len(), STEPS, "{:?}", run.steps);
}
