//! The pipe-cleaner's `phase: watch` (production's result check, #17 item 5): nothing is
//! pushed; the step waits for the next checkout of a tree the deployed trigger polls, made
//! after the step started, and compares its results with that tree's previous checkout,
//! against the fake KernelCI API (real node format, `created__gt`/`__lt` operators).

mod common;
#[path = "common/fake_kernelci.rs"]
mod fake_kernelci;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use fake_kernelci::{FakeKci, SharedKci};

/// A checkout of `tree`/`branch` with its builds and tests; its id.
fn checkout(
    kci: &SharedKci,
    tree: &str,
    branch: &str,
    commit: &str,
    tests: (usize, usize),
) -> String {
    kci.lock().expect("kci").tree(tree, branch, commit, tests)
}

const STEP: &str = r#"  check-production:
    kind: pipe_cleaner
    always: true
    timeout: 30s
    with:
      phase: watch
      watch:
        - { tree: mainline, branch: master }
        - { tree: next, branch: master }
      checkout_timeout: 4s
      interval: 50ms
"#;

struct Setup {
    fx: Fixture,
    kci: SharedKci,
    plan: std::path::PathBuf,
}

/// A fake API holding one finished mainline checkout from yesterday (38 of 40 tests pass).
fn setup() -> (Setup, String) {
    let fx = Fixture::new();
    fx.repo("core", &[("README", Some("core\n"))]);
    let kci: SharedKci = Arc::new(Mutex::new(FakeKci::default()));
    let api = fake_kernelci::start(kci.clone());
    let previous = checkout(&kci, "mainline", "master", "aaaa0000", (38, 2));
    let yesterday = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24);
    kci.lock().expect("kci").backdate(&previous, yesterday);
    let plan = fx.plan_file(&format!(
        "version: 1\nname: t\nkernelci: {{ api_url: \"{api}\" }}\nrepos:\n  core: {{ url: repos/core.git }}\nsteps:\n{STEP}"
    ));
    (Setup { fx, kci, plan }, previous)
}

/// Apply, while a thread makes `make` happen on the API after the step has started.
fn apply_while(s: &Setup, make: impl FnOnce(&SharedKci) + Send + 'static) -> (i32, String) {
    let kci = s.kci.clone();
    let maker = std::thread::spawn(move || {
        fake_kernelci::wait_for_watch(&kci, Duration::from_secs(30));
        make(&kci);
    });
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "-f"])
            .arg(&s.plan),
    );
    maker.join().expect("maker");
    let log = find_log(&s.fx.path().join(".kcideploy"), "check-production.log");
    (code, format!("{out}{err}{log}"))
}

/// The text of the first file named `name` under `dir` (the step's log), or "".
fn find_log(dir: &std::path::Path, name: &str) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return String::new();
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            let found = find_log(&path, name);
            if !found.is_empty() {
                return found;
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return std::fs::read_to_string(&path).unwrap_or_default();
        }
    }
    String::new()
}

#[test]
fn the_next_checkout_of_a_watched_tree_is_compared_with_its_previous_one() {
    let (s, previous) = setup();
    let (code, out) = apply_while(&s, |kci| {
        // Not watched: the staging pipe-cleaner's tree, and another branch of mainline.
        checkout(kci, "kernelci", "staging-mainline", "bbbb0000", (40, 0));
        checkout(kci, "mainline", "for-next", "cccc0000", (40, 0));
        checkout(kci, "mainline", "master", "dddd0000", (39, 1));
    });
    assert_eq!(code, 0, "{out}");
    let state = state_of(&s.fx, "t");
    let outputs = state.steps["check-production"]
        .outputs
        .clone()
        .expect("the step's outputs");
    assert_eq!(outputs["commit"], "dddd0000", "{outputs}");
    assert_eq!(outputs["previous_checkout"], previous.as_str(), "{outputs}");
    assert_eq!(outputs["summary"]["test"]["pass"], 39, "{outputs}");
    assert_eq!(outputs["previous_summary"]["test"]["pass"], 38, "{outputs}");
}

#[test]
fn a_regression_against_the_previous_checkout_fails_the_step() {
    let (s, previous) = setup();
    let (code, out) = apply_while(&s, |kci| {
        checkout(kci, "mainline", "master", "eeee0000", (20, 20));
    });
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("regression on mainline master") && out.contains(&previous),
        "{out}"
    );
}

#[test]
fn an_old_checkout_is_not_taken_for_a_new_one() {
    // Only yesterday's checkout and one of a tree the trigger does not watch: no result to
    // check, and the step says what it waited for.
    let (s, _) = setup();
    let (code, out) = apply_while(&s, |kci| {
        checkout(kci, "kernelci", "staging-next", "ffff0000", (40, 0));
    });
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("no new checkout of mainline master, next master"),
        "{out}"
    );
}

#[test]
fn a_watch_step_pushes_nothing_and_needs_trees() {
    let fx = Fixture::new();
    fx.repo("core", &[("README", Some("core\n"))]);
    let bad = STEP.replace(
        "      phase: watch\n",
        "      phase: watch\n      push_url: repos/linux.git\n",
    );
    let plan = fx.plan_file(&format!(
        "version: 1\nname: t\nrepos:\n  core: {{ url: repos/core.git }}\nsteps:\n{bad}"
    ));
    let (code, out, err) = output(kcideploy().args(["validate", "-f"]).arg(&plan));
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("with.push_url: a step with phase: watch pushes nothing"),
        "{err}"
    );
    let bad = STEP
        .replace("        - { tree: mainline, branch: master }\n", "")
        .replace("        - { tree: next, branch: master }\n", "")
        .replace("      watch:\n", "");
    let plan = fx.plan_file(&format!(
        "version: 1\nname: t\nrepos:\n  core: {{ url: repos/core.git }}\nsteps:\n{bad}"
    ));
    let (code, _, err) = output(kcideploy().args(["validate", "-f"]).arg(&plan));
    assert_ne!(code, 0);
    assert!(
        err.contains("needs at least one tree in with.watch"),
        "{err}"
    );
}
