//! A saved plan is applied as it was made or not at all: its whole content is sealed, and
//! what it names must exist in the plan file, checked before the state lock is taken.

mod common;

use common::*;

const PLAN: &str = r#"version: 1
name: t
repos:
  pipe: { url: repos/pipe.git, pending: { branches: "pr/*" } }
components:
  config: { repo: pipe, paths: ["config/**"] }
  src: { repo: pipe, paths: ["src/**"] }
steps:
  restart: { kind: command, on: [config], with: { run: ["true"] } }
  build: { kind: command, on: [src], with: { run: ["true"] } }
"#;

/// A plan file, a deployed `main`, a pending change to config, and the plan saved.
fn saved() -> (Fixture, std::path::PathBuf, std::path::PathBuf) {
    let fx = Fixture::new();
    let remote = fx.repo(
        "pipe",
        &[("config/a.yaml", Some("a: 1\n")), ("src/x.py", Some("x\n"))],
    );
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    let config = fx.config(PLAN);
    fx.deploy(&config, &[("pipe", remote.main)], Some(NOW - 3600));
    let out = fx.path().join("plan.json");
    let (code, text, err) = output(
        kcideploy()
            .args(["plan", "--cycle", "partial", "-f"])
            .arg(&config.path)
            .arg("-out")
            .arg(&out)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0, "{text}{err}");
    (fx, config.path.clone(), out)
}

fn state_text(fx: &Fixture) -> String {
    std::fs::read_to_string(fx.path().join(".kcideploy/t.state.json")).expect("state")
}

fn apply(saved: &std::path::Path) -> (i32, String, String) {
    output(kcideploy().arg("apply").arg(saved))
}

#[test]
fn an_edited_saved_plan_is_refused_and_nothing_runs() {
    for (what, from, to) in [
        (
            "a skipped step made to run",
            "\"action\": \"skip\"",
            "\"action\": \"run\"",
        ),
        (
            "a partial cycle made full",
            "\"cycle\": \"partial\"",
            "\"cycle\": \"full\"",
        ),
    ] {
        let (fx, _, saved) = saved();
        let text = std::fs::read_to_string(&saved).expect("read");
        assert!(text.contains(from), "{what}: the saved plan has {from}");
        std::fs::write(&saved, text.replacen(from, to, 1)).expect("write");
        let before = state_text(&fx);
        let (code, out, err) = apply(&saved);
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(
            err.contains("was edited after it was saved"),
            "{what}: {err}"
        );
        assert_eq!(state_text(&fx), before, "{what}: the state is untouched");
        assert!(!out.contains("restart"), "{what}: nothing ran: {out}");
    }
}

#[test]
fn the_unedited_saved_plan_applies() {
    let (_fx, _, saved) = saved();
    let (code, out, err) = apply(&saved);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("restart"), "{out}");
}

#[test]
fn a_saved_plan_naming_a_step_the_plan_file_lost_is_refused_before_the_lock() {
    let (fx, plan_file, saved) = saved();
    std::fs::write(
        &plan_file,
        PLAN.replace(
            "  build: { kind: command, on: [src], with: { run: [\"true\"] } }\n",
            "",
        ),
    )
    .expect("edit the plan file");
    let before = state_text(&fx);
    let (code, out, err) = apply(&saved);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("names what") && err.contains("step `build`"),
        "{err}"
    );
    assert_eq!(state_text(&fx), before, "not marked running");
    assert!(
        !fx.path().join(".kcideploy/t.state.json.lock").exists(),
        "no lock left behind"
    );
}

#[test]
fn a_saved_plan_without_a_seal_is_shown_but_not_applied() {
    let (_fx, _, saved) = saved();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).expect("read")).expect("json");
    json.as_object_mut()
        .expect("object")
        .remove("content_digest");
    std::fs::write(&saved, json.to_string()).expect("write");
    let (code, _, err) = output(kcideploy().arg("show").arg(&saved));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = apply(&saved);
    assert_eq!(code, 1);
    assert!(err.contains("has no seal"), "{err}");
}
