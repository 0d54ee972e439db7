//! What the command line asks of a plan beyond the plan file: `-target` (restrict the plan to
//! steps and what they need), `-replace` (run steps although nothing changed) and rollback
//! (deploy the revisions an earlier run recorded). Pure.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::types::{Action, ExclusionReason, RepoPlan, StepPlan, StepReason};
use super::{Screened, left_out, screen_repo};
use crate::config::Config;
use crate::forge::RepoSnapshot;
use crate::state::{RunRecord, RunResult, RunRevision, RunScope, State};

/// The warning a targeted plan starts with (text and `--json`).
pub const TARGET_WARNING: &str = "-target in effect: this plan is partial";

/// `flag`'s step names that the plan file does not have, as one message naming each with a
/// did-you-mean and the known names; `None` when all are known.
pub fn unknown_steps(config: &Config, flag: &str, names: &[String]) -> Option<String> {
    let known: Vec<&String> = config.file.steps.keys().collect();
    let unknown: Vec<String> = names
        .iter()
        .filter(|n| !config.file.steps.contains_key(*n))
        .map(|n| {
            let best = known
                .iter()
                .map(|k| (strsim::jaro_winkler(n, k), *k))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            match best {
                Some((_, k)) => format!("`{n}` (did you mean `{k}`?)"),
                None => format!("`{n}`"),
            }
        })
        .collect();
    if unknown.is_empty() {
        return None;
    }
    let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
    Some(format!(
        "{flag}: no step {} in {}; its steps: {}",
        unknown.join(", no step "),
        config.path.display(),
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    ))
}

/// `-target`: every step that would run but is neither a target nor needed by one (through
/// `needs`, and the `git_push` steps publishing the revisions it uses) is skipped instead.
pub fn restrict(steps: &mut [StepPlan], targets: &[String]) {
    if targets.is_empty() {
        return;
    }
    let mut keep: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = targets.to_vec();
    while let Some(name) = todo.pop() {
        if !keep.insert(name.clone()) {
            continue;
        }
        if let Some(step) = steps.iter().find(|s| s.name == name) {
            todo.extend(step.needs.iter().cloned());
            todo.extend(step.after_push.iter().map(|p| p.step.clone()));
        }
    }
    for step in steps
        .iter_mut()
        .filter(|s| s.action == Action::Run && !keep.contains(&s.name))
    {
        step.action = Action::Skip;
        step.because.insert(0, StepReason::Untargeted);
    }
}

/// The lines a plan made with this scope warns with.
pub fn warnings(scope: &RunScope) -> Vec<String> {
    let mut out = Vec::new();
    if !scope.targets.is_empty() {
        out.push(format!(
            "{TARGET_WARNING}: only {} and the steps they need; repos with steps left out keep their deployed revision",
            names(&scope.targets)
        ));
    }
    if !scope.replace.is_empty() {
        let verb = if scope.replace.len() == 1 {
            "runs"
        } else {
            "run"
        };
        out.push(format!(
            "-replace in effect: {} {verb} although nothing changed",
            names(&scope.replace)
        ));
    }
    if let Some(run) = &scope.rollback_of {
        out.push(format!(
            "rollback in effect: the revisions run {run} deployed; pending changes are left out"
        ));
    }
    if let Some(from) = &scope.promoted_from {
        out.push(format!(
            "promotion in effect: the revisions {from} passed; pending changes are left out"
        ));
    }
    out
}

fn names(list: &[String]) -> String {
    list.iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Screening with rollback pins: a pinned repo merges none of its pending changes (its
/// staging revision is the pinned one); the others are screened as usual.
pub fn screen<'a>(
    config: &Config,
    name: &str,
    snap: &'a RepoSnapshot,
    state: Option<&State>,
    now: Timestamp,
    pins: &BTreeMap<String, RunRevision>,
    rollback_of: Option<&str>,
) -> Vec<Screened<'a>> {
    if !pins.contains_key(name) {
        return screen_repo(config, name, snap, state, now);
    }
    let detail = format!(
        "the repo is pinned to the revision {} recorded",
        rollback_of.map_or("an earlier run".to_string(), |r| format!("run {r}"))
    );
    snap.changes
        .iter()
        .map(|c| {
            Screened::Out(left_out(
                c,
                ExclusionReason::Rollback,
                detail.clone(),
                Vec::new(),
            ))
        })
        .collect()
}

/// A pinned repo's part of the plan: the base the pinned run recorded, and every changed
/// path attributed to the rollback (not to the base or to changes no longer included).
pub fn pin_repo(repo: &mut RepoPlan, pin: &RunRevision) {
    repo.base = pin.base.clone();
    for path in &mut repo.attribution {
        path.changes = vec!["rollback".to_string()];
    }
}

/// The run a rollback deploys again: `id` (a run id, or a prefix naming one run), else the
/// newest successful run (not a `-target` one) before the newest run whose revisions are not
/// those deployed now. It must have succeeded and recorded its revisions.
pub fn rollback_run<'a>(state: &'a State, id: Option<&str>) -> Result<&'a RunRecord, String> {
    let good = |r: &&RunRecord| r.result == RunResult::Success && !r.revisions.is_empty();
    let Some(id) = id else {
        let before_newest = state.history.len().saturating_sub(1);
        // A `-target` run deployed only part of what it recorded: not a default.
        return state.history[..before_newest]
            .iter()
            .rev()
            .filter(good)
            .filter(|r| r.scope.targets.is_empty())
            .find(|r| {
                r.revisions
                    .iter()
                    .any(|(repo, rev)| state.repos.get(repo).map(|d| &d.deployed) != Some(&rev.staging))
            })
            .ok_or_else(|| {
                "no earlier successful run deployed other revisions than those deployed now: nothing to roll back to (kcideploy state history lists the runs)".to_string()
            });
    };
    let found: Vec<&RunRecord> = state
        .history
        .iter()
        .filter(|r| r.id.starts_with(id))
        .collect();
    let run = match found.as_slice() {
        [run] => *run,
        [] => {
            let known: Vec<&str> = state
                .history
                .iter()
                .rev()
                .filter(good)
                .map(|r| r.id.as_str())
                .take(10)
                .collect();
            return Err(format!(
                "no run `{id}` in the state's history; successful runs, newest first: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        many => {
            let ids: Vec<&str> = many.iter().map(|r| r.id.as_str()).collect();
            return Err(format!("`{id}` names several runs: {}", ids.join(", ")));
        }
    };
    if run.result != RunResult::Success {
        return Err(format!(
            "run {} ended {}: a rollback deploys what a successful run deployed",
            run.id, run.result
        ));
    }
    if run.revisions.is_empty() {
        return Err(format!(
            "run {} recorded no revisions (made by an older kcideploy): it cannot be rolled back to",
            run.id
        ));
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cycle, StepKind};
    use crate::planner::types::PublishedBy;

    fn step(name: &str, needs: &[&str], pushes: &[&str]) -> StepPlan {
        StepPlan {
            name: name.into(),
            kind: StepKind::Command,
            cycle: Cycle::Partial,
            action: Action::Run,
            needs: needs.iter().map(|n| n.to_string()).collect(),
            after: Vec::new(),
            when_failed: Vec::new(),
            after_push: pushes
                .iter()
                .map(|p| PublishedBy {
                    step: p.to_string(),
                    repo: "r".into(),
                })
                .collect(),
            because: vec![StepReason::NotTriggered],
            params: Default::default(),
            compared_with: None,
            changes: Vec::new(),
        }
    }

    #[test]
    fn target_keeps_what_it_needs_and_the_pushes_it_uses() {
        let mut steps = vec![
            step("push", &[], &[]),
            step("base", &[], &[]),
            step("build", &["base"], &["push"]),
            step("test", &["build"], &[]),
            step("other", &[], &[]),
        ];
        restrict(&mut steps, &["test".to_string()]);
        let left: Vec<&str> = steps
            .iter()
            .filter(|s| s.is_untargeted())
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(left, ["other"]);
        assert_eq!(steps[4].action, Action::Skip);
        restrict(&mut steps, &[]);
        assert_eq!(steps[0].action, Action::Run, "no target: nothing changes");
    }

    fn run(id: &str, result: RunResult, staging: &str) -> RunRecord {
        RunRecord {
            id: id.into(),
            plan_digest: String::new(),
            inputs_digest: String::new(),
            cycle: Cycle::Partial,
            start_serial: 0,
            started_at: Timestamp::UNIX_EPOCH,
            finished_at: None,
            result,
            steps: Vec::new(),
            scope: RunScope::default(),
            revisions: [(
                "r".to_string(),
                RunRevision {
                    staging: staging.into(),
                    base: staging.into(),
                    included: Vec::new(),
                },
            )]
            .into(),
            images: BTreeMap::new(),
            pins: BTreeMap::new(),
        }
    }

    #[test]
    fn the_default_is_the_last_good_run_before_the_newest_that_deployed_other_revisions() {
        let mut state = State::new();
        state.history = vec![
            run("1-a", RunResult::Success, "aaa"),
            run("2-b", RunResult::Success, "bbb"),
            run("3-b", RunResult::Success, "bbb"),
            run("4-c", RunResult::Failed, "ccc"),
            run("5-d", RunResult::Success, "ddd"),
        ];
        state.repos.insert(
            "r".into(),
            crate::state::RepoState {
                deployed: "ddd".into(),
                base: None,
                included: Vec::new(),
                deployed_at: None,
            },
        );
        assert_eq!(rollback_run(&state, None).map(|r| r.id.as_str()), Ok("3-b"));
        state.history[2].scope.targets = vec!["x".into()];
        assert_eq!(
            rollback_run(&state, None).map(|r| r.id.as_str()),
            Ok("2-b"),
            "a -target run is passed over"
        );
        // Runs that deployed what runs now are passed over.
        state.repos.get_mut("r").expect("r").deployed = "bbb".into();
        assert_eq!(rollback_run(&state, None).map(|r| r.id.as_str()), Ok("1-a"));
        assert_eq!(
            rollback_run(&state, Some("2")).map(|r| r.id.as_str()),
            Ok("2-b")
        );
        let failed = rollback_run(&state, Some("4-c")).expect_err("failed run");
        assert!(failed.contains("ended failed"), "{failed}");
        let unknown = rollback_run(&state, Some("9")).expect_err("unknown");
        assert!(
            unknown.contains("newest first: 5-d, 3-b, 2-b, 1-a"),
            "{unknown}"
        );
    }
}
