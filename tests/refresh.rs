//! `-refresh` beyond Docker: pushed git branches and tags are compared with the remote; and
//! plan and apply agree on what runs (a step that finished before with the same inputs is
//! shown as such by plan, and apply skips exactly it). Docker outcomes: tests/docker_refresh.rs.

mod common;

use common::*;

#[test]
fn a_moved_staging_branch_or_a_deleted_tag_is_drift_and_apply_refresh_repairs_it() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    let plan = fx.plan_file(&plan_with_steps(
        "  push: { kind: git_push, on: [config], with: { repo: pipe, tag_prefix: staging-, tag_keep: 3 } }\n",
    ));
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    let staging = remote
        .repo
        .refname_to_id("refs/heads/staging.kernelci.org")
        .expect("pushed");
    let outputs = state_of(&fx, "t").steps["push"]
        .outputs
        .clone()
        .expect("a push records what it pushed");
    assert_eq!(outputs["branch"], "staging.kernelci.org");
    assert_eq!(outputs["sha"], staging.to_string().as_str());
    let tag = outputs["tag"].as_str().expect("the tag").to_string();
    assert_eq!(
        remote
            .repo
            .refname_to_id(&format!("refs/tags/{tag}"))
            .expect("tag pushed"),
        staging
    );

    let (code, out, err) = refreshed_plan(&plan);
    assert_eq!(code, 0, "all as recorded: nothing to do\n{out}{err}");

    // Somebody moves the staging branch back by hand.
    remote
        .repo
        .reference(
            "refs/heads/staging.kernelci.org",
            remote.main,
            true,
            "by hand",
        )
        .expect("move");
    let (code, out, err) = refreshed_plan(&plan);
    assert_eq!(code, 2, "{out}{err}");
    let short = |oid: git2::Oid| oid.to_string()[..7].to_string();
    let expected = format!(
        "drift: branch staging.kernelci.org on {} is at {} instead of {}",
        remote.path.display(),
        short(remote.main),
        short(staging)
    );
    assert!(out.contains(&expected), "{expected}\n{out}");
    // Without -refresh, plan works from state alone and sees nothing.
    let (code, out, _) = output(
        kcideploy()
            .args(["plan", "-detailed-exitcode", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}");
    // apply -refresh plans as plan -refresh did, and repairs.
    let (code, out, err) = output(
        kcideploy()
            .args([
                "apply",
                "-refresh",
                "-auto-approve",
                "--cycle",
                "partial",
                "-f",
            ])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("drift: branch staging.kernelci.org"), "{out}");
    assert_eq!(
        remote
            .repo
            .refname_to_id("refs/heads/staging.kernelci.org")
            .expect("branch"),
        staging
    );

    // The dated tag deleted by hand is drift too.
    remote
        .repo
        .find_reference(&format!("refs/tags/{tag}"))
        .expect("tag")
        .delete()
        .expect("delete");
    let (code, out, err) = refreshed_plan(&plan);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains(&format!("drift: tag {tag} no longer exists on")),
        "{out}"
    );
}

#[test]
fn apply_refresh_with_a_saved_plan_says_why_not_and_what_to_do() {
    let fx = Fixture::new();
    fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let plan = fx.plan_file(&plan_with_steps(
        "  a: { kind: command, on: [config], with: { run: [\"true\"] } }\n",
    ));
    let saved = fx.path().join("saved.json");
    kcideploy()
        .args(["plan", "--cycle", "partial", "-f"])
        .arg(&plan)
        .arg("-out")
        .arg(&saved)
        .assert()
        .success();
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-refresh", "-auto-approve"])
            .arg(&saved),
    );
    assert_eq!(code, 64, "a usage error\n{out}{err}");
    assert!(
        err.contains("-refresh cannot be used with a saved plan")
            && err.contains("kcideploy plan -refresh -f PLAN.yaml -out FILE")
            && err.contains("kcideploy apply -refresh -f PLAN.yaml"),
        "{err}"
    );
    assert!(
        !fx.path().join(".kcideploy/t.state.json").exists(),
        "nothing applied"
    );
}

#[test]
fn plan_shows_what_apply_will_not_repeat_and_apply_runs_exactly_the_plan() {
    let fx = Fixture::new();
    fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let plan = fx.plan_file(&plan_with_steps(
        r#"  a: { kind: command, on: [config], with: { shell: "echo a >> ran-a.txt" } }
  b: { kind: command, needs: [a], with: { shell: "echo b >> ran-b.txt; test -f ok" } }
"#,
    ));
    let apply = || {
        output(
            kcideploy()
                .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
                .arg(&plan),
        )
    };
    let (code, out, err) = apply();
    assert_eq!(code, 1, "b fails the first time\n{out}{err}");
    std::fs::write(fx.path().join("ok"), "").expect("write");

    // a finished with the same inputs; b failed. The plan says a is not repeated.
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "--json", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    let step = |name: &str| {
        json["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .expect("step")
    };
    assert_eq!(step("a")["action"], "skip", "{out}");
    assert_eq!(step("a")["because"][0]["reason"], "done_before", "{out}");
    assert_eq!(step("b")["action"], "run", "{out}");
    assert_eq!(json["summary"]["done_before"], 1);
    let planned: Vec<String> = json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["action"] == "run")
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect();

    let (code, out, err) = apply();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Triggered, finished before with the same inputs (not repeated):")
            && out.contains("= a (command) in run"),
        "{out}"
    );
    // What ran is what the plan listed: b again, a not.
    let lines = |f: &str| {
        std::fs::read_to_string(fx.path().join(f))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(lines("ran-a.txt"), 1);
    assert_eq!(lines("ran-b.txt"), 2);
    assert_eq!(planned, ["b"]);
}
