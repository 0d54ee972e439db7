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
use crate::planner::{ExclusionReason, Plan, StepReason};
use crate::support::text::short;

pub mod chat;
pub mod preview;

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
        // Steps `-target` left out are the change's too: not deployed yet.
        let planned = s.action == crate::planner::Action::Run || s.is_untargeted();
        if planned && (direct || through) {
            picked.push(s.name.clone());
        }
    }
    picked
}

/// What a PR left out by its own CI is told: covered by it, or waiting for it.
fn ci_sentence(repo: &str, e: &crate::planner::Excluded) -> Option<String> {
    let detail = crate::support::text::markdown_text(&e.detail);
    match e.reason {
        ExclusionReason::CoveredByCi => Some(format!(
            "**Covered by CI, not deployed.** Its checks passed at `{}` and it touches only \
             components of `{repo}` that its CI covers (`ci_covers`): it is not merged into \
             the staging revision.\n\n{detail}.",
            short(&e.head)
        )),
        ExclusionReason::WaitingForChecks => Some(format!(
            "**Waiting for checks** at `{}` before it can join the staging revision of \
             `{repo}`; it is planned again when they finish. {detail}.",
            short(&e.head)
        )),
        _ => None,
    }
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
        if let Some(text) = ci_sentence(repo, e) {
            let _ = writeln!(out, "{text}");
            return Some(out);
        }
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
        let untargeted = plan
            .steps
            .iter()
            .any(|s| s.name == *step && s.is_untargeted());
        let mark = match result {
            StepResult::Success | StepResult::DoneBefore => "✅",
            StepResult::Failed => "❌",
            _ => "⏭️",
        };
        if untargeted {
            let _ = writeln!(out, "| `{step}` | ⏭️ left out by -target | | |");
            continue;
        }
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

/// Whether `-target` left out some of the change's steps.
fn partly(config: &Config, plan: &Plan, repo: &str, change: &str) -> bool {
    steps_of(config, plan, repo, change)
        .iter()
        .any(|n| plan.steps.iter().any(|s| s.name == *n && s.is_untargeted()))
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
                let ours = marker(&plan.name, repo);
                if let Err(e) = upsert_comment(&gh, &slug, number, (&ours, &body), true).await
                {
                    warnings.push(e);
                }
                let excluded = repo_plan.excluded.iter().find(|e| e.id == id);
                let status = match excluded {
                    Some(e) if e.reason == ExclusionReason::Blamed => {
                        Some(("failure", "left out: it broke a deploy step"))
                    }
                    Some(e) if e.reason == ExclusionReason::CoveredByCi => Some(COVERED),
                    Some(_) => None,
                    // Partly deployed (`-target`): no verdict until the rest runs.
                    None if partly(config, plan, repo, &id) => None,
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

/// The status of a PR covered by CI.
const COVERED: (&str, &str) = ("success", "covered by CI, not deployed");

/// Tell the PRs covered by CI (`covered_by_ci`) so, when there is nothing to deploy (and
/// so no [`after_apply`]): their comment, once (an unchanged comment is not edited), and a
/// success status.
pub async fn covered(config: &Config, plan: &Plan) -> Vec<GitHubError> {
    run(
        config,
        plan,
        |gh: Arc<GitHub>, slug: String, repo: &str| async move {
            let mut warnings = Vec::new();
            let covered = plan.repos[repo]
                .excluded
                .iter()
                .filter(|e| e.reason == ExclusionReason::CoveredByCi);
            for e in covered {
                let number = e.id.trim_start_matches('#');
                let mut body = marker(&plan.name, repo);
                let _ = writeln!(body, "\n### kcideploy · `{}`\n", plan.name);
                let _ = writeln!(body, "{}", ci_sentence(repo, e).unwrap_or_default());
                let ours = marker(&plan.name, repo);
                match upsert_comment(&gh, &slug, number, (&ours, &body), false).await {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(err) => warnings.push(err),
                }
                let (state, description) = COVERED;
                let status = json!({"state": state, "context": config.file.notify.context, "description": description});
                if let Err(err) = gh
                    .post(&format!("/repos/{slug}/statuses/{}", e.head), &status)
                    .await
                {
                    warnings.push(err);
                }
            }
            warnings
        },
    )
    .await
}

/// Post or edit this plan's comment on a PR; `false` when it already says `body` and
/// `again` does not ask to edit it anyway (after an apply it is, as it always was).
pub async fn upsert_comment(
    gh: &GitHub,
    slug: &str,
    number: &str,
    (marker, body): (&str, &str),
    again: bool,
) -> Result<bool, GitHubError> {
    let comments = gh
        .get_all(&format!(
            "/repos/{slug}/issues/{number}/comments?per_page=100"
        ))
        .await?;
    let ours = comments
        .iter()
        .find(|c| c["body"].as_str().is_some_and(|b| b.contains(marker)));
    if !again && ours.is_some_and(|c| c["body"].as_str() == Some(body)) {
        return Ok(false);
    }
    match ours.and_then(|c| c["id"].as_u64()) {
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
    Ok(true)
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
