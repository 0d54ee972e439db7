//! A step's resolved settings as plan text: every setting for a step with nothing to compare
//! with; otherwise only what changed since its last success (`~ key: old -> new`, `+`, `-`,
//! a unified diff for multi-line or long values), the rest folded.

use similar::{ChangeTag, TextDiff};

use super::types::StepPlan;
use crate::support::text::clean;

/// How many setting lines one step shows before "(+N more)".
const MAX_LINES: usize = 20;
/// A value longer than this is compared as a diff rather than `old -> new`.
const LONG: usize = 60;

/// One line to print and whether it adds (`Some(true)`), removes (`Some(false)`) or neither.
pub type Line = (String, Option<bool>);

/// A setting as the plan file writes it: under `with:`, but for the step's `docker_host`.
fn field(key: &str) -> String {
    if key == "docker_host" {
        key.to_string()
    } else {
        format!("with.{key}")
    }
}

/// The lines under a step that runs.
pub fn lines(step: &StepPlan) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    if step.compared_with.is_none() {
        for (key, value) in &step.params {
            push_value(&mut out, &format!("{}: ", field(key)), value, None);
        }
    } else {
        for change in &step.changes {
            match (&change.old, &change.new) {
                (None, Some(new)) => push_value(
                    &mut out,
                    &format!("+ {}: ", field(&change.key)),
                    new,
                    Some(true),
                ),
                (Some(old), None) => push_value(
                    &mut out,
                    &format!("- {}: ", field(&change.key)),
                    old,
                    Some(false),
                ),
                (Some(old), Some(new)) if !long(old) && !long(new) => out.push((
                    format!("~ {}: {} -> {}", field(&change.key), clean(old), clean(new)),
                    None,
                )),
                (Some(old), Some(new)) => {
                    out.push((format!("~ {}:", field(&change.key)), None));
                    out.extend(diff(old, new));
                }
                (None, None) => {}
            }
        }
        let unchanged = step
            .params
            .len()
            .saturating_sub(step.changes.iter().filter(|c| c.new.is_some()).count());
        if unchanged > 0 {
            out.push((
                format!("({unchanged} setting(s) as in its last successful run)"),
                None,
            ));
        }
    }
    if out.len() > MAX_LINES {
        let more = out.len() - MAX_LINES;
        out.truncate(MAX_LINES);
        out.push((
            format!("(+{more} more lines: plan --json has them all)"),
            None,
        ));
    }
    out
}

fn long(value: &str) -> bool {
    value.contains('\n') || value.chars().count() > LONG
}

/// `prefix value`, a multi-line value on indented lines below.
fn push_value(out: &mut Vec<Line>, prefix: &str, value: &str, tag: Option<bool>) {
    if value.contains('\n') {
        out.push((prefix.trim_end().to_string(), tag));
        for line in value.lines() {
            out.push((format!("    {}", clean(line)), tag));
        }
    } else {
        out.push((format!("{prefix}{}", clean(value)), tag));
    }
}

/// A unified diff of two values: by line for multi-line values, by word for one long line.
pub fn diff(old: &str, new: &str) -> Vec<Line> {
    let text_diff = if old.contains('\n') || new.contains('\n') {
        TextDiff::from_lines(old, new)
    } else {
        TextDiff::from_words(old, new)
    };
    if !(old.contains('\n') || new.contains('\n')) {
        // One long line: the old and the new line, with the changed words marked.
        let mut before = String::new();
        let mut after = String::new();
        for change in text_diff.iter_all_changes() {
            let word = change.value();
            match change.tag() {
                ChangeTag::Equal => {
                    before.push_str(word);
                    after.push_str(word);
                }
                ChangeTag::Delete => before.push_str(&format!("[-{word}-]")),
                ChangeTag::Insert => after.push_str(&format!("{{+{word}+}}")),
            }
        }
        return vec![
            (format!("    - {}", clean(&before)), Some(false)),
            (format!("    + {}", clean(&after)), Some(true)),
        ];
    }
    let mut out = Vec::new();
    for hunk in text_diff.unified_diff().context_radius(2).iter_hunks() {
        out.push((format!("    {}", hunk.header()), None));
        for change in hunk.iter_changes() {
            let (sign, tag) = match change.tag() {
                ChangeTag::Equal => (' ', None),
                ChangeTag::Delete => ('-', Some(false)),
                ChangeTag::Insert => ('+', Some(true)),
            };
            out.push((
                format!("    {sign}{}", clean(change.value().trim_end_matches('\n'))),
                tag,
            ));
        }
    }
    out
}
