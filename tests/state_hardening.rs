//! The state file's edges (issue #15 item 9): the backup its error advises, a serial at its
//! end, temporary files left by a killed writer.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{Fixture, ONE_STEP_PLAN, at, kcideploy, output};
use kcideploy::state::{LocalState, State, StateError};

fn state_show(plan: &Path) -> (i32, String, String) {
    output(kcideploy().args(["state", "show", "-f"]).arg(plan))
}

#[test]
fn a_broken_state_file_is_restored_from_the_backup_its_error_names() {
    let fx = Fixture::new();
    fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let plan = fx.plan_file(ONE_STEP_PLAN);
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--at", &at(), "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    let path = fx.path().join(".kcideploy/t.state.json");
    let backend = LocalState::new(&path);
    let written = backend.read().expect("state").expect("exists");
    let backup = backend.backup_path();
    assert_eq!(backup, fx.path().join(".kcideploy/t.state.json.backup"));
    let previous = LocalState::new(&backup)
        .read()
        .expect("the backup is state")
        .expect("a backup exists");
    assert_eq!(
        previous.serial + 1,
        written.serial,
        "the backup is the state before the last write"
    );
    assert_eq!(previous.lineage, written.lineage);

    std::fs::write(&path, "{\"format_version\": 1, \"ser").expect("break the state");
    let (code, out, err) = state_show(&plan);
    assert_eq!(code, 1, "{out}{err}");
    let advice = err.replace(['\n', ' ', '│'], "");
    assert!(advice.contains("t.state.json.backup"), "{err}");

    std::fs::rename(&backup, &path).expect("restore as advised");
    let (code, out, err) = state_show(&plan);
    assert_eq!(code, 0, "the backup is usable state: {out}{err}");
}

#[test]
fn a_broken_state_file_does_not_replace_a_good_backup() {
    let dir = tempfile::tempdir().expect("tmp");
    let backend = LocalState::new(dir.path().join("s.json"));
    let mut state = State::new();
    backend.write(&mut state).expect("write 1");
    backend.write(&mut state).expect("write 2");
    std::fs::write(&backend.path, "garbage").expect("break");
    backend.write(&mut state).expect("write 3");
    let backup = LocalState::new(backend.backup_path())
        .read()
        .expect("parses")
        .expect("exists");
    assert_eq!(
        backup.serial, 1,
        "the last good state before the broken one"
    );
}

#[test]
fn a_serial_at_its_end_is_refused_not_wrapped() {
    let dir = tempfile::tempdir().expect("tmp");
    let backend = LocalState::new(dir.path().join("s.json"));
    let mut state = State::new();
    state.serial = u64::MAX - 1;
    backend.write(&mut state).expect("the last serial there is");
    assert_eq!(state.serial, u64::MAX);
    let before = std::fs::read(&backend.path).expect("read");
    // Off the test thread: the code as found overflows (a panic in debug builds).
    let b = backend.clone();
    let result = std::thread::spawn(move || b.write(&mut state).map(|()| state.serial))
        .join()
        .expect("no panic");
    match result {
        Err(e @ StateError::SerialExhausted { .. }) => {
            assert!(e.to_string().contains("18446744073709551615"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&backend.path).expect("read"),
        before,
        "the file is unchanged"
    );
}

fn age(path: &Path, by: Duration) {
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    f.set_modified(SystemTime::now() - by).expect("set mtime");
}

#[test]
fn temporary_files_of_a_killed_writer_go_when_the_state_is_next_written() {
    let dir = tempfile::tempdir().expect("tmp");
    let backend = LocalState::new(dir.path().join("s.json"));
    let mut state = State::new();
    backend.write(&mut state).expect("write");
    let stale = dir.path().join(".kcideploy-tmp-killed");
    let fresh = dir.path().join(".kcideploy-tmp-writing");
    let other = dir.path().join("notes.txt");
    for f in [&stale, &fresh, &other] {
        std::fs::write(f, "x").expect("write");
    }
    age(&stale, Duration::from_secs(600));
    age(&other, Duration::from_secs(600));
    backend.write(&mut state).expect("write");
    assert!(!stale.exists(), "a temp file 10 minutes old goes");
    assert!(fresh.exists(), "a temp file being written stays");
    assert!(other.exists(), "files that are not ours stay");
    assert_eq!(backend.read().expect("read").expect("exists").serial, 2);
}

fn history(plan: &Path) -> String {
    let (code, out, err) = output(
        kcideploy()
            .args(["state", "history", "--json", "-f"])
            .arg(plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    out
}

fn apply_now(plan: &Path) {
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--at", &at(), "-f"])
            .arg(plan),
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// Issue #14 item 13b.
#[test]
fn an_apply_with_nothing_to_do_leaves_history_as_it_was() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let plan = fx.plan_file(ONE_STEP_PLAN);
    apply_now(&plan);
    let first = history(&plan);
    let runs = |h: &str| {
        serde_json::from_str::<Vec<serde_json::Value>>(h)
            .expect("a JSON list of runs")
            .len()
    };
    assert_eq!(runs(&first), 1, "{first}");
    let state_file = fx.path().join(".kcideploy/t.state.json");
    let serial = |p: &Path| {
        LocalState::new(p)
            .read()
            .expect("read")
            .expect("state")
            .serial
    };
    let before = serial(&state_file);

    apply_now(&plan);
    assert_eq!(history(&plan), first, "the same inputs again: no new run");
    assert_eq!(serial(&state_file), before, "state not written");

    // A change outside every component: no step runs, but the deployed revision moves, and
    // that is recorded.
    remote.branch("pr/1", common::ALICE, &[("docs/readme", Some("hi\n"))]);
    apply_now(&plan);
    let moved = history(&plan);
    assert_eq!(runs(&moved), 2, "{moved}");
}
