//! `${steps.<name>.outputs.<key>}`: what another step published (a `command` step's
//! `$KCIDEPLOY_OUTPUT` lines, kept in its state record), in a `command` step's `with:`
//! strings. Checked when the plan file loads: the step exists, this one runs after it (it is
//! in `needs` or `after`), and only `command` steps use them. The executor substitutes them
//! when the step starts.

use serde_json::Value;

use super::errors::Source;
use super::{Config, SemanticError, StepKind, quote, suggest};

/// How a reference starts.
pub const PREFIX: &str = "${steps.";
const OUTPUTS: &str = ".outputs.";

/// One `${steps.<step>.outputs.<key>}` in a string: the step, the key, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRef {
    pub step: String,
    pub key: String,
    /// Byte range of the whole reference in the string.
    pub range: std::ops::Range<usize>,
}

/// Whether `key` may be an output's name: letters, digits, `_` and `-`.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Every reference in `text`, in order; a malformed one is an error saying why.
pub fn references(text: &str) -> Result<Vec<StepRef>, String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(PREFIX) {
        let start = from + i;
        let inner_start = start + PREFIX.len();
        let Some(close) = text[inner_start..].find('}') else {
            return Err(format!(
                "`{}` is not closed: write `${{steps.<step>.outputs.<key>}}`",
                &text[start..]
            ));
        };
        let inner = &text[inner_start..inner_start + close];
        let end = inner_start + close + 1;
        let shown = &text[start..end];
        let Some((step, key)) = inner.rsplit_once(OUTPUTS) else {
            return Err(format!(
                "`{shown}` names no output: write `${{steps.<step>.outputs.<key>}}`"
            ));
        };
        if step.is_empty() || !valid_key(key) {
            return Err(format!(
                "`{shown}`: write `${{steps.<step>.outputs.<key>}}`, the key in letters, digits, `_` and `-`"
            ));
        }
        out.push(StepRef {
            step: step.to_string(),
            key: key.to_string(),
            range: start..end,
        });
        from = end;
    }
    Ok(out)
}

/// `text` with each reference replaced by `lookup(step, key)`, or the first error.
pub fn substitute(
    text: &str,
    lookup: impl Fn(&str, &str) -> Result<String, String>,
) -> Result<String, String> {
    let refs = references(text)?;
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for r in refs {
        out.push_str(&text[last..r.range.start]);
        out.push_str(&lookup(&r.step, &r.key)?);
        last = r.range.end;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// Every string of a `with:` value, map keys included.
fn strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k);
                strings(v, out);
            }
        }
        _ => {}
    }
}

/// The errors of every step's references to other steps' outputs.
pub(crate) fn check(config: &Config, src: &Source) -> Vec<SemanticError> {
    let f = &config.file;
    let mut errors = Vec::new();
    for (name, step) in &f.steps {
        // (the setting, each of its strings): only `run`, `shell` and `env` are substituted.
        let mut texts = Vec::new();
        for (k, v) in &step.with.value {
            let mut found = vec![k.as_str()];
            strings(v, &mut found);
            texts.extend(found.into_iter().map(|t| (k.as_str(), t)));
        }
        let with_at = super::byte_offset(src.text(), &step.with.referenced);
        let mut error = |found: &str, message: String, label: &str, help: Option<String>| {
            let e = located(src, with_at, found, message, label);
            errors.push(match help {
                Some(h) => e.with_help(h),
                None => e,
            });
        };
        for (setting, text) in texts {
            let refs = match references(text) {
                Ok(refs) => refs,
                Err(message) => {
                    error(
                        PREFIX,
                        format!("step {}: {message}", quote(name)),
                        "malformed reference",
                        None,
                    );
                    continue;
                }
            };
            for r in refs {
                let shown = &text[r.range.clone()];
                if step.kind.value != StepKind::Command {
                    let message = format!(
                        "step {} ({}) uses `{shown}`: only `command` steps read other steps' outputs",
                        quote(name),
                        step.kind.value.as_str()
                    );
                    error(shown, message, "not a command step", None);
                } else if !matches!(setting, "run" | "shell" | "env") {
                    let message = format!(
                        "step {}: `{shown}` in with.{setting}: other steps' outputs are read in `run`, `shell` and `env` only",
                        quote(name)
                    );
                    error(shown, message, "not substituted here", None);
                } else if !f.steps.contains_key(&r.step) {
                    let message = format!(
                        "step {} reads outputs of unknown step {}",
                        quote(name),
                        quote(&r.step)
                    );
                    let help = suggest(&r.step, f.steps.keys(), "steps");
                    error(shown, message, "not a key of `steps`", Some(help));
                } else if !step
                    .needs
                    .iter()
                    .chain(&step.after)
                    .any(|n| n.value == r.step)
                {
                    let message = format!(
                        "step {} reads outputs of step {}, which it neither `needs` nor runs `after`",
                        quote(name),
                        quote(&r.step)
                    );
                    let help = format!("add {} to its `needs` (or `after`)", quote(&r.step));
                    error(shown, message, "runs in no order with it", Some(help));
                }
            }
        }
    }
    errors
}

/// An error at the first `found` in the source after `from` (the step's `with:`; the
/// expanded text of a `for_each` step is not in the file, so its first reference is
/// taken), else at `with:` itself.
fn located(src: &Source, from: usize, found: &str, message: String, label: &str) -> SemanticError {
    let text = src.text();
    let rest = text.get(from..).unwrap_or("");
    let (offset, len) = match rest.find(found).or_else(|| rest.find(PREFIX)) {
        Some(i) => (from + i, found.len()),
        None => (from, 1),
    };
    let before = &text[..offset];
    let line = before.matches('\n').count() as u64 + 1;
    let column = before
        .rfind('\n')
        .map_or(before, |nl| &before[nl + 1..])
        .chars()
        .count() as u64
        + 1;
    src.error_at_offset(offset, line, column, len, message, label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_and_replaced() {
        let text = "x ${steps.build[a/b].outputs.url} y ${steps.s.outputs.v-2}";
        let refs = references(text).expect("parses");
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].step, "build[a/b]");
        assert_eq!(refs[0].key, "url");
        assert_eq!(refs[1].key, "v-2");
        let out = substitute(text, |s, k| Ok(format!("<{s}:{k}>"))).expect("substitutes");
        assert_eq!(out, "x <build[a/b]:url> y <s:v-2>");
        assert_eq!(
            substitute("plain ${HOME}", |_, _| Err("no".into())).expect("no refs"),
            "plain ${HOME}"
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(
            references("${steps.a.url}")
                .unwrap_err()
                .contains("names no output")
        );
        assert!(
            references("${steps.a.outputs.")
                .unwrap_err()
                .contains("not closed")
        );
        assert!(references("${steps.a.outputs.b c}").is_err());
        assert!(references("${steps..outputs.k}").is_err());
    }
}
