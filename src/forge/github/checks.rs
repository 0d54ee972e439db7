//! A PR head's own CI, read when its repo has `pending.require_checks`: the check runs
//! (`GET /repos/{o}/{r}/commits/{sha}/check-runs`, the latest run of each name) and the
//! commit statuses (`GET /repos/{o}/{r}/commits/{sha}/status`, the latest status of each
//! context), all pages, with the conditional requests and timeouts of every GET.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{GitHub, GitHubError};
use crate::forge::{Check, CheckState};

/// The checks on `head`, one per name (the worst when two runs share a name), without
/// kcideploy's own status (`own_context`: it says what kcideploy did, not what CI found).
pub(super) async fn read(
    client: &GitHub,
    slug: &str,
    head: &str,
    own_context: &str,
) -> Result<Vec<Check>, GitHubError> {
    let runs = items(
        client,
        &format!("/repos/{slug}/commits/{head}/check-runs?per_page=100"),
        "check_runs",
    )
    .await?;
    let statuses = items(
        client,
        &format!("/repos/{slug}/commits/{head}/status?per_page=100"),
        "statuses",
    )
    .await?;
    let mut by_name: BTreeMap<String, Check> = BTreeMap::new();
    let found = runs
        .iter()
        .filter_map(check_run)
        .chain(statuses.iter().filter_map(status))
        .filter(|c| c.name != own_context);
    for check in found {
        match by_name.get(&check.name) {
            Some(seen) if seen.state >= check.state => {}
            _ => {
                by_name.insert(check.name.clone(), check);
            }
        }
    }
    Ok(by_name.into_values().collect())
}

/// Every item of `field` over the pages of an answer that is an object holding a list
/// (`{"total_count": 2, "check_runs": [...]}`).
async fn items(client: &GitHub, path: &str, field: &str) -> Result<Vec<Value>, GitHubError> {
    let mut url = Some(client.url(path));
    let mut out = Vec::new();
    while let Some(u) = url {
        let (mut body, next) = client.get(&u).await?;
        match body.get_mut(field).map(Value::take) {
            Some(Value::Array(list)) => out.extend(list),
            _ => {
                return Err(GitHubError::Unexpected {
                    method: reqwest::Method::GET,
                    route: client.route(&u),
                    message: format!("expected an object with a list `{field}`"),
                });
            }
        }
        url = next;
    }
    Ok(out)
}

/// A check run: `completed` with its conclusion, else still running.
fn check_run(run: &Value) -> Option<Check> {
    let name = run["name"].as_str()?.to_string();
    let status = run["status"].as_str().unwrap_or("queued");
    let (state, detail) = if status == "completed" {
        let conclusion = run["conclusion"].as_str().unwrap_or("none");
        let state = match conclusion {
            "success" | "neutral" | "skipped" => CheckState::Passed,
            _ => CheckState::Failed,
        };
        (state, conclusion)
    } else {
        (CheckState::Running, status)
    };
    Some(Check {
        name,
        state,
        detail: detail.to_string(),
    })
}

/// A commit status of the combined status.
fn status(s: &Value) -> Option<Check> {
    let name = s["context"].as_str()?.to_string();
    let detail = s["state"].as_str()?;
    let state = match detail {
        "success" => CheckState::Passed,
        "pending" => CheckState::Running,
        _ => CheckState::Failed,
    };
    Some(Check {
        name,
        state,
        detail: detail.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_from_runs_and_statuses() {
        let run = |status: &str, conclusion: Value| {
            check_run(&json!({"name": "build", "status": status, "conclusion": conclusion}))
                .map(|c| (c.state, c.detail))
        };
        assert_eq!(
            run("completed", json!("success")),
            Some((CheckState::Passed, "success".into()))
        );
        assert_eq!(
            run("completed", json!("skipped")).map(|c| c.0),
            Some(CheckState::Passed)
        );
        assert_eq!(
            run("completed", json!("timed_out")),
            Some((CheckState::Failed, "timed_out".into()))
        );
        assert_eq!(
            run("in_progress", Value::Null),
            Some((CheckState::Running, "in_progress".into()))
        );
        let st = |state: &str| status(&json!({"context": "ci", "state": state})).map(|c| c.state);
        assert_eq!(st("success"), Some(CheckState::Passed));
        assert_eq!(st("pending"), Some(CheckState::Running));
        assert_eq!(st("error"), Some(CheckState::Failed));
        assert_eq!(status(&json!({"state": "success"})), None);
    }
}
