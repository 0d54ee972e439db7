//! PR plan previews from `serve`: when a PR of a github repo is opened, pushed to or
//! reopened, the preview of `kcideploy plan --pr` is posted as one comment on it, found
//! again by its hidden marker and edited in place on every later push, and the head gets a
//! commit status `kcideploy/plan`. Previews run one at a time (never two comments racing)
//! and never fetch while a deploy fetches.

use std::sync::Arc;

use serde_json::json;

use super::hub::Hub;
use crate::forge::github::GitHub;
use crate::planner::CycleRequest;
use crate::workspace::{PlanRequest, Workspace};

/// The commit status context of previews.
pub const CONTEXT: &str = "kcideploy/plan";

/// The PR actions a preview answers.
pub fn wanted(action: &str) -> bool {
    matches!(
        action,
        "opened" | "synchronize" | "reopened" | "ready_for_review"
    )
}

/// Preview PR `number` of repo `name` (`slug` on GitHub) in the background.
pub(super) fn spawn(hub: Arc<Hub>, github: Arc<GitHub>, name: String, slug: String, number: u64) {
    tokio::spawn(async move {
        let _one_at_a_time = hub.previews.lock().await;
        let worked = hub.clone();
        let (repo, id) = (name.clone(), format!("#{number}"));
        let computed = tokio::task::spawn_blocking(move || compute(&worked, &repo, &id)).await;
        let (body, status) = match computed {
            Ok(Ok((body, head, description, state))) => {
                (Some(body), Some((head, description, state)))
            }
            Ok(Err(e)) => {
                tracing::warn!("preview of {slug}#{number}: {e}");
                (None, None)
            }
            Err(e) => {
                tracing::warn!("preview of {slug}#{number}: {e}");
                (None, None)
            }
        };
        if let Some(body) = body {
            let marker = crate::notify::preview::marker(&hub.config.file.name, &name);
            let number = number.to_string();
            if let Err(e) =
                crate::notify::upsert_comment(&github, &slug, &number, (&marker, &body), false)
                    .await
            {
                tracing::warn!("preview comment on {slug}#{number}: {e}");
            }
        }
        if let Some((head, description, state)) = status {
            let body = json!({"state": state, "context": CONTEXT, "description": description});
            if let Err(e) = github
                .post(&format!("/repos/{slug}/statuses/{head}"), &body)
                .await
            {
                tracing::warn!("preview status on {slug} {head}: {e}");
            }
        }
    });
}

/// The preview's comment, the head it is of, and the status' description and state.
fn compute(
    hub: &Hub,
    repo: &str,
    id: &str,
) -> miette::Result<(String, String, String, &'static str)> {
    let ws = Workspace::load(&hub.opts.file, None)?;
    let snapshot = {
        let _fetching = hub.fetching.lock().unwrap_or_else(|e| e.into_inner());
        ws.fetch()?
    };
    let request = PlanRequest {
        cycle: CycleRequest::Partial,
        ..Default::default()
    };
    let preview = ws.preview(&snapshot, repo, id, &request)?;
    let body = crate::notify::preview::text(&preview);
    let steps = crate::notify::preview::steps_run(&preview);
    let (state, merge) = match crate::notify::preview::merges(&preview) {
        Ok(_) => ("success", "merges cleanly".to_string()),
        Err(why) => (
            "failure",
            format!("left out: {}", why.split(':').next().unwrap_or(&why)),
        ),
    };
    let description =
        crate::support::text::clip(&format!("{steps} step(s) would run; {merge}"), 139);
    Ok((body, preview.change.head.clone(), description, state))
}
