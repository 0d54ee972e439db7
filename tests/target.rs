//! `-target STEP` and `-replace STEP` on plan, apply and run (Terraform's meaning), against
//! real git repos: the plan says what runs and warns it is partial, apply runs exactly those
//! steps, state history records them, and a saved plan keeps them.

mod common;

use common::*;

/// `build` → `test` on `src`, `restart` → `notify` on `config`; each step appends its name
/// to `$OUT/ran`.
const PLAN: &str = r#"version: 1
name: t
repos:
  pipe: { url: repos/pipe.git, pending: { branches: "pr/*" } }
components:
  config: { repo: pipe, paths: ["config/**"] }
  src: { repo: pipe, paths: ["src/**"] }
steps:
  build: { kind: command, on: [src], with: { shell: "echo build >> \"$OUT/ran\"", pass_env: [OUT] } }
  test: { kind: command, needs: [build], with: { shell: "echo test >> \"$OUT/ran\"", pass_env: [OUT] } }
  restart: { kind: command, on: [config], with: { shell: "echo restart >> \"$OUT/ran\"", pass_env: [OUT] } }
  notify: { kind: command, needs: [restart], with: { shell: "echo notify >> \"$OUT/ran\"", pass_env: [OUT] } }
"#;

/// `main` deployed, and `pr/1` pending, changing both components.
fn fixture() -> (Fixture, std::path::PathBuf, Remote) {
    let fx = Fixture::new();
    let remote = fx.repo(
        "pipe",
        &[("config/a.yaml", Some("a: 1\n")), ("src/x.py", Some("x\n"))],
    );
    remote.branch(
        "pr/1",
        ALICE,
        &[("config/a.yaml", Some("a: 2\n")), ("src/x.py", Some("y\n"))],
    );
    let config = fx.config(PLAN);
    fx.deploy(&config, &[("pipe", remote.main)], Some(NOW - 3600));
    (fx, config.path.clone(), remote)
}

/// The steps that ran, in order, and forget them.
fn ran(fx: &Fixture) -> Vec<String> {
    let path = fx.path().join("ran");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    text.lines().map(str::to_string).collect()
}

fn plan_cmd(plan: &std::path::Path) -> assert_cmd::Command {
    let mut cmd = kcideploy();
    cmd.args(["plan", "--cycle", "partial", "--at", at().as_str(), "-f"])
        .arg(plan);
    cmd
}

fn apply_cmd(fx: &Fixture, plan: &std::path::Path) -> assert_cmd::Command {
    let mut cmd = kcideploy();
    cmd.args([
        "apply",
        "-auto-approve",
        "--cycle",
        "partial",
        "--at",
        at().as_str(),
        "-f",
    ])
    .arg(plan)
    .env("OUT", fx.path());
    cmd
}

#[test]
fn target_plans_the_step_and_what_it_needs_with_a_warning() {
    let (_fx, plan, _) = fixture();
    let (code, text, err) = output(plan_cmd(&plan).args(["-target", "test"]));
    assert_eq!(code, 0, "{text}{err}");
    assert!(
        text.contains("Warning: -target in effect: this plan is partial"),
        "{text}"
    );
    let to_run = text
        .split("Steps to run, in order:")
        .nth(1)
        .and_then(|t| t.split("\n\n").next())
        .expect("steps to run");
    assert!(
        to_run.contains("+ build") && to_run.contains("+ test"),
        "{text}"
    );
    assert!(
        !to_run.contains("restart") && !to_run.contains("notify"),
        "{text}"
    );
    assert!(
        text.contains("Triggered, left out by -target")
            && text.contains("  ~ restart (command)")
            && text.contains("  ~ notify (command)"),
        "{text}"
    );
    assert!(text.contains("2 left out by -target"), "{text}");

    let (code, json, err) = output(plan_cmd(&plan).args(["-target", "test", "--json"]));
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).expect("plan json");
    assert_eq!(json["targets"], serde_json::json!(["test"]));
    assert!(
        json["warnings"][0]
            .as_str()
            .is_some_and(|w| w.starts_with("-target in effect: this plan is partial")),
        "{json}"
    );
    let step = |name: &str| {
        json["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .cloned()
            .expect("step")
    };
    assert_eq!(step("test")["action"], "run");
    assert_eq!(step("restart")["action"], "skip");
    assert_eq!(step("restart")["because"][0]["reason"], "untargeted");
    assert_eq!(json["summary"]["untargeted"], 2);

    // Without -target: no warning, everything triggered runs.
    let (_, text, _) = output(&mut plan_cmd(&plan));
    assert!(!text.contains("-target"), "{text}");
    assert!(text.contains("+ restart"), "{text}");
}

#[test]
fn apply_with_target_runs_exactly_those_steps_and_history_records_them() {
    let (fx, plan, remote) = fixture();
    let (code, out, err) = output(apply_cmd(&fx, &plan).args(["-target", "test"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ran(&fx), ["build", "test"]);
    let state = state_of(&fx, "t");
    let run = state.history.last().expect("a run");
    assert_eq!(run.scope.targets, ["test"]);
    assert_eq!(
        state.repos["pipe"].deployed,
        remote.main.to_string(),
        "restart and notify were left out: pipe's deployed revision stays"
    );
    let (code, history, _) = output(kcideploy().args(["state", "history", "-f"]).arg(&plan));
    assert_eq!(code, 0);
    assert!(history.contains("-target test (partial)"), "{history}");
    let (_, json, _) = output(
        kcideploy()
            .args(["state", "history", "--json", "-f"])
            .arg(&plan),
    );
    assert!(json.contains("\"targets\""), "{json}");

    // The rest, without -target: build and test finished with these inputs before.
    let (code, out, err) = output(&mut apply_cmd(&fx, &plan));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ran(&fx), ["restart", "notify"]);
    let state = state_of(&fx, "t");
    assert_ne!(state.repos["pipe"].deployed, remote.main.to_string());
    assert!(state.history.last().expect("run").scope.targets.is_empty());
}

#[test]
fn replace_runs_a_step_although_nothing_changed() {
    let (fx, plan, _) = fixture();
    let (code, out, err) = output(&mut apply_cmd(&fx, &plan));
    assert_eq!(code, 0, "{out}{err}");
    ran(&fx);
    let (code, text, _) = output(&mut plan_cmd(&plan));
    assert_eq!(code, 0);
    assert!(text.contains("No steps to run"), "{text}");

    let (code, text, err) = output(plan_cmd(&plan).args(["-replace", "restart"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("+ restart") && text.contains("-replace: runs although nothing changed"),
        "{text}"
    );
    assert!(text.contains("Warning: -replace in effect"), "{text}");
    // `notify` needs it; by the usual rules it is not repeated with the same inputs.
    assert!(!text.contains("+ notify"), "{text}");

    let (code, out, err) = output(apply_cmd(&fx, &plan).args(["-replace", "restart"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ran(&fx), ["restart"]);
    let state = state_of(&fx, "t");
    assert_eq!(
        state.history.last().expect("run").scope.replace,
        ["restart"]
    );
    let (_, history, _) = output(kcideploy().args(["state", "history", "-f"]).arg(&plan));
    assert!(history.contains("-replace restart"), "{history}");
}

#[test]
fn unknown_step_names_are_a_usage_error_naming_the_steps() {
    let (fx, plan, _) = fixture();
    for (verb, flag) in [
        ("plan", "-target"),
        ("plan", "-replace"),
        ("apply", "-target"),
    ] {
        let mut cmd = match verb {
            "plan" => plan_cmd(&plan),
            _ => apply_cmd(&fx, &plan),
        };
        let (code, out, err) = output(cmd.args([flag, "restrat"]));
        assert_eq!(code, 64, "{verb} {flag}: {out}{err}");
        assert!(
            err.contains(&format!("{flag}: no step `restrat`"))
                && err.contains("did you mean `restart`?")
                && err.contains("`build`, `test`, `restart`, `notify`"),
            "{verb} {flag}: {err}"
        );
    }
    let (code, _, err) = output(
        kcideploy()
            .args(["run", "--at", at().as_str(), "-target", "nope", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("-target: no step `nope`"), "{err}");
    assert!(ran(&fx).is_empty(), "nothing ran");
}

#[test]
fn a_saved_plan_keeps_its_target() {
    let (fx, plan, _) = fixture();
    let saved = fx.path().join("plan.json");
    let (code, text, err) = output(
        plan_cmd(&plan)
            .args(["-target", "build", "-out"])
            .arg(&saved),
    );
    assert_eq!(code, 0, "{text}{err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).expect("saved")).expect("json");
    assert_eq!(json["targets"], serde_json::json!(["build"]));

    let (code, _, err) = output(
        kcideploy()
            .args(["apply", "-target", "test"])
            .arg(&saved)
            .env("OUT", fx.path()),
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("cannot be used with a saved plan"), "{err}");

    let (code, out, err) = output(kcideploy().arg("apply").arg(&saved).env("OUT", fx.path()));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ran(&fx), ["build"]);
    let state = state_of(&fx, "t");
    assert_eq!(state.history.last().expect("run").scope.targets, ["build"]);
}

#[test]
fn the_pr_comment_of_a_targeted_run_shows_the_steps_left_out() {
    let (fx, plan_path, _) = fixture();
    let config = kcideploy::config::Config::load(&plan_path).expect("config");
    let ws = kcideploy::workspace::Workspace::load(&plan_path, Some(&fx.path().join("cache")))
        .expect("load");
    let request = kcideploy::workspace::PlanRequest {
        cycle: kcideploy::planner::CycleRequest::Partial,
        now: Some(now()),
        scope: kcideploy::state::RunScope {
            targets: vec!["test".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let (_, plan) = ws.fetch_and_plan(&request).expect("plan");
    use kcideploy::apply::events::StepResult;
    let results = kcideploy::notify::RunResults {
        run_id: "r1",
        steps: [
            ("build".to_string(), (StepResult::Success, 1000)),
            ("test".to_string(), (StepResult::Success, 1000)),
        ]
        .into(),
        details: Default::default(),
    };
    let body =
        kcideploy::notify::comment(&config, &plan, "pipe", "pr/1", &results).expect("a comment");
    assert!(body.contains("| `build` | ✅ success |"), "{body}");
    assert!(
        body.contains("| `restart` | ⏭️ left out by -target |")
            && body.contains("| `notify` | ⏭️ left out by -target |"),
        "{body}"
    );
}
