//! A conflict names what the change conflicts with: the base itself, or the changes merged
//! before it that touch the same files (never unrelated ones).

mod common;

use common::*;
use kcideploy::planner::{CycleRequest, ExclusionReason};

const PLAN: &str = r#"version: 1
name: t
repos:
  pipe: { url: repos/pipe.git, pending: { branches: "pr/*" } }
components:
  all: { repo: pipe, paths: ["**"] }
steps:
  restart: { kind: command, on: [all], with: { run: ["true"] } }
"#;

#[test]
fn a_conflict_with_the_base_names_the_base_not_the_changes_before_it() {
    let fx = Fixture::new();
    let remote = fx.repo(
        "pipe",
        &[("a.yaml", Some("a: 1\n")), ("b.yaml", Some("b: 1\n"))],
    );
    // pr/1 and pr/2 touch other files; pr/3 and pr/4 both change b.yaml.
    remote.branch("pr/1", ALICE, &[("x.yaml", Some("x\n"))]);
    remote.branch("pr/2", ALICE, &[("b.yaml", Some("b: 2\n"))]);
    remote.branch("pr/3", ALICE, &[("y.yaml", Some("y\n"))]);
    remote.branch("pr/4", ALICE, &[("b.yaml", Some("b: 4\n"))]);
    // The base moves a.yaml; pr/5 was branched before and changes a.yaml too.
    remote.branch("pr/5", ALICE, &[("a.yaml", Some("a: 5\n"))]);
    let moved = kcideploy::gitops::scratch::commit(
        &remote.repo,
        Some(remote.main),
        &[("a.yaml", Some("a: 0\n"))],
        ALICE,
        NOW - DAY,
        "base moves",
    )
    .expect("commit");
    kcideploy::gitops::scratch::set_branch(&remote.repo, "main", moved).expect("main");
    let config = fx.config(PLAN);
    let plan = fx.plan(&config, CycleRequest::Partial);
    let repo = &plan.repos["pipe"];
    let detail = |id: &str| {
        repo.excluded
            .iter()
            .find(|e| e.id == id)
            .map(|e| (e.reason, e.detail.clone()))
            .unwrap_or_else(|| panic!("{id} left out: {:?}", repo.excluded))
    };
    assert_eq!(
        detail("pr/4"),
        (
            ExclusionReason::Conflict,
            "conflicts with pr/2 merged before it in b.yaml".to_string()
        ),
        "only the change touching b.yaml is named"
    );
    assert_eq!(
        detail("pr/5"),
        (
            ExclusionReason::Conflict,
            "conflicts with the base main in a.yaml".to_string()
        ),
        "the base, though changes were merged before it"
    );
}
