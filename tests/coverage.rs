//! `kcideploy coverage` and `validate --strict`: every file of a repo's staging revision is in
//! a component or in an `ignore:` glob with a reason; the rest is listed and the exit code
//! is 4. Real git repos, the real binary.

mod common;

use common::*;

const PLAN: &str = r#"
version: 1
name: cov
repos:
  pipe:
    url: repos/pipe.git
    pending: { branches: "pr/*" }
    ignore:
      - paths: ["tests/**", "doc/**"]
        reason: tests run in CI, documentation is not deployed
components:
  config: { repo: pipe, paths: ["config/**"] }
  src: { repo: pipe, paths: ["src/**", "setup.py"], exclude: ["src/vendor/**"] }
steps:
  restart: { kind: command, on: [config, src], with: { run: ["true"] } }
"#;

fn fixture() -> (Fixture, Remote, std::path::PathBuf) {
    let fx = Fixture::new();
    let remote = fx.repo(
        "pipe",
        &[
            ("config/a.yaml", Some("a: 1\n")),
            ("src/main.py", Some("print()\n")),
            ("src/vendor/lib.py", Some("x = 1\n")),
            ("tests/test_main.py", Some("assert True\n")),
            ("tools/release.sh", Some("#!/bin/sh\n")),
        ],
    );
    let plan = fx.plan_file(PLAN);
    (fx, remote, plan)
}

fn coverage(plan: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    output(kcideploy().args(["coverage", "-f"]).arg(plan).args(extra))
}

#[test]
fn a_file_in_no_component_and_no_ignore_glob_is_listed_and_exits_4() {
    let (_fx, _remote, plan) = fixture();
    let (code, out, err) = coverage(&plan, &[]);
    assert_eq!(code, 4, "{out}{err}");
    // Excluded from its component and not ignored: not covered either.
    assert!(
        out.contains(
            "(base revision, nothing pending): 5 file(s), 2 in components, 1 ignored, 2 not covered:\n  src/vendor/lib.py\n  tools/release.sh\n"
        ),
        "{out}"
    );
    assert!(!out.contains("  tests/test_main.py"), "{out}");
    // Globs that match nothing are warnings.
    assert!(
        out.contains("warning: pipe: glob `setup.py` of component `src` matches no file"),
        "{out}"
    );
    assert!(
        out.contains("warning: pipe: glob `doc/**` of ignore matches no file"),
        "{out}"
    );
    assert!(out.contains("2 file(s) in no component"), "{out}");
}

#[test]
fn a_component_of_every_file_covers_none() {
    let fx = Fixture::new();
    fx.repo(
        "pipe",
        &[
            ("config/a.yaml", Some("a: 1\n")),
            ("tools/release.sh", Some("x\n")),
        ],
    );
    let plan = fx.plan_file(&PLAN.replace(
        "components:\n",
        "components:\n  any: { repo: pipe, paths: [\"**\"] }\n",
    ));
    let (code, out, err) = coverage(&plan, &[]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("1 not covered:\n  tools/release.sh\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "note: pipe: glob `**` of component `any` matches every file, so it covers none"
        ),
        "{out}"
    );
}

#[test]
fn ignoring_the_rest_with_a_reason_makes_it_pass() {
    let (fx, _remote, _) = fixture();
    let plan = fx.plan_file(&PLAN.replace(
        "        reason: tests run in CI, documentation is not deployed\n",
        "        reason: tests run in CI, documentation is not deployed\n      - paths: [\"tools/**\", \"src/vendor/**\"]\n        reason: release tooling and vendored code, never run on staging\n",
    ));
    let (code, out, err) = coverage(&plan, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("2 in components, 3 ignored, all covered"),
        "{out}"
    );
    assert!(out.contains("Every file is in a component"), "{out}");
}

#[test]
fn the_staging_revision_is_checked_and_a_new_file_in_a_new_folder_fails() {
    let (fx, remote, plan) = fixture();
    remote.branch("pr/1", ALICE, &[("newdir/service.yaml", Some("x: 1\n"))]);
    let (code, out, err) = coverage(&plan, &[]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("(staging revision, 1 change(s) merged): 6 file(s)"),
        "{out}"
    );
    assert!(out.contains("\n  newdir/service.yaml\n"), "{out}");
    // JSON names the same files.
    let (code, out, _) = coverage(&plan, &["--json"]);
    assert_eq!(code, 4);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        json[0]["uncovered"],
        serde_json::json!([
            "newdir/service.yaml",
            "src/vendor/lib.py",
            "tools/release.sh"
        ])
    );
    assert_eq!(json[0]["merged"], 1);
    drop(fx);
}

#[test]
fn offline_reads_the_cache_as_last_fetched() {
    let (fx, remote, plan) = fixture();
    remote.branch("pr/1", ALICE, &[("newdir/service.yaml", Some("x: 1\n"))]);
    // Never fetched: offline has nothing to read.
    let (code, _, err) = coverage(&plan, &["--offline"]);
    assert_eq!(code, 1);
    assert!(err.contains("repo `pipe` was never fetched"), "{err}");
    let (online, out, _) = coverage(&plan, &[]);
    assert_eq!(online, 4, "{out}");
    // The remote goes away: online fails, offline gives the same answer as before.
    std::fs::rename(
        fx.path().join("repos/pipe.git"),
        fx.path().join("repos/gone.git"),
    )
    .expect("rename");
    let (code, _, err) = coverage(&plan, &[]);
    assert_eq!(code, 1, "{err}");
    let (code, offline, err) = coverage(&plan, &["--offline"]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(offline, out);
}

#[test]
fn validate_strict_fails_the_same_way_and_plain_validate_does_not_fetch() {
    let (_fx, _remote, plan) = fixture();
    let (code, out, err) = output(kcideploy().args(["validate", "-f"]).arg(&plan));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("tools/release.sh"), "{out}");
    let (code, out, err) = output(kcideploy().args(["validate", "--strict", "-f"]).arg(&plan));
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains("valid plan file `cov`"), "{out}");
    assert!(out.contains("\n  tools/release.sh\n"), "{out}");
    // Terraform's single dash.
    let (code, _, _) = output(
        kcideploy()
            .args(["validate", "-strict", "-offline", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 4);
    // --offline means nothing without --strict.
    let (code, _, _) = output(kcideploy().args(["validate", "--offline", "-f"]).arg(&plan));
    assert_eq!(code, 64);
}

#[test]
fn an_ignore_group_needs_a_reason_and_valid_globs() {
    let fx = Fixture::new();
    let plan = fx.plan_file(&PLAN.replace(
        "reason: tests run in CI, documentation is not deployed",
        "reason: \"  \"",
    ));
    let (code, _, err) = output(kcideploy().args(["validate", "-f"]).arg(&plan));
    assert_eq!(code, 1);
    assert!(
        err.contains("plan.yaml:11:17: repo `pipe`: an `ignore` group without a reason"),
        "{err}"
    );
    let plan = fx.plan_file(&PLAN.replace("\"doc/**\"", "\"/doc/**\""));
    let (code, _, err) = output(kcideploy().args(["validate", "-f"]).arg(&plan));
    assert_eq!(code, 1);
    assert!(
        err.contains("plan.yaml:10:29: glob `/doc/**` in ignore paths can never match"),
        "{err}"
    );
    let plan = fx.plan_file(&PLAN.replace(
        "        reason: tests run in CI, documentation is not deployed\n",
        "",
    ));
    let (code, _, err) = output(kcideploy().args(["validate", "-f"]).arg(&plan));
    assert_eq!(code, 1);
    assert!(err.contains("missing field `reason`"), "{err}");
}
