//! Waiting for Deployments to roll out, as `kubectl rollout status` judges it: the
//! controller saw the latest generation (`status.observedGeneration`), every replica is
//! updated and available and no old one is left; a `Progressing` condition with reason
//! `ProgressDeadlineExceeded` fails at once. What is not ready is reported with its
//! conditions' messages.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::api::Api;

/// Where a Deployment's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    Done,
    /// Why it is not done yet.
    Waiting(String),
    /// It will not finish by itself.
    Failed(String),
}

/// The messages of a Deployment's conditions that say something is wrong or pending:
/// `Available=False (MinimumReplicasUnavailable): Deployment does not have minimum
/// availability.`
fn conditions(d: &Value) -> String {
    let texts: Vec<String> = d["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            let status = c["status"].as_str().unwrap_or("");
            let kind = c["type"].as_str().unwrap_or("");
            status != "True" || kind == "ReplicaFailure"
        })
        .map(|c| {
            format!(
                "{}={} ({}): {}",
                c["type"].as_str().unwrap_or("?"),
                c["status"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or(""),
                crate::support::text::clip(c["message"].as_str().unwrap_or(""), 300)
            )
        })
        .collect();
    texts.join("; ")
}

/// Judge a Deployment as `kubectl rollout status` does.
pub fn judge(d: &Value) -> Rollout {
    let num = |v: &Value| v.as_i64().unwrap_or(0);
    let status = &d["status"];
    let generation = num(&d["metadata"]["generation"]);
    let observed = num(&status["observedGeneration"]);
    let deadline = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
    if let Some(c) = deadline {
        return Rollout::Failed(format!(
            "exceeded its progress deadline: {}",
            c["message"].as_str().unwrap_or("")
        ));
    }
    let with_conditions = |text: String| {
        let c = conditions(d);
        match c.is_empty() {
            true => Rollout::Waiting(text),
            false => Rollout::Waiting(format!("{text}; {c}")),
        }
    };
    if generation > observed {
        return with_conditions(format!(
            "the controller has not seen generation {generation} yet (observed {observed})"
        ));
    }
    let wanted = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let updated = num(&status["updatedReplicas"]);
    let total = num(&status["replicas"]);
    let available = num(&status["availableReplicas"]);
    if updated < wanted {
        return with_conditions(format!("{updated} of {wanted} replicas updated"));
    }
    if total > updated {
        return with_conditions(format!(
            "{} old replicas are pending termination",
            total - updated
        ));
    }
    if available < updated {
        return with_conditions(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    Rollout::Done
}

/// A Deployment to wait for.
pub struct Watched {
    /// `namespace/name`.
    pub name: String,
    pub path: String,
    pub state: Rollout,
}

/// Wait until every Deployment in `watched` has rolled out, looking every `interval`, until
/// `deadline`. `progress` hears each change; `stopped` says whether the run was cancelled.
pub async fn wait(
    api: &Api,
    watched: &mut [Watched],
    interval: Duration,
    deadline: Instant,
    progress: &mut (dyn FnMut(String) + Send),
    stopped: &mut (dyn FnMut() -> bool + Send),
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        for w in watched.iter_mut().filter(|w| w.state != Rollout::Done) {
            let state = match api.get(&w.path).await {
                Ok(Some(d)) => judge(&d),
                Ok(None) => Rollout::Failed("it was deleted".into()),
                Err(e) => Rollout::Waiting(format!("cannot look at it: {e}")),
            };
            if state != w.state {
                progress(match &state {
                    Rollout::Done => format!("Deployment {} rolled out", w.name),
                    Rollout::Waiting(why) => format!("Deployment {}: {why}", w.name),
                    Rollout::Failed(why) => format!("Deployment {} failed: {why}", w.name),
                });
            }
            w.state = state;
        }
        let failed: Vec<String> = watched
            .iter()
            .filter_map(|w| match &w.state {
                Rollout::Failed(why) => Some(format!("Deployment {} {why}", w.name)),
                _ => None,
            })
            .collect();
        if !failed.is_empty() {
            return Err(format!("rollout failed: {}", failed.join("; ")));
        }
        let waiting: Vec<String> = watched
            .iter()
            .filter_map(|w| match &w.state {
                Rollout::Waiting(why) => Some(format!("Deployment {}: {why}", w.name)),
                _ => None,
            })
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "{} of {} Deployments did not roll out within {}: {}",
                waiting.len(),
                watched.len(),
                crate::support::text::age(now.duration_since(start).as_secs() as i64),
                waiting.join("; ")
            ));
        }
        let mut left = deadline.saturating_duration_since(now).min(interval);
        // Look for a cancellation every 100 ms while waiting.
        while !left.is_zero() {
            if stopped() {
                return Err("cancelled".into());
            }
            let step = left.min(Duration::from_millis(100));
            tokio::time::sleep(step).await;
            left = left.saturating_sub(step);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(generation: i64, status: Value) -> Value {
        json!({ "metadata": { "generation": generation }, "spec": { "replicas": 1 }, "status": status })
    }

    #[test]
    fn rollouts_are_judged_as_kubectl_does() {
        let done = json!({ "observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1 });
        assert_eq!(judge(&deployment(2, done)), Rollout::Done);
        let unseen = json!({ "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1 });
        assert!(
            matches!(judge(&deployment(2, unseen)), Rollout::Waiting(w) if w.contains("generation 2"))
        );
        let unavailable = json!({
            "observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0,
            "conditions": [{ "type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                             "message": "Deployment does not have minimum availability." }]
        });
        assert!(matches!(judge(&deployment(2, unavailable)),
            Rollout::Waiting(w) if w.contains("0 of 1 updated replicas available; Available=False (MinimumReplicasUnavailable): Deployment does not have minimum availability.")));
        let old_left = json!({ "observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1 });
        assert!(
            matches!(judge(&deployment(2, old_left)), Rollout::Waiting(w) if w.contains("1 old replicas"))
        );
        let deadline = json!({
            "observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
            "conditions": [{ "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                             "message": "ReplicaSet \"monitor-5d8f\" has timed out progressing." }]
        });
        assert_eq!(
            judge(&deployment(2, deadline)),
            Rollout::Failed("exceeded its progress deadline: ReplicaSet \"monitor-5d8f\" has timed out progressing.".into())
        );
        // No `spec.replicas` means 1.
        let zero = json!({ "metadata": { "generation": 1 }, "spec": {}, "status": { "observedGeneration": 1 } });
        assert!(matches!(judge(&zero), Rollout::Waiting(_)));
    }
}
