//! Where state lives by default: outside the plan's checkout, so a CI job that checks the
//! plan's repo out afresh keeps its state and lock.

mod common;

use std::path::Path;

use common::*;

const PLAN: &str = "version: 1\nname: loc\nrepos:\n  pipe: { url: repos/pipe.git }\nsteps:\n  hello: { kind: command, always: true, with: { run: [\"true\"] } }\n";

/// Apply `text` in a fresh fixture with the given environment; the fixture.
fn apply(text: &str, env: &[(&str, &Path)]) -> Fixture {
    let fx = Fixture::new();
    fx.repo("pipe", &[("a", Some("a\n"))]);
    // Not Fixture::plan_file: that adds a `state.path`.
    let plan = fx.path().join("plan.yaml");
    std::fs::write(&plan, text).expect("write");
    let mut cmd = kcideploy();
    cmd.env_remove("XDG_STATE_HOME").env_remove("HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (code, out, err) = output(
        cmd.args(["apply", "-auto-approve", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0, "{out}{err}");
    fx
}

#[test]
fn state_defaults_to_xdg_state_home() {
    let home = tempfile::tempdir().expect("tempdir");
    let fx = apply(PLAN, &[("XDG_STATE_HOME", home.path())]);
    let dir = home.path().join("kcideploy/loc");
    assert!(
        dir.join("loc.state.json").is_file(),
        "no state in {}",
        dir.display()
    );
    assert!(dir.join("runs/loc").is_dir(), "run logs beside the state");
    assert!(
        dir.join("cache/loc/pipe.git").is_dir(),
        "fetch cache beside the state"
    );
    assert!(
        !fx.path().join(".kcideploy").exists(),
        "nothing in the plan's checkout"
    );
}

#[test]
fn without_xdg_state_home_state_is_in_local_state() {
    let home = tempfile::tempdir().expect("tempdir");
    let relative = Path::new("relative/is/ignored");
    apply(PLAN, &[("HOME", home.path()), ("XDG_STATE_HOME", relative)]);
    assert!(
        home.path()
            .join(".local/state/kcideploy/loc/loc.state.json")
            .is_file()
    );
}

#[test]
fn state_path_in_the_plan_file_wins() {
    let home = tempfile::tempdir().expect("tempdir");
    let text = PLAN.replace("name: loc\n", "name: loc\nstate: { path: keep/loc.json }\n");
    let fx = apply(&text, &[("XDG_STATE_HOME", home.path())]);
    assert!(fx.path().join("keep/loc.json").is_file());
    assert!(!home.path().join("kcideploy").exists());
}

#[test]
fn the_state_directory_follows_the_xdg_rules() {
    use kcideploy::config::default_state_dir;
    let some = |s: &str| Some(std::ffi::OsString::from(s));
    assert_eq!(
        default_state_dir(some("/x/state"), some("/home/k")),
        Some("/x/state/kcideploy".into())
    );
    for xdg in [None, some(""), some("rel/dir")] {
        assert_eq!(
            default_state_dir(xdg, some("/home/k")),
            Some("/home/k/.local/state/kcideploy".into())
        );
    }
    assert_eq!(default_state_dir(None, None), None);
}

#[test]
fn the_demo_keeps_its_state_in_its_directory() {
    let home = tempfile::tempdir().expect("tempdir");
    let demo = tempfile::tempdir().expect("tempdir");
    let dir = demo.path().join("demo");
    let (code, out, err) = output(
        kcideploy()
            .env("XDG_STATE_HOME", home.path())
            .args(["demo", "--dir"])
            .arg(&dir),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(dir.join(".kcideploy/demo.state.json").is_file());
    assert!(!home.path().join("kcideploy").exists());
}
