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
