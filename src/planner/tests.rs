//! The planner with inputs built in memory: no git repository, no network, a fixed clock.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use jiff::Timestamp;

use super::*;
use crate::forge::{ForgeSnapshot, PendingChange, RepoSnapshot};
use crate::gitops::stage::{DeployedDiff, Merge, StagedRepo};
use crate::state::{ChangeRef, Exclusion, RepoState, State};

const NOW: i64 = 1_795_507_200;
const BASE: &str = "1111111111111111111111111111111111111111";
const DEPLOYED: &str = "2222222222222222222222222222222222222222";
const STAGING: &str = "3333333333333333333333333333333333333333";

const PLAN_FILE: &str = r#"version: 1
name: t
repos:
  pipe:
    url: repos/pipe.git
    pending: { branches: "pr/*", trusted: [alice@example.org], max_age: 14d, skip: ["pr/wip-*"] }
components:
  config: { repo: pipe, paths: ["config/**"] }
  src: { repo: pipe, paths: ["src/**"] }
steps:
  build: { kind: command, on: [src], with: { run: ["true"] } }
  restart: { kind: command, on: [config], needs: [build], with: { run: ["true"] } }
"#;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).expect("time")
}

fn config() -> Config {
    match Config::from_str(Path::new("/plans/t.yaml"), PLAN_FILE.to_string()) {
        Ok(c) => c,
        Err(e) => panic!("{:?}", miette::Report::new(e)),
    }
}

fn change(id: &str, author: &str, days_old: i64) -> PendingChange {
    PendingChange {
        id: id.into(),
        head: format!("{:0>40}", id.len() * 7 + days_old as usize),
        author: author.into(),
        title: format!("change {id}"),
        labels: vec![],
        draft: false,
        updated_at: Timestamp::from_second(NOW - days_old * 86_400).expect("time"),
        base: None,
        source: None,
        files: None,
        checks: None,
    }
}

fn snapshot(changes: Vec<PendingChange>) -> ForgeSnapshot {
    let mut repos = IndexMap::new();
    repos.insert(
        "pipe".to_string(),
        RepoSnapshot {
            base_branch: "main".into(),
            base: BASE.into(),
            remote_staging: None,
            changes,
            cache: PathBuf::from("/cache/pipe.git"),
            trusted: Some(vec!["alice@example.org".into()]),
        },
    );
    ForgeSnapshot {
        repos,
        cache_dir: PathBuf::from("/cache"),
    }
}

fn state(deployed_changes: &[(&str, &str)]) -> State {
    let mut state = State::new();
    state.repos.insert(
        "pipe".into(),
        RepoState {
            deployed: DEPLOYED.into(),
            base: Some(BASE.into()),
            included: deployed_changes
                .iter()
                .map(|(id, head)| ChangeRef {
                    id: id.to_string(),
                    head: head.to_string(),
                })
                .collect(),
            deployed_at: None,
        },
    );
    state
}

fn staged(
    merges: Vec<(&str, Merge)>,
    changed: &[&str],
    base_paths: &[&str],
) -> IndexMap<String, StagedRepo> {
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let mut out = IndexMap::new();
    out.insert(
        "pipe".to_string(),
        StagedRepo {
            staging: STAGING.into(),
            merges: merges
                .into_iter()
                .map(|(id, m)| (id.to_string(), m))
                .collect(),
            diff: DeployedDiff::Deployed {
                changed: set(changed),
                base_paths: set(base_paths),
            },
        },
    );
    out
}

fn plan_of(
    config: &Config,
    snap: &ForgeSnapshot,
    staged: &IndexMap<String, StagedRepo>,
    state: Option<&State>,
) -> Result<Plan, PlanError> {
    plan(&PlanInputs {
        config,
        snapshot: snap,
        staged,
        state,
        drift: &BTreeMap::new(),
        cycle: CycleRequest::Partial,
        now: now(),
        plan_file: "/plans/t.yaml",
        scope: &Default::default(),
        pins: &BTreeMap::new(),
    })
}

fn merged(paths: &[&str]) -> Merge {
    Merge::Merged {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn screening_and_merges_in_forge_order_with_reasons() {
    let config = config();
    let snap = snapshot(vec![
        change("pr/1", "alice@example.org", 1),
        change("pr/2", "mallory@example.net", 1),
        change("pr/3", "alice@example.org", 30),
        change("pr/4", "alice@example.org", 1),
        change("pr/wip-x", "alice@example.org", 1),
        change("pr/5", "alice@example.org", 1),
    ]);
    let screened = screen_repo(&config, "pipe", &snap.repos["pipe"], None, now());
    let ids: Vec<String> = to_merge(&screened).into_iter().map(|m| m.id).collect();
    assert_eq!(
        ids,
        ["pr/1", "pr/4", "pr/5"],
        "untrusted, stale and skip-listed are not merged"
    );
    let staged = staged(
        vec![
            ("pr/1", merged(&["config/a.yaml"])),
            (
                "pr/4",
                Merge::Conflict {
                    paths: vec!["config/a.yaml".into()],
                    with_base: false,
                },
            ),
            ("pr/5", Merge::Empty),
        ],
        &["config/a.yaml"],
        &[],
    );
    let plan = plan_of(&config, &snap, &staged, Some(&state(&[]))).expect("plan");
    let repo = &plan.repos["pipe"];
    assert_eq!(repo.included.len(), 1);
    assert_eq!(repo.included[0].paths, ["config/a.yaml"]);
    let out: Vec<(&str, ExclusionReason)> = repo
        .excluded
        .iter()
        .map(|e| (e.id.as_str(), e.reason))
        .collect();
    assert_eq!(
        out,
        [
            ("pr/2", ExclusionReason::Untrusted),
            ("pr/3", ExclusionReason::Stale),
            ("pr/4", ExclusionReason::Conflict),
            ("pr/wip-x", ExclusionReason::SkipList),
            ("pr/5", ExclusionReason::Empty),
        ]
    );
    assert_eq!(
        repo.excluded[2].detail,
        "conflicts with pr/1 merged before it in config/a.yaml"
    );
    assert_eq!(repo.staging, STAGING);
}

#[test]
fn changed_paths_are_attributed_and_trigger_steps_through_needs() {
    let config = config();
    let snap = snapshot(vec![change("pr/1", "alice@example.org", 1)]);
    let staged = staged(
        vec![("pr/1", merged(&["src/a.py"]))],
        &["src/a.py", "config/base.yaml", "config/gone.yaml"],
        &["config/base.yaml"],
    );
    let plan = plan_of(&config, &snap, &staged, Some(&state(&[]))).expect("plan");
    let by_path: BTreeMap<&str, Vec<&str>> = plan.repos["pipe"]
        .attribution
        .iter()
        .map(|a| {
            (
                a.path.as_str(),
                a.changes.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(by_path["src/a.py"], ["pr/1"]);
    assert_eq!(by_path["config/base.yaml"], ["base"]);
    assert_eq!(by_path["config/gone.yaml"], ["removed"]);
    assert!(plan.components["src"].affected && plan.components["config"].affected);
    let run: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| s.action == Action::Run)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(run, ["build", "restart"]);
}

#[test]
fn blamed_heads_and_approvals_come_from_state() {
    let config = config();
    let snap = snapshot(vec![
        change("pr/1", "alice@example.org", 1),
        change("pr/2", "mallory@example.net", 1),
    ]);
    let mut st = state(&[]);
    st.exclusions.push(Exclusion {
        id: "e1".into(),
        repo: "pipe".into(),
        change: "pr/1".into(),
        head: snap.repos["pipe"].changes[0].head.clone(),
        reason: crate::state::ExclusionCause::Blamed,
        step: "build".into(),
        detail: String::new(),
        log_tail: None,
        at: now(),
        run_id: "r1".into(),
    });
    st.approvals.push(crate::state::Approval {
        repo: "pipe".into(),
        change: "pr/2".into(),
        head: snap.repos["pipe"].changes[1].head.clone(),
        by: "alice".into(),
        at: now(),
    });
    let screened = screen_repo(&config, "pipe", &snap.repos["pipe"], Some(&st), now());
    let merging: Vec<String> = to_merge(&screened).into_iter().map(|m| m.id).collect();
    assert_eq!(merging, ["pr/2"], "blamed left out, approved let in");
    let staged = staged(vec![("pr/2", merged(&["src/x"]))], &["src/x"], &[]);
    let plan = plan_of(&config, &snap, &staged, Some(&st)).expect("plan");
    assert_eq!(
        plan.repos["pipe"].excluded[0].reason,
        ExclusionReason::Blamed
    );
    assert!(
        plan.repos["pipe"].excluded[0]
            .detail
            .contains("exclusions clear e1")
    );
}

#[test]
fn the_same_inputs_give_the_same_plan_and_other_staging_is_refused() {
    let config = config();
    let snap = snapshot(vec![change("pr/1", "alice@example.org", 1)]);
    let st = state(&[("pr/1", "old")]);
    let good = staged(vec![("pr/1", merged(&["src/a"]))], &["src/a"], &[]);
    let a = plan_of(&config, &snap, &good, Some(&st)).expect("plan");
    let b = plan_of(&config, &snap, &good, Some(&st)).expect("plan");
    assert_eq!(a, b);
    assert_eq!(a.fingerprint.repos["pipe"].staging, STAGING);
    // Staged with a change screening did not let in: refused, not misattributed.
    let wrong = staged(vec![("pr/9", merged(&["src/a"]))], &["src/a"], &[]);
    assert!(matches!(
        plan_of(&config, &snap, &wrong, Some(&st)),
        Err(PlanError::Unstaged { .. })
    ));
    let missing = staged(vec![], &[], &[]);
    assert!(matches!(
        plan_of(&config, &snap, &missing, Some(&st)),
        Err(PlanError::Unstaged { .. })
    ));
}
