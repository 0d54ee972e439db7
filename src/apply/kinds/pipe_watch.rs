//! The pipe-cleaner's `phase: watch`, for a deployment whose trigger watches no test branch
//! (production runs it with `--trees=!kernelci`): push nothing, wait for the next checkout
//! of a tree the deployed trigger really polls, made after the step started, wait for its
//! results and compare them with the previous checkout of the same tree and branch.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::kernelci::{compare, failed, pause, summarise, wait_for_tree};
use super::pipe_cleaner::TestKernel;
use super::{StepCtx, StepError};
use crate::config::kinds::{PipeCleanerWith, WatchedTree};
use crate::kernelci::{Api, node_id};

/// The API's timestamp format (`created`, `updated`): UTC, microseconds, no zone.
fn api_time(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn checkout_filters(watched: &WatchedTree) -> Vec<(String, String)> {
    vec![
        ("kind".to_string(), "checkout".to_string()),
        (
            "data.kernel_revision.tree".to_string(),
            watched.tree.clone(),
        ),
        (
            "data.kernel_revision.branch".to_string(),
            watched.branch.clone(),
        ),
    ]
}

/// Run `phase: watch`; the outputs name both checkouts and their summaries.
pub(super) async fn watch(
    ctx: &mut StepCtx<'_>,
    with: &PipeCleanerWith,
    deadline: Instant,
) -> Result<Value, StepError> {
    let api = Api::new(&ctx.run.config).map_err(failed)?;
    let since = jiff::Timestamp::now();
    let (watched, checkout) = next_checkout(ctx, &api, with, since, deadline).await?;
    let checkout_id = node_id(&checkout).unwrap_or_default().to_string();
    let created = checkout["created"].as_str().unwrap_or_default().to_string();
    let commit = checkout["data"]["kernel_revision"]["commit"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let kernel = TestKernel {
        tree: watched.tree.clone(),
        branch: watched.branch.clone(),
        sha: commit.clone(),
        tag: checkout["data"]["kernel_revision"]["describe"]
            .as_str()
            .unwrap_or(&checkout_id)
            .to_string(),
    };
    let treeid = checkout["treeid"]
        .as_str()
        .unwrap_or(&checkout_id)
        .to_string();
    let result = wait_for_tree(ctx, &api, with, &kernel, &checkout_id, &treeid, deadline).await?;
    let summary = summary_of(&api, &treeid, &result).await?;
    let mut outputs = json!({
        "tree": watched.tree, "branch": watched.branch, "commit": commit,
        "checkout": checkout_id, "treeid": treeid, "summary": summary,
    });
    let Some(previous) = previous_checkout(&api, with, &watched, &created, since).await? else {
        log(
            ctx,
            &format!(
                "no earlier checkout of {} {} in the last {}: nothing to compare with\n",
                watched.tree,
                watched.branch,
                crate::support::text::age(with.lookback.0.as_secs() as i64)
            ),
        );
        return Ok(outputs);
    };
    let previous_id = node_id(&previous).unwrap_or_default().to_string();
    let previous_tree = previous["treeid"]
        .as_str()
        .unwrap_or(&previous_id)
        .to_string();
    let previous_result = previous["result"].as_str().unwrap_or("").to_string();
    let before = summary_of(&api, &previous_tree, &previous_result).await?;
    outputs["previous_checkout"] = json!(previous_id);
    outputs["previous_summary"] = before.clone();
    let what = format!("{} {} checkout {checkout_id}", watched.tree, watched.branch);
    match compare(&before, &summary, &with.thresholds) {
        Ok(report) => {
            log(
                ctx,
                &format!("{what}: no regression against checkout {previous_id}:\n{report}\n"),
            );
            Ok(outputs)
        }
        Err(report) => Err(failed(format!(
            "regression on {what} against the previous checkout {previous_id}:\n{report}"
        ))),
    }
}

fn log(ctx: &StepCtx<'_>, text: &str) {
    let mut log = ctx.log;
    let _ = std::io::Write::write_all(&mut log, text.as_bytes());
}

async fn summary_of(api: &Api, treeid: &str, result: &str) -> Result<Value, StepError> {
    let nodes = api
        .nodes(&[("treeid".to_string(), treeid.to_string())])
        .await
        .map_err(failed)?;
    Ok(summarise(&nodes, result))
}

/// The first checkout of a watched tree created after `since`, polling every
/// `with.interval` for at most `with.checkout_timeout`.
async fn next_checkout(
    ctx: &mut StepCtx<'_>,
    api: &Api,
    with: &PipeCleanerWith,
    since: jiff::Timestamp,
    deadline: Instant,
) -> Result<(WatchedTree, Value), StepError> {
    let until = (Instant::now() + with.checkout_timeout.0).min(deadline);
    loop {
        for watched in &with.watch {
            let mut filters = checkout_filters(watched);
            filters.push(("created__gt".to_string(), api_time(since)));
            let found = api.nodes(&filters).await.map_err(failed)?;
            if let Some(node) = found
                .into_iter()
                .min_by(|a, b| a["created"].as_str().cmp(&b["created"].as_str()))
            {
                return Ok((watched.clone(), node));
            }
        }
        let names: Vec<String> = with
            .watch
            .iter()
            .map(|w| format!("{} {}", w.tree, w.branch))
            .collect();
        ctx.progress(format!(
            "waiting for a new checkout of {}",
            names.join(", ")
        ));
        if Instant::now() >= until {
            return Err(failed(format!(
                "no new checkout of {} after {}: is the deployed trigger running?",
                names.join(", "),
                crate::support::text::age(with.checkout_timeout.0.min(ctx.limit).as_secs() as i64)
            )));
        }
        pause(ctx, with.interval.0, until).await?;
    }
}

/// The latest finished checkout of the same tree and branch before `created` (and before
/// the step started), within `with.lookback`.
async fn previous_checkout(
    api: &Api,
    with: &PipeCleanerWith,
    watched: &WatchedTree,
    created: &str,
    since: jiff::Timestamp,
) -> Result<Option<Value>, StepError> {
    let from = since
        .checked_sub(Duration::from_secs(with.lookback.0.as_secs()))
        .unwrap_or(since);
    let mut filters = checkout_filters(watched);
    filters.push(("state".to_string(), "done".to_string()));
    filters.push(("created__gt".to_string(), api_time(from)));
    filters.push(("created__lt".to_string(), api_time(since)));
    let found = api.nodes(&filters).await.map_err(failed)?;
    Ok(found
        .into_iter()
        .filter(|n| n["created"].as_str().is_some_and(|c| c < created))
        .max_by(|a, b| a["created"].as_str().cmp(&b["created"].as_str())))
}
