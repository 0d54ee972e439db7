//! `kcideploy plan --pr REPO#N` (#19 item 1): what one pending change alone triggers, with
//! the reason chain, and whether it merges with the others; real git repos.

mod common;

use common::*;

const STEPS: &str = r#"  restart:
    kind: command
    on: [config]
    with: { run: ["true"] }
  docs:
    kind: command
    needs: [restart]
    with: { run: ["true"] }
"#;

fn setup() -> (Fixture, std::path::PathBuf) {
    let fx = Fixture::new();
    let pipe = fx.repo(
        "pipe",
        &[("config/a.yaml", Some("a: 1\n")), ("README", Some("r\n"))],
    );
    pipe.branch("pr/a", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    pipe.branch("pr/b", BOB, &[("config/a.yaml", Some("a: 3\n"))]);
    pipe.branch("pr/readme", BOB, &[("README", Some("r2\n"))]);
    let config = fx.config(&plan_with_steps(STEPS));
    // Staging runs main: the preview compares with what is deployed.
    fx.deploy(&config, &[("pipe", pipe.main)], Some(NOW - 3600));
    (fx, config.path.clone())
}

fn preview(plan: &std::path::Path, pr: &str) -> (i32, String, String) {
    output(
        kcideploy()
            .args(["plan", "--at", &at(), "--pr", pr, "-f"])
            .arg(plan),
    )
}

#[test]
fn a_change_shows_its_components_steps_and_reason_chains() {
    let (_fx, plan) = setup();
    let (code, out, err) = preview(&plan, "pipe#pr/a");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("<!-- kcideploy-preview:t:pipe -->"),
        "{out}"
    );
    assert!(out.contains("pipe pr/a by "), "{out}");
    assert!(
        out.contains("- `config`: `config/a.yaml` (`config/**`)"),
        "{out}"
    );
    assert!(
        out.contains("- `restart` (command): pr/a → config/a.yaml → config/** → config → restart"),
        "{out}"
    );
    assert!(
        out.contains("- `docs` (command): needs restart, which runs"),
        "{out}"
    );
    assert!(
        out.contains("**Merge:** merges cleanly with the 1 other"),
        "{out}"
    );
}

#[test]
fn a_change_that_conflicts_with_one_merged_before_it_says_so() {
    let (_fx, plan) = setup();
    let (code, out, err) = preview(&plan, "pipe#pr/b");
    assert_eq!(code, 0, "{err}");
    // Alone it would restart; with pr/a (merged first) it conflicts on the file.
    assert!(
        out.contains("- `restart` (command): pr/b → config/a.yaml"),
        "{out}"
    );
    assert!(
        out.contains("**Merge:** left out with the other pending changes: conflict:")
            && out.contains("`config/a.yaml`"),
        "{out}"
    );
}

#[test]
fn a_change_in_no_component_deploys_nothing_and_bad_names_are_clear() {
    let (_fx, plan) = setup();
    let (code, out, _) = preview(&plan, "pipe#pr/readme");
    assert_eq!(code, 0);
    assert!(out.contains("nothing would be deployed"), "{out}");
    assert!(out.contains("**Steps** (partial cycle): none"), "{out}");
    let (code, _, err) = preview(&plan, "pipe#pr/nope");
    assert_eq!(code, 1);
    assert!(
        err.contains("pipe has no pending change pr/nope (pending: pr/a, pr/b, pr/readme)"),
        "{err}"
    );
    let (code, _, err) = preview(&plan, "pipe");
    assert_ne!(code, 0);
    assert!(err.contains("--pr pipe: write REPO#N"), "{err}");
}

#[test]
fn with_nothing_deployed_the_preview_says_the_first_deploy_runs_everything() {
    let fx = Fixture::new();
    let pipe = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    pipe.branch("pr/a", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    let plan = fx.plan_file(&plan_with_steps(STEPS));
    let (code, out, err) = preview(&plan, "pipe#pr/a");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Nothing is deployed yet"), "{out}");
}
