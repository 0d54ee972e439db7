//! `rollback [RUN_ID]` against real git repos: it plans the revisions an earlier successful
//! run deployed (pending changes left out), runs only the steps whose inputs differ, and
//! records a normal run that history marks as a rollback.

mod common;

use common::*;

/// `restart` on `config`, `build` on `src`: each appends its name and what it deployed
/// (from the staging checkout) to `$OUT/ran`.
const PLAN: &str = r#"version: 1
name: t
repos:
  pipe: { url: repos/pipe.git, pending: { branches: "pr/*" } }
components:
  config: { repo: pipe, paths: ["config/**"] }
  src: { repo: pipe, paths: ["src/**"] }
steps:
  restart: { kind: command, on: [config], with: { repo: pipe, shell: "echo restart $(cat config/a.yaml) >> \"$OUT/ran\"", pass_env: [OUT] } }
  build: { kind: command, on: [src], with: { repo: pipe, shell: "echo build $(cat src/x.py) >> \"$OUT/ran\"", pass_env: [OUT] } }
"#;

fn ran(fx: &Fixture) -> Vec<String> {
    let path = fx.path().join("ran");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    text.lines().map(str::to_string).collect()
}

fn apply(fx: &Fixture, plan: &std::path::Path) {
    let (code, out, err) = output(
        kcideploy()
            .args([
                "apply",
                "-auto-approve",
                "--cycle",
                "partial",
                "--at",
                at().as_str(),
                "-f",
            ])
            .arg(plan)
            .env("OUT", fx.path()),
    );
    assert_eq!(code, 0, "{out}{err}");
}

fn rollback(fx: &Fixture, plan: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    output(
        kcideploy()
            .arg("rollback")
            .args(args)
            .arg("-f")
            .arg(plan)
            .env("OUT", fx.path()),
    )
}

/// Run 1 deploys `main` (a: 1, x), run 2 deploys `pr/1` (a: 2): its `restart` ran.
fn two_runs() -> (Fixture, std::path::PathBuf, Remote, [String; 2]) {
    let fx = Fixture::new();
    let remote = fx.repo(
        "pipe",
        &[("config/a.yaml", Some("a: 1\n")), ("src/x.py", Some("x\n"))],
    );
    let plan = fx.plan_file(PLAN);
    apply(&fx, &plan);
    let mut first = ran(&fx);
    first.sort();
    assert_eq!(first, ["build x", "restart a: 1"]);
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    apply(&fx, &plan);
    assert_eq!(ran(&fx), ["restart a: 2"]);
    let state = state_of(&fx, "t");
    let ids = [state.history[0].id.clone(), state.history[1].id.clone()];
    assert_eq!(
        state.history[0].revisions["pipe"].staging,
        remote.main.to_string(),
        "a run records the revision it deployed"
    );
    (fx, plan, remote, ids)
}

#[test]
fn plan_only_shows_the_rollback_and_changes_nothing() {
    let (fx, plan, _, [first, _]) = two_runs();
    let before = state_of(&fx, "t");
    let (code, text, err) = rollback(&fx, &plan, &["-plan-only"]);
    assert_eq!(code, 0, "{text}{err}");
    assert!(
        text.contains(&format!(
            "Warning: rollback in effect: the revisions run {first} deployed"
        )),
        "{text}"
    );
    assert!(
        text.contains("+ restart")
            && text.contains("rollback → config/a.yaml → config/** → config → restart"),
        "{text}"
    );
    assert!(
        !text.contains("+ build"),
        "build's inputs are the same: {text}"
    );
    assert!(
        text.contains("pr/1") && text.contains("rollback"),
        "pr/1 is left out: {text}"
    );
    assert_eq!(state_of(&fx, "t"), before, "plan-only writes nothing");
    assert!(ran(&fx).is_empty());

    let (code, json, err) = rollback(&fx, &plan, &["-plan-only", "--json"]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(json["rollback_of"], first.as_str());
}

#[test]
fn rollback_deploys_the_last_good_revisions_running_only_differing_steps() {
    let (fx, plan, remote, [first, second]) = two_runs();
    let (code, out, err) = rollback(&fx, &plan, &["-auto-approve"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        ran(&fx),
        ["restart a: 1"],
        "only the step whose inputs differ"
    );
    let state = state_of(&fx, "t");
    assert_eq!(state.repos["pipe"].deployed, remote.main.to_string());
    let run = state.history.last().expect("the rollback run");
    assert_eq!(run.scope.rollback_of.as_deref(), Some(first.as_str()));
    assert_eq!(run.result, kcideploy::state::RunResult::Success);
    assert_eq!(run.revisions["pipe"].staging, remote.main.to_string());
    let (_, history, _) = output(kcideploy().args(["state", "history", "-f"]).arg(&plan));
    assert!(
        history.contains(&format!(
            "rollback: deploys again what run {first} deployed"
        )),
        "{history}"
    );

    // Nothing left to do for the same run again.
    let (code, out, err) = rollback(&fx, &plan, &["-auto-approve", &first]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Nothing to roll back"), "{out}");
    assert!(ran(&fx).is_empty());

    // Forward again to run 2 by its id.
    let (code, out, err) = rollback(&fx, &plan, &["-auto-approve", &second]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ran(&fx), ["restart a: 2"]);
}

#[test]
fn rollback_refuses_unknown_and_failed_runs() {
    let (fx, plan, _, [first, _]) = two_runs();
    let (code, _, err) = rollback(&fx, &plan, &["-plan-only", "nope"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no run `nope`") && err.contains(&first),
        "names the successful runs: {err}"
    );
    let (code, _, err) = rollback(&fx, &plan, &["-auto-approve", "-plan-only"]);
    assert_eq!(code, 64, "-auto-approve and -plan-only conflict: {err}");
    assert!(ran(&fx).is_empty());
}

#[test]
fn nothing_to_roll_back_to_after_one_run() {
    let fx = Fixture::new();
    fx.repo(
        "pipe",
        &[("config/a.yaml", Some("a: 1\n")), ("src/x.py", Some("x\n"))],
    );
    let plan = fx.plan_file(PLAN);
    let (code, _, err) = rollback(&fx, &plan, &["-plan-only"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing deployed yet"), "{err}");
    apply(&fx, &plan);
    let (code, _, err) = rollback(&fx, &plan, &["-plan-only"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing to roll back to"), "{err}");
}
