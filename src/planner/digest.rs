//! Digests of what a step and a run deploy: a step that finished with the same inputs is not
//! repeated, and an unfinished run with the same inputs is resumed. The planner uses them to
//! say so in the plan, and apply to record and check what ran: both agree by construction.

use std::collections::BTreeSet;

use indexmap::IndexMap;
use sha2::{Digest, Sha256};

use super::types::RepoPlan;
use crate::config::{Config, Cycle};
use crate::planner::Plan;

/// Repos a step deploys: those of its `on` components and `with.repo`, and of the steps it
/// needs. A repo's deployed revision moves only when all its steps succeeded.
pub fn step_repos(config: &Config, step: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![step.to_string()];
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(s) = config.file.steps.get(&name) else {
            continue;
        };
        for on in &s.on {
            if let Some(c) = config.file.components.get(&on.value) {
                out.insert(c.repo.value.clone());
            }
        }
        if let Some(repo) = config.settings(&name).repo() {
            out.insert(repo.to_string());
        }
        todo.extend(s.needs.iter().map(|n| n.value.clone()));
    }
    out
}

/// Digest of a step's inputs: its settings and the staging revisions of its repos (all repos
/// when it names none); `always` steps also the run, so each run runs them once.
pub fn step_digest(
    config: &Config,
    repos_plan: &IndexMap<String, RepoPlan>,
    step: &str,
    run_id: &str,
) -> String {
    let Some(s) = config.file.steps.get(step) else {
        return String::new();
    };
    let mut repos = step_repos(config, step);
    if repos.is_empty() {
        repos = repos_plan.keys().cloned().collect();
    }
    let revisions: Vec<(&String, &str)> = repos
        .iter()
        .map(|r| {
            (
                r,
                repos_plan.get(r).map(|p| p.staging.as_str()).unwrap_or(""),
            )
        })
        .collect();
    let doc = serde_json::json!({
        "step": step,
        "kind": s.kind.value.as_str(),
        "with": s.with.value,
        "revisions": revisions,
        "run": if s.always { Some(run_id) } else { None },
    });
    hex::encode(Sha256::digest(doc.to_string().as_bytes()))
}

/// Digest of what a run deploys; an unfinished run with the same digest is resumed.
pub fn inputs_digest(plan: &Plan) -> String {
    inputs_digest_of(plan.cycle, &plan.fingerprint.plan_file, &plan.repos)
}

/// [`inputs_digest`] from its parts, before the plan is whole.
pub fn inputs_digest_of(
    cycle: Cycle,
    plan_file_hash: &str,
    repos: &IndexMap<String, RepoPlan>,
) -> String {
    let doc = serde_json::json!({
        "cycle": cycle,
        "plan_file": plan_file_hash,
        "staging": repos.iter().map(|(k, r)| (k, &r.staging)).collect::<Vec<_>>(),
    });
    hex::encode(Sha256::digest(doc.to_string().as_bytes()))
}
