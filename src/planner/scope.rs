//! What the command line asks of a plan beyond the plan file: `-target` (restrict the plan to
//! steps and what they need), `-replace` (run steps although nothing changed) and rollback
//! (deploy the revisions an earlier run recorded). Pure.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::types::{Action, ExclusionReason, RepoPlan, StepPlan, StepReason};
use super::{Screened, left_out, screen_repo};
use crate::config::{Config, RepoConfig};
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
        out.push(format!(
            "-replace in effect: {} run(s) although nothing changed",
            names(&scope.replace)
        ));
    }
    if let Some(run) = &scope.rollback_of {
        out.push(format!(
            "rollback in effect: the revisions run {run} deployed; pending changes are left out"
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
    name: &str,
    repo_cfg: &RepoConfig,
    snap: &'a RepoSnapshot,
    state: Option<&State>,
    now: Timestamp,
    pins: &BTreeMap<String, RunRevision>,
    rollback_of: Option<&str>,
) -> Vec<Screened<'a>> {
    if !pins.contains_key(name) {
        return screen_repo(name, repo_cfg, snap, state, now);
    }
    let detail = format!(
        "the rollback deploys the revision run {} deployed",
        rollback_of.unwrap_or("?")
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
/// newest successful run before the newest run whose revisions are not those deployed now.
/// It must have succeeded and recorded its revisions.
pub fn rollback_run<'a>(state: &'a State, id: Option<&str>) -> Result<&'a RunRecord, String> {
    let good = |r: &&RunRecord| r.result == RunResult::Success && !r.revisions.is_empty();
    let Some(id) = id else {
        let before_newest = state.history.len().saturating_sub(1);
        return state.history[..before_newest]
            .iter()
            .rev()
            .filter(good)
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
