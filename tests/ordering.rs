//! Push before use: a step that reads a repo's staging revision runs after that repo's
//! `git_push` in the same run, even when the plan file orders neither after the other
//! (issue #14 item 7: a build cloned a revision not pushed yet).

mod common;

use common::*;

#[test]
fn a_step_using_a_repo_waits_for_its_push() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    // `use` checks that the staging branch is on the remote when it starts; nothing in the
    // plan file orders it after `push` (they are triggered through different components).
    let plan = fx.plan_file(&format!(
        r#"version: 1
name: t
repos:
  pipe: {{ url: repos/pipe.git, pending: {{ branches: "pr/*" }} }}
components:
  config: {{ repo: pipe, paths: ["config/**"] }}
  all: {{ repo: pipe, paths: ["**"] }}
steps:
  use: {{ kind: command, on: [config], with: {{ repo: pipe, shell: "git --git-dir={remote} rev-parse --verify -q refs/heads/staging.kernelci.org" }} }}
  push: {{ kind: git_push, on: [all], with: {{ repo: pipe }} }}
"#,
        remote = remote.path.display()
    ));
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0, "`use` ran before the push: {out}{err}");
    let log = std::fs::read_to_string(fx.path().join(".kcideploy/t.state.json")).expect("state");
    let state: serde_json::Value = serde_json::from_str(&log).expect("json");
    let order: Vec<&str> = state["history"][0]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(order, ["push", "use"], "finished in this order");
}

/// The plan file of [`a_step_using_a_repo_waits_for_its_push`], with `extra` added to `push`.
fn push_and_use(fx: &Fixture, push_extra: &str) -> std::path::PathBuf {
    let remote = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    fx.plan_file(&format!(
        r#"version: 1
name: t
repos:
  pipe: {{ url: repos/pipe.git, pending: {{ branches: "pr/*" }} }}
components:
  config: {{ repo: pipe, paths: ["config/**"] }}
  all: {{ repo: pipe, paths: ["**"] }}
steps:
  use: {{ kind: command, on: [config], with: {{ repo: pipe, run: ["true"] }} }}
  push: {{ kind: git_push, on: [all], {push_extra}with: {{ repo: pipe }} }}
"#
    ))
}

#[test]
fn the_plan_and_the_graph_show_the_push_before_use() {
    let fx = Fixture::new();
    let plan = push_and_use(&fx, "");
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "--cycle", "partial", "--no-color", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0, "{out}{err}");
    let steps = out
        .split("Steps to run, in order:")
        .nth(1)
        .expect("steps section");
    let (push, use_) = (
        steps.find("+ push (git_push)").expect("push runs"),
        steps.find("+ use (command)").expect("use runs"),
    );
    assert!(push < use_, "listed in the order they run: {out}");
    assert!(
        steps.contains("+ use (command)\n      nothing deployed yet → config → use\n      after push (publishes the staging revision of pipe)\n"),
        "{out}"
    );

    let (code, json, err) = output(
        kcideploy()
            .args(["plan", "--cycle", "partial", "--json", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0, "{json}{err}");
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    let step = |name: &str| {
        json["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .expect("step")
    };
    assert_eq!(
        step("use")["after_push"],
        serde_json::json!([{ "step": "push", "repo": "pipe" }])
    );
    assert!(step("push").get("after_push").is_none(), "{json}");

    let (code, dot, err) = output(kcideploy().args(["graph", "-f"]).arg(&plan));
    assert_eq!(code, 0, "{err}");
    assert!(
        dot.contains(
            "\"push\" -> \"use\" [style=dashed, label=\"publishes the staging revision of pipe\"];"
        ),
        "{dot}"
    );
}

#[test]
fn a_push_the_plan_file_orders_after_the_step_is_not_shown_before_it() {
    let fx = Fixture::new();
    let plan = push_and_use(&fx, "after: [use], ");
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "--cycle", "partial", "--no-color", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("publishes"), "{out}");
    let (_, dot, _) = output(kcideploy().args(["graph", "-f"]).arg(&plan));
    assert!(dot.contains("\"use\" -> \"push\" [style=dotted];"), "{dot}");
    assert!(!dot.contains("publishes"), "{dot}");
}
