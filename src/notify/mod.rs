//! Tell contributors what happened: one comment per PR, found again by a hidden marker and
//! edited in place on later runs, and a commit status on the PR head. Every comment the bot
//! posts is rendered here.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use serde_json::json;

use crate::apply::events::StepResult;
use crate::config::{Config, ForgeKind};
use crate::forge::github::{GitHub, GitHubError, slug};
use crate::planner::{Plan, StepReason};
use crate::support::text::short;

pub mod chat;

/// What a run did, for the comments.
pub struct RunResults<'a> {
    pub run_id: &'a str,
    /// Step → (result, duration in ms).
    pub steps: BTreeMap<String, (StepResult, u64)>,
    /// Why failed steps failed.
    pub details: BTreeMap<String, String>,
}

/// The hidden marker of this plan's comment on a PR of `repo`.
pub fn marker(plan: &str, repo: &str) -> String {
    format!("<!-- kcideploy:{plan}:{repo} -->")
}

/// Steps that run because of a change: those whose `on` components its files belong to, and
/// the steps that need them; in plan order.
fn steps_of(config: &Config, plan: &Plan, repo: &str, change: &str) -> Vec<String> {
    let Some(paths) = plan
        .repos
        .get(repo)
        .and_then(|r| r.included.iter().find(|c| c.id == change))
        .map(|c| &c.paths)
    else {
        return Vec::new();
    };
    let mut picked: Vec<String> = Vec::new();
    for s in &plan.steps {
        let Some(step) = config.file.steps.get(&s.name) else {
            continue;
        };
        let direct = step.on.iter().any(|c| {
            config
                .file
                .components
                .get(&c.value)
                .is_some_and(|cc| cc.repo.value == repo)
                && paths
                    .iter()
                    .any(|p| crate::planner::graph::component_matches(config, &c.value, p))
        });
        let through = s
            .because
            .iter()
            .any(|r| matches!(r, StepReason::Needs { step } if picked.contains(step)));
        if s.action == crate::planner::Action::Run && (direct || through) {
            picked.push(s.name.clone());
        }
    }
    picked
}

fn duration(ms: u64) -> String {
    crate::support::text::age((ms / 1000) as i64)
}

/// The comment for one PR.
pub fn comment(
    config: &Config,
    plan: &Plan,
    repo: &str,
    change: &str,
    results: &RunResults<'_>,
) -> Option<String> {
    let repo_plan = plan.repos.get(repo)?;
    let mut out = marker(&plan.name, repo);
    let _ = writeln!(out, "\n### kcideploy · `{}`\n", plan.name);
    if let Some(e) = repo_plan.excluded.iter().find(|e| e.id == change) {
        let _ = writeln!(
            out,
            "**Left out** of the staging revision of `{repo}` at `{}`: `{}`: {}.",
            short(&e.head),
            e.reason.as_str(),
            crate::support::text::markdown_text(&e.detail)
        );
        return Some(out);
    }
    let included = repo_plan.included.iter().find(|c| c.id == change)?;
    let _ = writeln!(
        out,
        "**Included** at `{}` in the staging revision `{}` of `{repo}` ({} cycle, run `{}`).\n",
        short(&included.head),
        short(&repo_plan.staging),
        plan.cycle.as_str(),
        results.run_id
    );
    let steps = steps_of(config, plan, repo, change);
    if steps.is_empty() {
        let _ = writeln!(out, "No deploy step is triggered by its files.");
        cycle_checks(&mut out, plan, results);
        return Some(out);
    }
    let _ = writeln!(out, "| step | result | duration | log |\n|---|---|---|---|");
    for step in &steps {
        let (result, ms) = results
            .steps
            .get(step)
            .copied()
            .unwrap_or((StepResult::Cancelled, 0));
        let mark = match result {
            StepResult::Success | StepResult::DoneBefore => "✅",
            StepResult::Failed => "❌",
            _ => "⏭️",
        };
        let log = match &config.file.notify.logs_url {
            Some(base) => format!(
                "[log]({}/{}/{}.log)",
                base.trim_end_matches('/'),
                results.run_id,
                crate::config::names::file_name(step)
                    .replace('[', "%5B")
                    .replace(']', "%5D")
            ),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "| `{step}` | {mark} {} | {} | {log} |",
            result.as_str(),
            duration(ms)
        );
    }
    why_failed(&mut out, &steps, results);
    cycle_checks(&mut out, plan, results);
    Some(out)
}

/// Where to read why these steps failed, folded. The error itself is never posted (it can
/// hold paths, hosts and tool output): it is in the step's log, the run's history and the
/// output of the apply or the server log.
fn why_failed(out: &mut String, steps: &[String], results: &RunResults<'_>) {
    for step in steps {
        if results.details.contains_key(step) {
            let _ = writeln!(
                out,
                "\n<details><summary><code>{step}</code> failed</summary>\n\n\
                 Why is in its log `{file}.log` of run `{run}`, and in \
                 `kcideploy state history` on the deploy host.\n</details>",
                file = crate::config::names::file_name(step),
                run = results.run_id
            );
        }
    }
}

/// The steps every cycle runs whatever changed (the pipe-cleaner and its check): they speak
/// for every PR of the cycle.
fn cycle_checks(out: &mut String, plan: &Plan, results: &RunResults<'_>) {
    let checks: Vec<String> = plan
        .steps
        .iter()
        .filter(|s| s.action == crate::planner::Action::Run)
        .filter(|s| {
            s.because
                .iter()
                .any(|r| matches!(r, StepReason::Always { .. }))
        })
        .map(|s| s.name.clone())
        .collect();
    if checks.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n**{} cycle checks**\n\n| step | result | duration |\n|---|---|---|",
        plan.cycle.as_str()
    );
    for step in &checks {
        let (result, ms) = results
            .steps
            .get(step)
            .copied()
            .unwrap_or((StepResult::Cancelled, 0));
        let _ = writeln!(out, "| `{step}` | {} | {} |", result.as_str(), duration(ms));
    }
    why_failed(out, &checks, results);
}

/// Whether a PR's steps all succeeded.
fn pr_succeeded(
    config: &Config,
    plan: &Plan,
    repo: &str,
    change: &str,
    results: &RunResults<'_>,
) -> bool {
    steps_of(config, plan, repo, change).iter().all(|s| {
        matches!(
            results.steps.get(s).map(|r| r.0),
            Some(StepResult::Success | StepResult::DoneBefore)
        )
    })
}

/// Whether any repo of the plan file takes notifications, or a chat does.
pub fn wanted(config: &Config) -> bool {
    config.file.notify.enabled && (github_wanted(config) || !config.file.notify.webhooks.is_empty())
}

fn github_wanted(config: &Config) -> bool {
    config.file.notify.enabled
        && config
            .file
            .repos
            .values()
            .any(|r| r.forge == ForgeKind::Github)
}

/// Set `pending` on every included PR head (before apply).
pub async fn pending(config: &Config, plan: &Plan) -> Vec<GitHubError> {
    run(
        config,
        plan,
        |gh: Arc<GitHub>, slug: String, repo: &str| async move {
            let mut warnings = Vec::new();
            for c in &plan.repos[repo].included {
                let body = json!({"state": "pending", "context": config.file.notify.context, "description": format!("deploying to {}", plan.name)});
                if let Err(e) = gh
                    .post(&format!("/repos/{slug}/statuses/{}", c.head), &body)
                    .await
                {
                    warnings.push(e);
                }
            }
            warnings
        },
    )
    .await
}

/// Comment on every PR and set the final statuses (after apply).
pub async fn after_apply(
    config: &Config,
    plan: &Plan,
    results: &RunResults<'_>,
) -> Vec<GitHubError> {
    run(
        config,
        plan,
        |gh: Arc<GitHub>, slug: String, repo: &str| async move {
            let mut warnings = Vec::new();
            let repo_plan = &plan.repos[repo];
            let ids: Vec<(String, String)> = repo_plan
                .included
                .iter()
                .map(|c| (c.id.clone(), c.head.clone()))
                .chain(
                    repo_plan
                        .excluded
                        .iter()
                        .map(|e| (e.id.clone(), e.head.clone())),
                )
                .collect();
            for (id, head) in ids {
                let number = id.trim_start_matches('#');
                let Some(body) = comment(config, plan, repo, &id, results) else {
                    continue;
                };
                if let Err(e) =
                    upsert_comment(&gh, &slug, number, &marker(&plan.name, repo), &body).await
                {
                    warnings.push(e);
                }
                let excluded = repo_plan.excluded.iter().find(|e| e.id == id);
                let status = match excluded {
                    Some(e) if e.reason == crate::planner::ExclusionReason::Blamed => {
                        Some(("failure", "left out: it broke a deploy step"))
                    }
                    Some(_) => None,
                    None if pr_succeeded(config, plan, repo, &id, results) => {
                        Some(("success", "deployed"))
                    }
                    None => Some(("failure", "a deploy step failed")),
                };
                if let Some((state, description)) = status {
                    let body = json!({"state": state, "context": config.file.notify.context, "description": description});
                    if let Err(e) = gh
                        .post(&format!("/repos/{slug}/statuses/{head}"), &body)
                        .await
                    {
                        warnings.push(e);
                    }
                }
            }
            warnings
        },
    )
    .await
}

async fn upsert_comment(
    gh: &GitHub,
    slug: &str,
    number: &str,
    marker: &str,
    body: &str,
) -> Result<(), GitHubError> {
    let comments = gh
        .get_all(&format!(
            "/repos/{slug}/issues/{number}/comments?per_page=100"
        ))
        .await?;
    let existing = comments
        .iter()
        .find(|c| c["body"].as_str().is_some_and(|b| b.contains(marker)))
        .and_then(|c| c["id"].as_u64());
    match existing {
        Some(id) => {
            gh.patch(
                &format!("/repos/{slug}/issues/comments/{id}"),
                &json!({"body": body}),
            )
            .await?
        }
        None => {
            gh.post(
                &format!("/repos/{slug}/issues/{number}/comments"),
                &json!({"body": body}),
            )
            .await?
        }
    };
    Ok(())
}

/// Run `f` for each github repo with a client, on the caller's runtime; collect warnings
/// (never fail the deploy).
async fn run<'a, F, Fut>(config: &'a Config, plan: &'a Plan, f: F) -> Vec<GitHubError>
where
    F: Fn(Arc<GitHub>, String, &'a str) -> Fut,
    Fut: std::future::Future<Output = Vec<GitHubError>>,
{
    if !github_wanted(config) {
        return Vec::new();
    }
    let client = match GitHub::new(config, std::path::Path::new(&plan.cache_dir)) {
        Ok(c) => Arc::new(c),
        Err(e) => return vec![e],
    };
    let mut warnings = Vec::new();
    for (name, repo) in &config.file.repos {
        if repo.forge != ForgeKind::Github || !plan.repos.contains_key(name) {
            continue;
        }
        let Some(slug) = slug(repo) else { continue };
        warnings.extend(f(client.clone(), slug, name).await);
    }
    warnings
}
