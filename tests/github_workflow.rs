//! `github_workflow` steps against the fake GitHub: the dispatch (ref, inputs), the run it
//! started (named in the answer, or found in the runs list among others), success, failure
//! and timeout, the run's URL in every verdict, and the token in no log, state or output.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;

use std::sync::{Arc, Mutex};

use common::*;
use fake_github::{Fake, Shared, TOKEN, add_run, run_object};
use serde_json::json;

const WORKFLOW: &str = "docker_images.yml";

struct Setup {
    fx: Fixture,
    remote: Remote,
    fake: Shared,
    api: String,
}

fn setup(script: Vec<(&'static str, Option<&'static str>)>) -> Setup {
    let fx = Fixture::new();
    let remote = fx.repo("core", &[("README", Some("r\n"))]);
    let fake: Shared = Arc::new(Mutex::new(Fake::default()));
    {
        let mut f = fake.lock().expect("fake");
        f.workflows = vec![WORKFLOW.into(), "other.yml".into()];
        f.run_script = script;
        // No pending change: the staging revision is main's tip.
        f.run_head_sha = remote.main.to_string();
    }
    let api = fake_github::start(fake.clone());
    Setup {
        fx,
        remote,
        fake,
        api,
    }
}

fn plan_file(s: &Setup, step_extra: &str) -> std::path::PathBuf {
    s.fx.plan_file(&format!(
        r#"version: 1
name: t
github: {{ api_url: "{api}", token_env: KCI_TEST_TOKEN, max_wait: 30s }}
repos:
  core: {{ url: repos/core.git, github_repo: kernelci/core }}
steps:
  images:
    kind: github_workflow
    always: true
{step_extra}    with:
      repo: core
      workflow: {WORKFLOW}
      inputs: {{ GIT_BRANCH: staging.kernelci.org, CORE_REV: "${{repos.core.sha}}", SKIP: false }}
      interval: 50ms
"#,
        api = s.api
    ))
}

fn apply(s: &Setup, plan: &std::path::Path) -> (i32, String) {
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(plan),
    );
    let all = format!("{out}{err}");
    assert!(!all.contains(TOKEN), "the token in the output");
    let files = all_files(s.fx.path());
    assert!(
        !files.contains(TOKEN),
        "the token in a file of state or logs"
    );
    (code, all)
}

/// Every file under `dir` (state, logs, caches), as text.
fn all_files(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    out
}

fn outputs(s: &Setup) -> serde_json::Value {
    let state = s.fx.backend("t").read().expect("parses").expect("exists");
    state.steps["images"].outputs.clone().expect("outputs")
}

/// The ids of the runs the fake made for dispatches, in order.
fn dispatched_runs(s: &Setup) -> Vec<u64> {
    let f = s.fake.lock().expect("fake");
    f.runs
        .iter()
        .filter(|r| r.run["head_sha"] == s.remote.main.to_string())
        .filter_map(|r| r.run["id"].as_u64())
        .collect()
}

#[test]
fn dispatch_on_the_staging_branch_follow_the_named_run_to_success() {
    let s = setup(vec![
        ("queued", None),
        ("in_progress", None),
        ("in_progress", None),
        ("completed", Some("success")),
    ]);
    let plan = plan_file(&s, "");
    let (code, out) = apply(&s, &plan);
    assert_eq!(code, 0, "{out}");
    let f = s.fake.lock().expect("fake");
    assert_eq!(f.dispatches.len(), 1);
    let (workflow, body) = &f.dispatches[0];
    assert_eq!(workflow, WORKFLOW);
    assert_eq!(
        body,
        &json!({
            "ref": "staging.kernelci.org",
            "inputs": {
                "GIT_BRANCH": "staging.kernelci.org",
                "CORE_REV": s.remote.main.to_string(),
                "SKIP": false,
            },
            "return_run_details": true,
        })
    );
    let run = f.runs[0].run["id"].as_u64().expect("id");
    let gets = f
        .requests
        .iter()
        .filter(|r| **r == format!("GET /repos/kernelci/core/actions/runs/{run}"))
        .count();
    assert_eq!(gets, 4, "followed until completed: {:?}", f.requests);
    drop(f);
    let o = outputs(&s);
    assert_eq!(o["run_id"], json!(run));
    assert_eq!(
        o["html_url"],
        json!(format!(
            "https://github.com/kernelci/core/actions/runs/{run}"
        ))
    );
    assert_eq!(o["conclusion"], "success");
}

#[test]
fn without_run_details_the_run_is_found_among_others() {
    let s = setup(vec![("in_progress", None), ("completed", Some("success"))]);
    {
        let mut f = s.fake.lock().expect("fake");
        f.no_run_details = true;
        f.run_hidden_lists = 3;
        f.concurrent_head_sha = Some("1".repeat(40));
    }
    // Earlier runs of the workflow on the ref, one still running (the staging script
    // would take `workflow_runs[0]`), and a run of the same workflow on another branch.
    let main = s.remote.main.to_string();
    let hour_ago = jiff::Timestamp::now().as_second() - 3600;
    for (id, branch, state) in [
        (101, "staging.kernelci.org", ("completed", Some("failure"))),
        (102, "staging.kernelci.org", ("in_progress", None)),
        (103, "main", ("queued", None)),
    ] {
        add_run(
            &s.fake,
            WORKFLOW,
            run_object(id, WORKFLOW, branch, &main, state, hour_ago),
        );
    }
    let plan = plan_file(&s, "");
    let (code, out) = apply(&s, &plan);
    assert_eq!(code, 0, "{out}");
    let ours = dispatched_runs(&s)
        .into_iter()
        .filter(|id| *id > 1000)
        .collect::<Vec<_>>();
    assert_eq!(ours.len(), 1, "one run of our dispatch: {ours:?}");
    assert_eq!(
        outputs(&s)["run_id"],
        json!(ours[0]),
        "not 101-103, not the concurrent one"
    );
    let f = s.fake.lock().expect("fake");
    assert!(
        f.requests.iter().any(|r| r.contains(
            "/actions/workflows/docker_images.yml/runs?event=workflow_dispatch&branch=staging.kernelci.org"
        )),
        "{:?}",
        f.requests
    );
}

#[test]
fn a_failed_run_fails_the_step_with_its_url() {
    let s = setup(vec![("in_progress", None), ("completed", Some("failure"))]);
    let plan = plan_file(&s, "");
    let (code, out) = apply(&s, &plan);
    assert_ne!(code, 0, "{out}");
    let run = dispatched_runs(&s)[0];
    assert!(
        out.contains(&format!(
            "workflow run https://github.com/kernelci/core/actions/runs/{run} concluded `failure`, not `success`"
        )),
        "{out}"
    );
}

#[test]
fn a_run_that_does_not_complete_in_time_fails_with_its_url() {
    let s = setup(vec![("queued", None), ("in_progress", None)]);
    let plan = plan_file(&s, "    timeout: 2s\n");
    let started = std::time::Instant::now();
    let (code, out) = apply(&s, &plan);
    assert_ne!(code, 0, "{out}");
    let run = dispatched_runs(&s)[0];
    assert!(
        out.contains(&format!(
            "workflow run https://github.com/kernelci/core/actions/runs/{run} did not complete within 2s (still `in_progress`)"
        )),
        "{out}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn a_run_that_never_appears_and_an_unknown_workflow_are_clear_errors() {
    let s = setup(vec![("completed", Some("success"))]);
    {
        let mut f = s.fake.lock().expect("fake");
        f.no_run_details = true;
        f.run_hidden_lists = u32::MAX;
    }
    let plan = plan_file(&s, "    timeout: 1s\n");
    let (code, out) = apply(&s, &plan);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "no run of workflow {WORKFLOW} on staging.kernelci.org appeared within 1s of the dispatch"
        )),
        "{out}"
    );

    let s = setup(vec![("completed", Some("success"))]);
    let plan = plan_file(&s, "");
    let text = std::fs::read_to_string(&plan)
        .expect("plan")
        .replace(WORKFLOW, "missing.yml");
    std::fs::write(&plan, text).expect("write");
    let (code, out) = apply(&s, &plan);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("POST /repos/kernelci/core/actions/workflows/missing.yml/dispatches: 404"),
        "{out}"
    );
}

#[test]
fn settings_are_checked_when_the_plan_loads() {
    let s = setup(Vec::new());
    for (with, message) in [
        (
            "{ workflow: a.yml, repo: core, github_repo: a/b }",
            "exactly one of with.repo and with.github_repo",
        ),
        (
            "{ workflow: a.yml }",
            "exactly one of with.repo and with.github_repo",
        ),
        (
            "{ workflow: a.yml, github_repo: kernelci/core }",
            "with.ref is needed with with.github_repo",
        ),
        (
            "{ workflow: a.yml, github_repo: kernelci, ref: main }",
            "with.github_repo \"kernelci\" is not owner/name",
        ),
        (
            "{ workflow: a.yml, repo: core, interval: 0s }",
            "with.interval must be more than 0s",
        ),
        ("{ repo: core }", "missing field `workflow`"),
        (
            "{ workflow: a.yml, repo: nope }",
            "with.repo names unknown repo `nope`",
        ),
    ] {
        let plan = s.fx.plan_file(&format!(
            "version: 1\nname: t\nrepos:\n  core: {{ url: repos/core.git }}\nsteps:\n  w: {{ kind: github_workflow, with: {with} }}\n"
        ));
        let (code, out, err) = output(kcideploy().arg("validate").arg("-f").arg(&plan));
        assert_ne!(code, 0, "{with}");
        assert!(
            format!("{out}{err}").contains(message),
            "{with}: {out}{err}"
        );
    }
}
