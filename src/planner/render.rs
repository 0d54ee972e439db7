//! Render a plan for people (text, like `terraform plan`) and the step graph as DOT.

use std::fmt::Write;

use owo_colors::{OwoColorize, Style};

use super::types::{Action, DiffBasis, Plan, StepReason};
use crate::config::Config;
use crate::support::text::{clean, short};

/// How many reason chains of one step the text output shows before "(+N more)".
const MAX_REASONS: usize = 5;

struct Styles {
    add: Style,
    remove: Style,
    dim: Style,
    bold: Style,
}

impl Styles {
    fn new(color: bool) -> Styles {
        if color {
            Styles {
                add: Style::new().green(),
                remove: Style::new().red(),
                dim: Style::new().dimmed(),
                bold: Style::new().bold(),
            }
        } else {
            Styles {
                add: Style::new(),
                remove: Style::new(),
                dim: Style::new(),
                bold: Style::new(),
            }
        }
    }
}

/// The plan as text. `color` adds ANSI colours (only on a TTY).
pub fn text(plan: &Plan, color: bool) -> String {
    let st = Styles::new(color);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} — {} cycle ({}: {})",
        "kcideploy plan:".style(st.bold),
        plan.name,
        plan.cycle.as_str(),
        plan.cycle_decision.requested,
        plan.cycle_decision.reason
    );
    for warning in &plan.warnings {
        let _ = writeln!(out, "{} {}", "Warning:".style(st.remove), clean(warning));
    }
    repos_section(&mut out, plan, &st);
    steps_section(&mut out, plan, &st);
    held_section(&mut out, plan, &st);
    untargeted_section(&mut out, plan, &st);
    done_before_section(&mut out, plan, &st);
    diffs_section(&mut out, plan, &st);
    left_out_section(&mut out, plan, &st);
    out.push('\n');
    let s = &plan.summary;
    let _ = writeln!(
        out,
        "{} {} to run, {} unchanged{}{}{}; {} change(s) included, {} left out.",
        "Plan:".style(st.bold),
        count(s.run, "step"),
        s.skip
            .saturating_sub(s.held_for_full + s.done_before + s.untargeted),
        if s.held_for_full > 0 {
            format!(", {} held for a full cycle", s.held_for_full)
        } else {
            String::new()
        },
        if s.done_before > 0 {
            format!(", {} finished before", s.done_before)
        } else {
            String::new()
        },
        if s.untargeted > 0 {
            format!(", {} left out by -target", s.untargeted)
        } else {
            String::new()
        },
        s.included,
        s.excluded
    );
    out
}

/// Each repo: base, included changes, staging revision.
fn repos_section(out: &mut String, plan: &Plan, st: &Styles) {
    out.push('\n');
    let _ = writeln!(out, "{}", "Repos:".style(st.bold));
    for (name, repo) in &plan.repos {
        let from = match (&repo.diff_basis, &repo.deployed) {
            (DiffBasis::Deployed, Some(d)) => format!("deployed {}", short(d)),
            (DiffBasis::UnknownDeployed, Some(d)) => {
                format!(
                    "deployed {} (not in the cache: every component counts as changed)",
                    short(d)
                )
            }
            _ => "nothing deployed yet".to_string(),
        };
        let _ = writeln!(
            out,
            "  {name}: {} {} + {} change(s) → staging {} ({from}, {} path(s) changed)",
            repo.base_branch,
            short(&repo.base),
            repo.included.len(),
            short(&repo.staging),
            repo.changed_paths.len()
        );
        for c in &repo.included {
            let _ = writeln!(
                out,
                "    {} {} {} {} {}",
                "+".style(st.add),
                clean(&c.id).style(st.add),
                short(&c.head),
                clean(&c.author).style(st.dim),
                format!("\"{}\"", clean(&c.title)).style(st.dim)
            );
        }
    }
    out.push('\n');
}

/// The steps to run, each with its reasons.
fn steps_section(out: &mut String, plan: &Plan, st: &Styles) {
    let runs: Vec<_> = plan
        .steps
        .iter()
        .filter(|s| s.action == Action::Run)
        .collect();
    if runs.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            "No steps to run: the deployed revisions are up to date.".style(st.bold)
        );
    } else {
        let _ = writeln!(out, "{}", "Steps to run, in order:".style(st.bold));
    }
    for step in &runs {
        let _ = writeln!(
            out,
            "  {} {} ({})",
            "+".style(st.add),
            step.name.style(st.add),
            step.kind
        );
        let shown: Vec<_> = step.because.iter().take(MAX_REASONS).collect();
        for reason in &shown {
            let text = match reason {
                StepReason::Needs { step: need } if done_before(plan, need) => {
                    format!("needs {need}, triggered but finished before with the same inputs")
                }
                _ => reason_text(reason, &step.name),
            };
            let _ = writeln!(out, "      {}", clean(&text).style(st.dim));
        }
        if step.because.len() > shown.len() {
            let _ = writeln!(
                out,
                "      {}",
                format!("(+{} more)", step.because.len() - shown.len()).style(st.dim)
            );
        }
        for push in step
            .after_push
            .iter()
            .filter(|p| runs.iter().any(|s| s.name == p.step))
        {
            let _ = writeln!(
                out,
                "      {}",
                format!(
                    "after {} ({})",
                    clean(&push.step),
                    published_text(&push.repo)
                )
                .style(st.dim)
            );
        }
        for (line, tag) in super::paramtext::lines(step) {
            let style = match tag {
                Some(true) => st.add,
                Some(false) => st.remove,
                None => st.dim,
            };
            let _ = writeln!(out, "      {}", line.style(style));
        }
    }
    removed_section(out, plan, st);
}

/// Steps that state knows and the plan file no longer has.
fn removed_section(out: &mut String, plan: &Plan, st: &Styles) {
    if plan.removed_steps.is_empty() {
        return;
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{}",
        "Steps no longer in the plan file (their records stay in state):".style(st.bold)
    );
    for name in &plan.removed_steps {
        let _ = writeln!(
            out,
            "  {} {}",
            "-".style(st.remove),
            clean(name).style(st.remove)
        );
    }
}

/// Whether step `name` is triggered but not repeated (it finished before with the same inputs).
fn done_before(plan: &Plan, name: &str) -> bool {
    plan.steps
        .iter()
        .any(|s| s.name == name && s.is_done_before())
}

/// Why a step waits for a `git_push`, as the plan text and the graph say it.
fn published_text(repo: &str) -> String {
    format!("publishes the staging revision of {}", clean(repo))
}

/// Triggered steps that wait for a full cycle.
fn held_section(out: &mut String, plan: &Plan, st: &Styles) {
    let held: Vec<_> = plan
        .steps
        .iter()
        .filter(|s| s.because.first() == Some(&StepReason::FullCycleOnly))
        .collect();
    if !held.is_empty() {
        out.push('\n');
        let _ = writeln!(
            out,
            "{}",
            "Triggered, held for the next full cycle:".style(st.bold)
        );
        for step in held {
            let _ = writeln!(out, "  ~ {} ({})", step.name, step.kind);
        }
    }
}

/// `plan --diff`: each affected component's changed files, as unified diffs.
fn diffs_section(out: &mut String, plan: &Plan, st: &Styles) {
    if plan.file_diffs.is_empty() {
        return;
    }
    out.push('\n');
    let _ = writeln!(out, "{}", "Changed files, by component:".style(st.bold));
    let mut component = "";
    for d in &plan.file_diffs {
        if d.component != component {
            component = &d.component;
            let _ = writeln!(out, "  {} ({})", clean(component).style(st.bold), d.repo);
        }
        let _ = writeln!(
            out,
            "    {} {} [{}]",
            clean(&d.path),
            d.status.as_str().style(st.dim),
            clean(&d.changes.join(", ")).style(st.dim)
        );
        for hunk in &d.hunks {
            let _ = writeln!(out, "      {}", hunk.header.style(st.dim));
            for line in &hunk.lines {
                let style = match line.chars().next() {
                    Some('+') => st.add,
                    Some('-') => st.remove,
                    _ => st.dim,
                };
                let _ = writeln!(out, "      {}", clean(line).style(style));
            }
        }
        if d.omitted_lines > 0 {
            let _ = writeln!(
                out,
                "      {}",
                format!("… {} more lines (--diff-lines)", d.omitted_lines).style(st.dim)
            );
        }
    }
}

/// Triggered steps that `-target` leaves out.
fn untargeted_section(out: &mut String, plan: &Plan, st: &Styles) {
    let left: Vec<_> = plan.steps.iter().filter(|s| s.is_untargeted()).collect();
    if left.is_empty() {
        return;
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{}",
        "Triggered, left out by -target (their repos keep the deployed revision):".style(st.bold)
    );
    for step in left {
        let _ = writeln!(out, "  ~ {} ({})", step.name, step.kind);
    }
}

/// Triggered steps not repeated: they finished with the same inputs before.
fn done_before_section(out: &mut String, plan: &Plan, st: &Styles) {
    let done: Vec<_> = plan
        .steps
        .iter()
        .filter_map(|s| match s.because.first() {
            Some(StepReason::DoneBefore { run_id }) => Some((s, run_id)),
            _ => None,
        })
        .collect();
    if done.is_empty() {
        return;
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{}",
        "Triggered, finished before with the same inputs (not repeated):".style(st.bold)
    );
    for (step, run_id) in done {
        let _ = writeln!(
            out,
            "  = {} ({}) in run {}",
            step.name,
            step.kind,
            clean(run_id)
        );
    }
}

/// The changes left out, with their reasons.
fn left_out_section(out: &mut String, plan: &Plan, st: &Styles) {
    let excluded: Vec<_> = plan
        .repos
        .iter()
        .flat_map(|(name, r)| r.excluded.iter().map(move |e| (name, e)))
        .collect();
    if !excluded.is_empty() {
        out.push('\n');
        let _ = writeln!(out, "{}", "Changes left out:".style(st.bold));
        for (repo, e) in excluded {
            let _ = writeln!(
                out,
                "  {} {repo} {} {} {}: {}",
                "-".style(st.remove),
                clean(&e.id).style(st.remove),
                short(&e.head),
                e.reason.label(),
                clean(&e.detail)
            );
        }
    }
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// One reason as a chain: change → path → pattern → component → step.
pub fn reason_text(reason: &StepReason, step: &str) -> String {
    match reason {
        StepReason::Component {
            component,
            change,
            path,
            pattern,
        } => format!("{change} → {path} → {pattern} → {component} → {step}"),
        StepReason::Initial { component } => {
            format!("nothing deployed yet → {component} → {step}")
        }
        StepReason::Needs { step: need } => format!("needs {need}, which runs"),
        StepReason::WhenFailed { step: watched } => {
            format!("runs only if {watched} fails (otherwise not needed)")
        }
        StepReason::Always { cycle } => format!("always runs in a {} cycle", cycle.as_str()),
        StepReason::Drift { detail } => format!("drift: {detail}"),
        StepReason::NotTriggered => "nothing it depends on changed".to_string(),
        StepReason::FullCycleOnly => "runs only in full cycles".to_string(),
        StepReason::DoneBefore { run_id } => {
            format!("finished with the same inputs in run {run_id}")
        }
        StepReason::Replace => "-replace: runs although nothing changed".to_string(),
        StepReason::Untargeted => "left out by -target".to_string(),
    }
}

/// The step graph in Graphviz DOT: `needs` edges solid, `after` dotted, `when_failed` red,
/// push before use
/// (a `git_push` before the steps using the revision it publishes) dashed and labelled.
/// With a plan, steps that run are filled and steps held for a full cycle are dashed.
pub fn dot(config: &Config, plan: Option<&Plan>) -> String {
    let mut out = String::from("digraph kcideploy {\n  rankdir=LR;\n  node [shape=box];\n");
    for (name, step) in &config.file.steps {
        let mut attrs = vec![format!(
            "label=\"{}\\n{}{}\"",
            escape(name),
            step.kind.value.as_str(),
            if step.cycle == crate::config::Cycle::Full {
                " (full)"
            } else {
                ""
            }
        )];
        if let Some(p) = plan.and_then(|p| p.steps.iter().find(|s| &s.name == name)) {
            if p.action == Action::Run {
                attrs.push("style=filled".into());
                attrs.push("fillcolor=palegreen".into());
            } else if p.because.first() == Some(&StepReason::FullCycleOnly) {
                attrs.push("style=dashed".into());
            }
        }
        let _ = writeln!(out, "  \"{}\" [{}];", escape(name), attrs.join(", "));
    }
    for (name, step) in &config.file.steps {
        for need in &step.needs {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\";",
                escape(&need.value),
                escape(name)
            );
        }
        for after in &step.after {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [style=dotted];",
                escape(&after.value),
                escape(name)
            );
        }
        for watched in &step.when_failed {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [color=red, label=\"if it fails\"];",
                escape(&watched.value),
                escape(name)
            );
        }
    }
    // Push before use: not written in the plan file, so shown with why.
    for (name, pushes) in super::graph::published_by(config) {
        for push in pushes {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [style=dashed, label=\"{}\"];",
                escape(&push.step),
                escape(&name),
                escape(&published_text(&push.repo))
            );
        }
    }
    out.push_str("}\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
