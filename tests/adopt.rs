//! `state adopt` without Docker: repos shaped like the demo's (git_push and command steps),
//! their staging branches pushed by hand. After adoption a plan has nothing to do, a change
//! triggers only its components' steps, and what could not be read back is listed by `plan`.
//! Docker outcomes: tests/docker_adopt.rs.

mod common;

use common::*;
use kcideploy::gitops::scratch;

const PLAN: &str = r#"version: 1
name: t
repos:
  pipe: { url: repos/pipe.git, pending: { branches: "pr/*" } }
  api: { url: repos/api.git, pending: { branches: "pr/*" } }
components:
  pipe-any: { repo: pipe, paths: ["**"] }
  pipe-src: { repo: pipe, paths: ["src/**"] }
  pipe-config: { repo: pipe, paths: ["config/**"] }
  api-any: { repo: api, paths: ["**"] }
  api-src: { repo: api, paths: ["api/**"] }
steps:
  push-pipe: { kind: git_push, on: [pipe-any], with: { repo: pipe, tag_prefix: staging- } }
  push-api: { kind: git_push, on: [api-any], with: { repo: api } }
  build-pipe: { kind: command, on: [pipe-src], after: [push-pipe], with: { run: ["true"] } }
  build-api: { kind: command, on: [api-src], after: [push-api], with: { run: ["echo", "${repos.api.sha}"] } }
  restart-pipe:
    kind: command
    on: [pipe-config]
    needs: [build-pipe, build-api]
    with: { run: ["true"] }
  pipe-cleaner:
    kind: command
    cycle: full
    always: true
    needs: [restart-pipe]
    with: { run: ["true"] }
"#;

/// Two repos; `pipe` has a pending change merged into its staging branch by hand (and a
/// dated tag on it), `api` a staging branch at its base.
fn running() -> (Fixture, Remote, Remote, std::path::PathBuf) {
    let fx = Fixture::new();
    let pipe = fx.repo(
        "pipe",
        &[
            ("src/main.py", Some("v1\n")),
            ("config/a.yaml", Some("a: 1\n")),
        ],
    );
    let merged = pipe.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    scratch::set_branch(&pipe.repo, "staging.kernelci.org", merged).expect("staging");
    pipe.repo
        .reference("refs/tags/staging-20261122.1", merged, false, "old tag")
        .expect("tag");
    let api = fx.repo("api", &[("api/main.py", Some("v1\n"))]);
    scratch::set_branch(&api.repo, "staging.kernelci.org", api.main).expect("staging");
    let plan = fx.plan_file(PLAN);
    (fx, pipe, api, plan)
}

fn adopt(plan: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    output(
        kcideploy()
            .args(["state", "adopt", "-auto-approve"])
            .args(extra)
            .arg("-f")
            .arg(plan),
    )
}

/// The steps `plan --json` would run (auto cycle, the clock).
fn plan_runs(plan: &std::path::Path) -> Vec<String> {
    let (code, out, err) = output(kcideploy().args(["plan", "--json", "-f"]).arg(plan));
    assert_eq!(code, 0, "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("plan JSON");
    json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["action"] == "run")
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn after_adoption_nothing_to_do_and_one_file_triggers_only_its_steps() {
    let (fx, pipe, api, plan) = running();
    let (code, out, err) = adopt(&plan, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let staging = pipe
        .repo
        .refname_to_id("refs/heads/staging.kernelci.org")
        .expect("staging")
        .to_string();
    assert!(out.contains(&format!("pipe: {}", &staging[..7])), "{out}");
    assert!(out.contains("with pr/1"), "{out}");

    let state = state_of(&fx, "t");
    assert_eq!(state.repos["pipe"].deployed, staging);
    assert_eq!(state.repos["pipe"].included.len(), 1, "pr/1 is in it");
    assert_eq!(state.repos["api"].deployed, api.main.to_string());
    let push = state.steps["push-pipe"].outputs.clone().expect("outputs");
    assert_eq!(push["sha"], staging.as_str());
    assert_eq!(push["tag"], "staging-20261122.1");
    assert!(push.get("unknown").is_none(), "{push}");
    let run = state
        .history
        .last()
        .expect("the adoption is in the history");
    assert_eq!(run.result.as_str(), "adopted");
    assert_eq!(run.steps.len(), 6);
    assert!(state.cycles.last_full.is_some());
    // The resolved settings are those a plan at these revisions shows.
    let params = state.steps["build-api"].params.clone().expect("params");
    assert_eq!(params["run"], format!("echo {}", api.main));

    // Nothing changed: nothing to do, in the auto cycle too (the full-only step waits).
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "-detailed-exitcode", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "nothing to do after adoption\n{out}{err}");
    assert!(!out.contains("unknown"), "{out}");
    assert!(plan_runs(&plan).is_empty());
    // `always` steps still run in their cycle: adoption is not a run of them.
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "--json", "--cycle", "full", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("plan JSON");
    let cleaner = json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == "pipe-cleaner")
        .expect("the step");
    assert_eq!(cleaner["action"], "run", "{cleaner}");

    // One file in pipe's src/: its push and build, and what needs the build.
    pipe.branch("pr/2", BOB, &[("src/main.py", Some("v2\n"))]);
    assert_eq!(
        plan_runs(&plan),
        ["push-pipe", "build-pipe", "restart-pipe"]
    );
    // One file in api's repo outside api/: only its push.
    scratch::delete_branch(&pipe.repo, "pr/2").expect("drop pr/2");
    api.branch("pr/9", BOB, &[("README.md", Some("hi\n"))]);
    assert_eq!(plan_runs(&plan), ["push-api"]);
}

#[test]
fn adoption_asks_refuses_existing_state_and_needs_a_revision_without_staging_branch() {
    let (fx, _pipe, api, plan) = running();
    // No terminal and no -auto-approve: refused before anything is fetched or written.
    let (code, out, err) = output(kcideploy().args(["state", "adopt", "-f"]).arg(&plan));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("no terminal to confirm the adoption on"),
        "{err}"
    );
    assert!(err.contains("-auto-approve"), "{err}");
    assert!(!fx.path().join(".kcideploy/t.state.json").exists());

    scratch::delete_branch(&api.repo, "staging.kernelci.org").expect("delete");
    let (code, _, err) = adopt(&plan, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("repo `api` has no staging branch `staging.kernelci.org`"),
        "{err}"
    );
    assert!(err.contains("-rev api=SHA"), "{err}");
    let (code, _, err) = adopt(&plan, &["-rev", "nope=main"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the plan file has no repo `nope`"), "{err}");
    let (code, _, err) = adopt(&plan, &["-rev", "api=main", "-rev", "api=pr/9"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("-rev names repo `api` twice"), "{err}");
    let (code, _, err) = adopt(&plan, &["-rev", "api"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("expected REPO=REVISION"), "{err}");

    // A branch as the revision: api's base runs.
    let (code, out, err) = adopt(&plan, &["-rev", "api=main"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        state_of(&fx, "t").repos["api"].deployed,
        api.main.to_string()
    );

    // State exists: refused, unless -replace-state (which keeps the history).
    let (code, _, err) = adopt(&plan, &["-rev", "api=main"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("state already exists at"), "{err}");
    assert!(err.contains("-replace-state"), "{err}");
    let (code, out, err) = adopt(&plan, &["-rev", "api=main", "-replace-state"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(state_of(&fx, "t").history.len(), 2);
}

#[test]
fn what_cannot_be_read_back_is_unknown_and_plan_lists_it() {
    let (fx, _pipe, api, plan) = running();
    // api's staging branch is not where the adopted revision is.
    let moved = api.branch("elsewhere", BOB, &[("api/main.py", Some("v0\n"))]);
    scratch::set_branch(&api.repo, "staging.kernelci.org", moved).expect("move");
    let (code, out, err) = adopt(&plan, &["-rev", "api=main"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 step(s) marked unknown"), "{out}");
    let outputs = state_of(&fx, "t").steps["push-api"]
        .outputs
        .clone()
        .expect("outputs");
    let why = outputs["unknown"].as_str().expect("marked unknown");
    assert!(why.contains("not at the adopted revision"), "{why}");

    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "-detailed-exitcode", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "still nothing to do\n{out}{err}");
    assert!(
        out.contains("Adopted steps whose outcome is unknown"),
        "{out}"
    );
    assert!(out.contains(&format!("  push-api: {why}")), "{out}");
    assert!(out.contains("-replace STEP"), "{out}");

    // A plan that runs the step anyway does not list it: the run records what it makes.
    api.branch("pr/3", BOB, &[("api/main.py", Some("v3\n"))]);
    let (code, out, err) = output(kcideploy().args(["plan", "-f"]).arg(&plan));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+ push-api"), "{out}");
    assert!(!out.contains("outcome is unknown"), "{out}");
}

#[test]
fn the_pipe_cleaner_rotation_goes_on_after_its_last_tag() {
    let fx = Fixture::new();
    let pipe = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    scratch::set_branch(&pipe.repo, "staging.kernelci.org", pipe.main).expect("staging");
    let linux = fx.repo("linux", &[("Makefile", Some("all:\n"))]);
    let next = linux.branch("staging-next", BOB, &[("staging-next", Some("t\n"))]);
    for (tag, at) in [
        ("staging-mainline-20261120.0", linux.main),
        ("staging-next-20261121.0", linux.main),
        ("staging-next-20261121.1", next),
        ("staging-stable-20261119.3", linux.main),
        ("staging-other-20261129.0", linux.main),
    ] {
        linux
            .repo
            .reference(&format!("refs/tags/{tag}"), at, false, "tag")
            .expect("tag");
    }
    let plan = fx.plan_file(&plan_with_steps(
        r#"  push-kernel:
    kind: pipe_cleaner
    cycle: full
    always: true
    with:
      phase: push
      push_url: repos/linux.git
      trees:
        - { name: next, url: "https://example.org/next.git", branch: master }
        - { name: mainline, url: "https://example.org/mainline.git", branch: master }
        - { name: stable, url: "https://example.org/stable.git", branch: linux-6.13.y }
"#,
    ));
    let (code, out, err) = adopt(&plan, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let outputs = state_of(&fx, "t").steps["push-kernel"]
        .outputs
        .clone()
        .expect("outputs");
    assert_eq!(outputs["tag"], "staging-next-20261121.1", "{outputs}");
    assert_eq!(outputs["tree"], "next");
    assert_eq!(outputs["next_index"], 1, "mainline is next in the rotation");
    assert_eq!(outputs["branch"], "staging-next");
    assert_eq!(outputs["commit"], next.to_string().as_str());
}

#[test]
fn always_steps_still_run_after_adoption() {
    let fx = Fixture::new();
    let pipe = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    scratch::set_branch(&pipe.repo, "staging.kernelci.org", pipe.main).expect("staging");
    let plan = fx.plan_file(&plan_with_steps(
        "  deploy: { kind: command, on: [config], with: { run: [\"true\"] } }\n  check: { kind: command, always: true, needs: [deploy], with: { run: [\"true\"] } }\n",
    ));
    let (code, out, err) = adopt(&plan, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(plan_runs(&plan), ["check"], "adoption is no run of `check`");
}
