//! The text of a PR's plan preview: the one comment per PR (edited in place on each push)
//! that `serve` posts and `kcideploy plan --pr REPO#N` prints.

use std::fmt::Write;

use crate::planner::render::reason_text;
use crate::planner::{Action, ExclusionReason, Plan, StepReason};
use crate::support::text::{clip, short};
use crate::workspace::Preview;

/// The hidden marker of a plan's preview comment on a PR of `repo`.
pub fn marker(plan: &str, repo: &str) -> String {
    format!("<!-- kcideploy-preview:{plan}:{repo} -->")
}

/// Whether the change merges with the others: `Ok(n)` with how many others are included,
/// `Err(why)` when it is left out of the staging set with everything let in.
pub fn merges(preview: &Preview) -> Result<usize, String> {
    let Some(repo) = preview.together.repos.get(&preview.repo) else {
        return Ok(0);
    };
    let id = &preview.change.id;
    if let Some(out) = repo.excluded.iter().find(|e| &e.id == id) {
        let files = if out.paths.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                out.paths
                    .iter()
                    .map(|p| format!("`{}`", clip(p, 80)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(format!("{}: {}{files}", out.reason.as_str(), out.detail));
    }
    let others = preview
        .together
        .repos
        .values()
        .map(|r| r.included.len())
        .sum::<usize>();
    Ok(others.saturating_sub(1))
}

/// `repo#12` for a GitHub PR, `repo branch` for a git forge's branch.
pub fn change_name(repo: &str, id: &str) -> String {
    match id.starts_with('#') {
        true => format!("{repo}{id}"),
        false => format!("{repo} {id}"),
    }
}

/// The plan that shows the change's effect: with the others when it merges with them,
/// else on its own.
fn own_plan(preview: &Preview) -> &Plan {
    let included = preview
        .together
        .repos
        .get(&preview.repo)
        .is_some_and(|r| r.included.iter().any(|c| c.id == preview.change.id));
    match included {
        true => &preview.together,
        false => &preview.alone,
    }
}

/// The steps the change's own files trigger (through components, then `needs`), in plan
/// order, with the reasons that are its own; `always` steps, which run anyway, are not.
pub fn triggered(preview: &Preview) -> Vec<(&crate::planner::StepPlan, Vec<&StepReason>)> {
    let id = &preview.change.id;
    let plan = own_plan(preview);
    let mut names: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for s in &plan.steps {
        let own: Vec<&StepReason> = s
            .because
            .iter()
            .filter(|r| match r {
                StepReason::Component { change, .. } => change == id,
                StepReason::Needs { step } | StepReason::WhenFailed { step } => {
                    names.contains(&step.as_str())
                }
                _ => false,
            })
            .collect();
        if !own.is_empty() {
            names.push(&s.name);
            out.push((s, own));
        }
    }
    out
}

/// How many steps the change triggers (what the commit status says).
pub fn steps_run(preview: &Preview) -> usize {
    triggered(preview)
        .iter()
        .filter(|(s, _)| s.action == Action::Run)
        .count()
}

/// The preview as Markdown (a PR comment; also what `plan --pr` prints).
pub fn text(preview: &Preview) -> String {
    let plan = &preview.alone;
    let c = &preview.change;
    let mut out = String::new();
    let _ = writeln!(out, "{}", marker(&plan.name, &preview.repo));
    let _ = writeln!(
        out,
        "**kcideploy plan preview** for `{}`: {} by {} at `{}`, the steps its own files trigger.\n",
        plan.name,
        change_name(&preview.repo, &c.id),
        clip(&c.author, 40),
        short(&c.head),
    );
    let first = own_plan(preview).components.values().any(|c| c.initial);
    if first {
        let _ = writeln!(
            out,
            "Nothing is deployed yet: the first deploy runs every step, whatever this change holds.\n"
        );
    } else {
        components(&mut out, preview);
        steps(&mut out, preview);
    }
    let _ = writeln!(out);
    match merges(preview) {
        Ok(0) => {
            let _ = writeln!(
                out,
                "**Merge:** no other pending change; it merges onto the base."
            );
        }
        Ok(n) => {
            let _ = writeln!(
                out,
                "**Merge:** merges cleanly with the {n} other pending change(s) staging would include."
            );
        }
        Err(why) => {
            let _ = writeln!(
                out,
                "**Merge:** left out with the other pending changes: {why}."
            );
        }
    }
    if let Some(why) = screened_out(preview) {
        let _ = writeln!(out, "\n{why}");
    }
    out
}

fn components(out: &mut String, preview: &Preview) {
    let id = &preview.change.id;
    let affected: Vec<(&String, Vec<&crate::planner::PathReason>)> = own_plan(preview)
        .components
        .iter()
        .map(|(name, c)| {
            (
                name,
                c.because
                    .iter()
                    .filter(|r| &r.change == id)
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, own)| !own.is_empty())
        .collect();
    if affected.is_empty() {
        let _ = writeln!(
            out,
            "It changes files of no component: **nothing would be deployed.**\n"
        );
        return;
    }
    let _ = writeln!(out, "**Components:**");
    for (name, own) in affected {
        let paths: Vec<String> = own
            .iter()
            .take(5)
            .map(|r| format!("`{}` (`{}`)", clip(&r.path, 80), clip(&r.pattern, 40)))
            .collect();
        let more = own.len().saturating_sub(5);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        let _ = writeln!(out, "- `{name}`: {}{more}", paths.join(", "));
    }
    let _ = writeln!(out);
}

fn steps(out: &mut String, preview: &Preview) {
    let plan = own_plan(preview);
    let steps = triggered(preview);
    let (run, held): (Vec<_>, Vec<_>) = steps.iter().partition(|(s, _)| s.action == Action::Run);
    let _ = writeln!(
        out,
        "**Steps** ({} cycle):{}",
        plan.cycle.as_str(),
        if run.is_empty() { " none" } else { "" }
    );
    for (s, why) in run {
        let why: Vec<String> = why
            .iter()
            .take(3)
            .map(|r| reason_text(r, &s.name))
            .collect();
        let _ = writeln!(
            out,
            "- `{}` ({}): {}",
            s.name,
            s.kind.as_str(),
            clip(&why.join("; "), 300)
        );
    }
    if !held.is_empty() {
        let names: Vec<String> = held.iter().map(|(s, _)| format!("`{}`", s.name)).collect();
        let _ = writeln!(out, "- held for the next full cycle: {}", names.join(", "));
    }
}

/// Why the change is not deployed as things are (the preview let it in), or that it is.
fn screened_out(preview: &Preview) -> Option<String> {
    if preview.deployed {
        return Some(format!(
            "**Deployed:** `{}` runs it at this head already.",
            preview.alone.name
        ));
    }
    let out = preview.left_out.as_ref()?;
    let blamed = out.reason == ExclusionReason::Blamed;
    Some(format!(
        "**Not deployed as it is:** {} ({}){}",
        out.detail,
        out.reason.as_str(),
        if blamed {
            ""
        } else {
            "; the preview shows what it would do once let in"
        }
    ))
}
