//! Affected components and triggered steps. Pure.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use globset::GlobSetBuilder;
use indexmap::IndexMap;
use petgraph::graph::{DiGraph, NodeIndex};

use super::types::{
    Action, ComponentPlan, DiffBasis, PathReason, PublishedBy, RepoPlan, StepPlan, StepReason,
};
use crate::config::{Config, Cycle, glob};

/// Match every component's globs against its repo's changed paths.
pub fn affected_components(
    config: &Config,
    repos: &IndexMap<String, RepoPlan>,
) -> IndexMap<String, ComponentPlan> {
    let mut out = IndexMap::new();
    for (name, component) in &config.file.components {
        let repo_name = component.repo.value.clone();
        let mut plan = ComponentPlan {
            repo: repo_name.clone(),
            affected: false,
            initial: false,
            because: Vec::new(),
        };
        let Some(repo) = repos.get(&repo_name) else {
            out.insert(name.clone(), plan);
            continue;
        };
        if repo.diff_basis != DiffBasis::Deployed {
            plan.affected = true;
            plan.initial = true;
            out.insert(name.clone(), plan);
            continue;
        }
        let (include, exclude) = (globset(&component.paths), globset(&component.exclude));
        for changed in &repo.attribution {
            let hits = include.matches(&changed.path);
            let Some(&first) = hits.first() else { continue };
            if exclude.is_match(&changed.path) {
                continue;
            }
            for change in &changed.changes {
                plan.because.push(PathReason {
                    change: change.clone(),
                    path: changed.path.clone(),
                    pattern: component.paths[first].value.clone(),
                });
            }
        }
        plan.affected = !plan.because.is_empty();
        out.insert(name.clone(), plan);
    }
    out
}

/// Whether `path` belongs to component `name` (its paths, minus its excludes).
pub fn component_matches(config: &Config, name: &str, path: &str) -> bool {
    config
        .file
        .components
        .get(name)
        .is_some_and(|c| globset(&c.paths).is_match(path) && !globset(&c.exclude).is_match(path))
}

pub(crate) fn globset(patterns: &[crate::config::SpannedString]) -> globset::GlobSet {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        // Patterns were validated with the plan file.
        if let Ok(g) = glob(&p.value) {
            builder.add(g);
        }
    }
    builder
        .build()
        .unwrap_or_else(|_| globset::GlobSet::empty())
}

/// The step graph: an edge from each step in `needs` or `after` to the step naming it, and
/// from each `git_push` to the steps that use the revision it publishes ([`published_by`]).
pub fn step_graph(config: &Config) -> (DiGraph<String, ()>, HashMap<String, NodeIndex>) {
    let (mut graph, index) = written_graph(config);
    for (name, pushes) in published_by(config) {
        for push in pushes {
            if let (Some(&from), Some(&to)) = (index.get(&push.step), index.get(&name)) {
                graph.update_edge(from, to, ());
            }
        }
    }
    (graph, index)
}

/// The edges the plan file writes: `needs` and `after`.
fn written_graph(config: &Config) -> (DiGraph<String, ()>, HashMap<String, NodeIndex>) {
    let mut graph = DiGraph::new();
    let mut index = HashMap::new();
    for name in config.file.steps.keys() {
        index.insert(name.clone(), graph.add_node(name.clone()));
    }
    for (name, step) in &config.file.steps {
        for (_, need) in step.order_deps() {
            if let (Some(&from), Some(&to)) = (index.get(&need.value), index.get(name)) {
                graph.add_edge(from, to, ());
            }
        }
    }
    (graph, index)
}

/// Push before use: each step that uses a repo's staging revision (`with.repo`: a clone of
/// it in a Dockerfile, a compose checkout, the pipe-cleaner's patches) runs after the
/// `git_push` steps of that repo, whatever the plan file says, when both run. The plan file
/// wins where it orders the push after the step (directly or through other steps): no cycle
/// is made. By step, in plan file order; steps with none are left out.
pub fn published_by(config: &Config) -> IndexMap<String, Vec<PublishedBy>> {
    let pushes: Vec<(&String, String)> = config
        .file
        .steps
        .iter()
        .filter(|(_, s)| s.kind.value == crate::config::StepKind::GitPush)
        .filter_map(|(n, _)| config.settings(n).repo().map(|r| (n, r.to_string())))
        .collect();
    let (mut graph, index) = written_graph(config);
    let mut out = IndexMap::new();
    for name in config.file.steps.keys() {
        let Some(repo) = config.settings(name).repo().map(str::to_string) else {
            continue;
        };
        let mut by = Vec::new();
        for (push, pushed) in &pushes {
            let (from, to) = (index[*push], index[name]);
            if *push == name
                || *pushed != repo
                || petgraph::algo::has_path_connecting(&graph, to, from, None)
            {
                continue;
            }
            graph.update_edge(from, to, ());
            by.push(PublishedBy {
                step: push.to_string(),
                repo: repo.clone(),
            });
        }
        if !by.is_empty() {
            out.insert(name.clone(), by);
        }
    }
    out
}

/// Steps in dependency order; among steps free to go, plan file order first.
/// Steps on a cycle (rejected by validation) come last, in file order.
pub fn step_order(config: &Config) -> Vec<String> {
    let (graph, _) = step_graph(config);
    let mut indegree: Vec<usize> = graph
        .node_indices()
        .map(|n| {
            graph
                .neighbors_directed(n, petgraph::Direction::Incoming)
                .count()
        })
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = indegree
        .iter()
        .enumerate()
        .filter(|(_, d)| **d == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(indegree.len());
    let mut placed = vec![false; indegree.len()];
    while let Some(Reverse(i)) = ready.pop() {
        placed[i] = true;
        order.push(graph[NodeIndex::new(i)].clone());
        for next in graph.neighbors_directed(NodeIndex::new(i), petgraph::Direction::Outgoing) {
            let j = next.index();
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    for (i, done) in placed.iter().enumerate() {
        if !done {
            order.push(graph[NodeIndex::new(i)].clone());
        }
    }
    order
}

/// Decide every step: triggered by components, by `needs`, `always`, drift or `-replace`;
/// full-only steps wait for a full cycle (unless `-replace` names them). Triggering
/// propagates through `needs` whatever the cycle.
pub fn plan_steps(
    config: &Config,
    components: &IndexMap<String, ComponentPlan>,
    cycle: Cycle,
    drift: &std::collections::BTreeMap<String, String>,
    replace: &[String],
) -> Vec<StepPlan> {
    let mut triggered: HashMap<String, bool> = HashMap::new();
    let mut published = published_by(config);
    let mut out = Vec::new();
    for name in step_order(config) {
        let step = &config.file.steps[&name];
        let mut because = Vec::new();
        for on in &step.on {
            let Some(component) = components.get(&on.value) else {
                continue;
            };
            if component.initial {
                because.push(StepReason::Initial {
                    component: on.value.clone(),
                });
            }
            for r in &component.because {
                because.push(StepReason::Component {
                    component: on.value.clone(),
                    change: r.change.clone(),
                    path: r.path.clone(),
                    pattern: r.pattern.clone(),
                });
            }
        }
        for need in &step.needs {
            if triggered.get(&need.value).copied().unwrap_or(false) {
                because.push(StepReason::Needs {
                    step: need.value.clone(),
                });
            }
        }
        for watched in &step.when_failed {
            if triggered.get(&watched.value).copied().unwrap_or(false) {
                because.push(StepReason::WhenFailed {
                    step: watched.value.clone(),
                });
            }
        }
        if let Some(detail) = drift.get(&name) {
            because.push(StepReason::Drift {
                detail: detail.clone(),
            });
        }
        if step.always && (step.cycle == Cycle::Partial || cycle == Cycle::Full) {
            because.push(StepReason::Always { cycle: step.cycle });
        }
        let replaced = replace.contains(&name);
        if replaced {
            because.insert(0, StepReason::Replace);
        }
        let is_triggered = !because.is_empty();
        triggered.insert(name.clone(), is_triggered);
        let action = if !is_triggered {
            because.push(StepReason::NotTriggered);
            Action::Skip
        } else if step.cycle == Cycle::Full && cycle == Cycle::Partial && !replaced {
            because.insert(0, StepReason::FullCycleOnly);
            Action::Skip
        } else {
            Action::Run
        };
        out.push(StepPlan {
            name: name.clone(),
            kind: step.kind.value,
            cycle: step.cycle,
            action,
            needs: step.needs.iter().map(|n| n.value.clone()).collect(),
            after: step.after.iter().map(|n| n.value.clone()).collect(),
            when_failed: step.when_failed.iter().map(|n| n.value.clone()).collect(),
            after_push: published.shift_remove(&name).unwrap_or_default(),
            because,
            params: Default::default(),
            compared_with: None,
            changes: Vec::new(),
        });
    }
    out
}
