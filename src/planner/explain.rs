//! What a change to each component triggers, from the plan file alone (`kcideploy plan
//! --explain-paths`): per component, its paths and every step it triggers, directly (`on`)
//! or through `needs`, in run order. The output depends on the plan file only, so a README
//! can carry it and a test can compare the two.

use std::collections::HashSet;
use std::fmt::Write;

use super::graph::step_order;
use crate::config::{Config, Cycle};

/// One component and what it triggers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggers {
    pub repo: String,
    pub component: String,
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    /// Steps in run order, with the cycle each belongs to.
    pub steps: Vec<(String, Cycle)>,
}

/// Every component in plan file order, with the steps a change to it triggers.
pub fn triggers(config: &Config) -> Vec<Triggers> {
    let order = step_order(config);
    let steps = &config.file.steps;
    config
        .file
        .components
        .iter()
        .map(|(name, c)| {
            let mut hit: HashSet<&str> = HashSet::new();
            let mut out = Vec::new();
            for step_name in &order {
                let Some(step) = steps.get(step_name) else {
                    continue;
                };
                let direct = step.on.iter().any(|o| &o.value == name);
                let through = step.needs.iter().any(|n| hit.contains(n.value.as_str()));
                if direct || through {
                    hit.insert(step_name);
                    out.push((step_name.clone(), step.cycle));
                }
            }
            Triggers {
                repo: c.repo.value.clone(),
                component: name.clone(),
                paths: c.paths.iter().map(|p| p.value.clone()).collect(),
                exclude: c.exclude.iter().map(|p| p.value.clone()).collect(),
                steps: out,
            }
        })
        .collect()
}

/// A Markdown table cell: `|` escaped, on one line.
fn cell(text: &str) -> String {
    crate::support::text::clean(text)
        .replace('|', "\\|")
        .replace('\n', " ")
}

fn code_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{}`", cell(i)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn step_list(steps: &[(String, Cycle)]) -> String {
    if steps.is_empty() {
        return "nothing".into();
    }
    steps
        .iter()
        .map(|(name, cycle)| match cycle {
            Cycle::Partial => format!("`{}`", cell(name)),
            Cycle::Full => format!("`{}` (full cycles)", cell(name)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table `plan --explain-paths` prints: one row per component, then one per `ignore:`
/// group, then the steps that run whatever changed.
pub fn render(config: &Config) -> String {
    let mut out =
        String::from("| repo | component | paths | a change triggers |\n|---|---|---|---|\n");
    for t in triggers(config) {
        let mut paths = code_list(&t.paths);
        if !t.exclude.is_empty() {
            let _ = write!(paths, " except {}", code_list(&t.exclude));
        }
        let _ = writeln!(
            out,
            "| `{}` | `{}` | {paths} | {} |",
            cell(&t.repo),
            cell(&t.component),
            step_list(&t.steps)
        );
    }
    for (name, repo) in &config.file.repos {
        for rule in &repo.ignore {
            let paths: Vec<String> = rule.paths.iter().map(|p| p.value.clone()).collect();
            let _ = writeln!(
                out,
                "| `{}` | ignored: {} | {} | nothing |",
                cell(name),
                cell(&rule.reason.value),
                code_list(&paths)
            );
        }
    }
    let always: Vec<(String, Cycle)> = step_order(config)
        .into_iter()
        .filter_map(|n| {
            let step = config.file.steps.get(&n)?;
            step.always.then_some((n, step.cycle))
        })
        .collect();
    if !always.is_empty() {
        let _ = writeln!(
            out,
            "\nWhatever changed, every cycle they belong to runs {}.",
            step_list(&always)
        );
    }
    out
}
