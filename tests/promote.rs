//! `kcideploy promote --from STAGING.yaml` (#19 item 4): production deploys the revision of
//! `main` the last staging run whose full cycle passed was built on; a revision staging did
//! not pass is refused, naming it. Real git repos, real applies of both plans.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn write(fx: &Fixture, name: &str, text: &str) -> PathBuf {
    let path = fx.path().join(name);
    std::fs::write(&path, with_local_state(text)).expect("write plan");
    path
}

/// Staging (pending `pr/*`, a full-cycle check) and production (main as it is) of one repo.
fn setup() -> (Fixture, Remote, PathBuf, PathBuf) {
    let fx = Fixture::new();
    let core = fx.repo("core", &[("src/a.py", Some("a = 1\n"))]);
    let out = fx.path().join("deployed.txt");
    let staging = write(
        &fx,
        "staging.yaml",
        r#"version: 1
name: staging
repos:
  core: { url: repos/core.git, pending: { branches: "pr/*" } }
components:
  code: { repo: core, paths: ["src/**"] }
steps:
  check:
    kind: command
    cycle: full
    always: true
    with: { run: ["true"] }
"#,
    );
    let production = write(
        &fx,
        "production.yaml",
        &format!(
            r#"version: 1
name: production
repos:
  core: {{ url: repos/core.git, staging_branch: main, pending: {{ branches: "kcideploy/none" }} }}
components:
  code: {{ repo: core, paths: ["src/**"] }}
steps:
  deploy:
    kind: command
    on: [code]
    with: {{ shell: "echo ${{repos.core.sha}} > {}" }}
"#,
            out.display()
        ),
    );
    (fx, core, staging, production)
}

fn promote(production: &Path, staging: &Path, extra: &[&str]) -> (i32, String) {
    let (code, out, err) = output(
        kcideploy()
            .args(["promote", "-auto-approve", "--from"])
            .arg(staging)
            .args(extra)
            .arg("-f")
            .arg(production),
    );
    (code, format!("{out}{err}"))
}

fn deployed(fx: &Fixture) -> String {
    std::fs::read_to_string(fx.path().join("deployed.txt"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn production_gets_what_staging_passed_and_refuses_what_it_did_not() {
    let (fx, mut core, staging, production) = setup();
    // Nothing passed yet.
    let (code, out) = promote(&production, &staging, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no full cycle has passed on staging yet"),
        "{out}"
    );

    // A full staging cycle passes on main M1; then main moves on to M2, untested.
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "full", "-f"])
            .arg(&staging),
    );
    assert_eq!(code, 0, "{out}{err}");
    let m1 = core.main.to_string();
    let m2 = core
        .advance_main(&[("src/a.py", Some("a = 2\n"))])
        .to_string();

    // A full staging cycle on M2 fails: M2 did not pass.
    let failing = std::fs::read_to_string(&staging)
        .expect("staging")
        .replace(r#"with: { run: ["true"] }"#, r#"with: { run: ["false"] }"#);
    std::fs::write(&staging, failing).expect("write");
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "full", "-f"])
            .arg(&staging),
    );
    assert_ne!(code, 0, "the check fails on M2: {out}{err}");

    // Asked for M2: refused, naming it.
    let (code, out) = promote(&production, &staging, &["-rev", &format!("core={m2}")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("repo `core`: {m2} has not passed staging")),
        "{out}"
    );
    assert_eq!(deployed(&fx), "", "nothing deployed");

    // By default: M1, what staging passed, not main's M2.
    let (code, out) = promote(&production, &staging, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("promotion in effect: the revisions staging run "),
        "{out}"
    );
    assert_eq!(deployed(&fx), m1);
    let state = state_of(&fx, "production");
    assert_eq!(state.repos["core"].deployed, m1);
    let run = state.history.last().expect("the promotion's run");
    assert!(
        run.scope
            .promoted_from
            .as_deref()
            .is_some_and(|f| f.starts_with("staging run ")),
        "{run:?}"
    );
    // An older revision of the line staging passed may be promoted; again: nothing to do.
    let (code, out) = promote(&production, &staging, &["-rev", &format!("core={m1}")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Nothing to promote"), "{out}");
}
