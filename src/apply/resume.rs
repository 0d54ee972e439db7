//! `kcideploy resume`: undo what a stop-the-line step did. Every `kubernetes` step whose last
//! success scaled Deployments (`with.scale`, usually run by `when_failed` after a check found
//! a regression) gets them back to the replicas they had; its record then says so, so a
//! second resume does nothing.

use serde_json::json;

use crate::config::Config;
use crate::config::kinds::KindSettings;
use crate::state::{State, StepResult};

/// Scale back what is paused; a line per Deployment given back. State is changed in memory
/// only (the caller writes it under the lock).
pub fn resume(config: &Config, state: &mut State) -> Result<Vec<String>, String> {
    crate::support::rt::block_on(resume_async(config, state))
}

async fn resume_async(config: &Config, state: &mut State) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    let now = jiff::Timestamp::now().to_string();
    for (name, record) in state.steps.iter_mut() {
        if record.result != StepResult::Success {
            continue;
        }
        let Some(outputs) = record.outputs.as_mut() else {
            continue;
        };
        if outputs["scaled"].as_array().is_none_or(|s| s.is_empty()) {
            continue;
        }
        let KindSettings::Kubernetes(with) = config.settings(name) else {
            return Err(format!(
                "step `{name}` paused Deployments, but the plan file no longer has it as a kubernetes step: scale them back by hand ({})",
                outputs["scaled"]
            ));
        };
        let done = super::kinds::kubernetes_give_back(config, &with, outputs)
            .await
            .map_err(|e| format!("step `{name}`: {e}"))?;
        lines.extend(done.into_iter().map(|l| format!("{name}: {l}")));
        let scaled = outputs["scaled"].take();
        outputs["resumed"] = json!({ "at": now, "scaled": scaled });
        if let Some(o) = outputs.as_object_mut() {
            o.remove("scaled");
        }
    }
    Ok(lines)
}
