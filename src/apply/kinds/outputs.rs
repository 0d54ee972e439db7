//! Step outputs of `command` steps. The process gets `$KCIDEPLOY_OUTPUT`, a file where it
//! writes `key=value` lines (as GitHub Actions' `GITHUB_OUTPUT`); once it succeeded they are
//! its outputs, kept in its state record as `{"outputs": {key: value}}`. It also gets
//! `$KCIDEPLOY_STEP_OUTPUTS`, a file with the outputs of every step it `needs` or runs
//! `after`, one `step<TAB>key<TAB>value` line each, and `${steps.<step>.outputs.<key>}` in
//! its `with:` strings is replaced by that value. A step's outputs are those of this run
//! when it succeeded in it, else those of its last success.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::{StepCtx, StepError};
use crate::config::step_refs;

/// The largest `$KCIDEPLOY_OUTPUT` file read.
const MAX_BYTES: u64 = 64 * 1024;

/// The two files of one attempt.
pub struct Files {
    output: PathBuf,
    inputs: PathBuf,
}

/// The published outputs of step `name` (this run's, else its last success's).
fn published(ctx: &StepCtx<'_>, name: &str) -> Option<BTreeMap<String, String>> {
    let value = ctx
        .run
        .outputs_in_this_run(name)
        .or_else(|| ctx.run.previous_outputs.get(name).cloned())?;
    let map = value.get("outputs")?.as_object()?;
    Some(
        map.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
    )
}

/// `text` with `${steps.<step>.outputs.<key>}` replaced.
pub fn substitute(ctx: &StepCtx<'_>, text: &str) -> Result<String, StepError> {
    step_refs::substitute(text, |step, key| {
        let outputs = published(ctx, step).ok_or_else(|| {
            format!("`${{steps.{step}.outputs.{key}}}`: step `{step}` has published no outputs yet")
        })?;
        outputs.get(key).cloned().ok_or_else(|| {
            let known: Vec<&str> = outputs.keys().map(String::as_str).collect();
            format!(
                "`${{steps.{step}.outputs.{key}}}`: step `{step}` published no `{key}` (it published: {})",
                known.join(", ")
            )
        })
    })
    .map_err(StepError::Failed)
}

impl Files {
    /// Make the attempt's files beside its log: an empty output file, and the outputs of
    /// the steps it runs after.
    pub fn prepare(ctx: &StepCtx<'_>) -> Result<Files, StepError> {
        let output = ctx.log_path.with_extension("output");
        let inputs = ctx.log_path.with_extension("inputs");
        let io = |path: &PathBuf, e: std::io::Error| {
            StepError::Failed(format!("cannot write {}: {e}", path.display()))
        };
        std::fs::write(&output, b"").map_err(|e| io(&output, e))?;
        let mut lines = String::new();
        let mut seen = std::collections::BTreeSet::new();
        for before in ctx.step.needs.iter().chain(&ctx.step.after) {
            if !seen.insert(before.value.as_str()) {
                continue;
            }
            for (k, v) in published(ctx, &before.value).unwrap_or_default() {
                lines.push_str(&format!("{}\t{k}\t{v}\n", before.value));
            }
        }
        std::fs::write(&inputs, lines).map_err(|e| io(&inputs, e))?;
        Ok(Files { output, inputs })
    }

    /// `KCIDEPLOY_OUTPUT` and `KCIDEPLOY_STEP_OUTPUTS`.
    pub fn env(&self) -> [(String, String); 2] {
        [
            ("KCIDEPLOY_OUTPUT".into(), self.output.display().to_string()),
            (
                "KCIDEPLOY_STEP_OUTPUTS".into(),
                self.inputs.display().to_string(),
            ),
        ]
    }

    /// What the process published: `{"outputs": {...}}`, or `None` when it wrote nothing.
    pub fn read(&self, log: &std::fs::File) -> Result<Option<Value>, StepError> {
        let shown = self.output.display();
        let len = std::fs::metadata(&self.output)
            .map(|m| m.len())
            .unwrap_or(0);
        if len > MAX_BYTES {
            return Err(StepError::Failed(format!(
                "$KCIDEPLOY_OUTPUT ({shown}) holds {len} bytes, more than {MAX_BYTES}"
            )));
        }
        let text = std::fs::read_to_string(&self.output).map_err(|e| {
            StepError::Failed(format!("cannot read $KCIDEPLOY_OUTPUT ({shown}): {e}"))
        })?;
        let outputs = parse(&text)
            .map_err(|e| StepError::Failed(format!("$KCIDEPLOY_OUTPUT ({shown}) {e}")))?;
        if outputs.is_empty() {
            return Ok(None);
        }
        let mut log = log;
        for (k, v) in &outputs {
            let _ = writeln!(log, "output {k}={v}");
        }
        Ok(Some(json!({ "outputs": outputs })))
    }
}

/// `key=value` lines (empty lines skipped; a key written again keeps its last value).
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {n}: expected `key=value`"));
        };
        if !step_refs::valid_key(key) {
            return Err(format!(
                "line {n}: `{key}` is not an output name (letters, digits, `_` and `-`)"
            ));
        }
        if value.contains('\t') {
            return Err(format!("line {n}: the value of `{key}` holds a tab"));
        }
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn output_lines() {
        let got = parse("url=https://x/y?a=b\n\nurl2=\nurl=again\n").expect("parses");
        assert_eq!(got["url"], "again");
        assert_eq!(got["url2"], "");
        assert!(parse("no equals").unwrap_err().contains("line 1"));
        assert!(parse("ok=1\nbad key=2").unwrap_err().contains("line 2"));
        assert!(parse("k=a\tb").is_err());
    }
}
