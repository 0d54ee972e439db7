//! `github_workflow`: dispatch a GitHub Actions workflow on a ref with inputs, find the run
//! the dispatch started, follow it until it completes, and fail unless its conclusion is
//! `success` (today's staging script waits for `workflow_runs[0]` to complete and never
//! looks at the conclusion, nor whether that run is its own).
//!
//! The run is the one GitHub names in the dispatch's answer (`return_run_details`); where
//! the API answers `204 No Content` instead (an older GitHub Enterprise Server), it is found
//! in the workflow's runs: `event=workflow_dispatch` on the ref, not listed before the
//! dispatch, created at or after it by GitHub's clock, with the staging revision as head
//! when the ref is the repo's staging branch; the oldest such run.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{Attempt, Kind, Outputs, StepCtx, StepError};
use crate::apply::process::{self, Cancel};
use crate::config::kinds::GithubWorkflowWith;
use crate::forge::github::{GitHub, slug};

/// Default time limit of one attempt: image builds take a while.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

/// How far GitHub's `created_at` may be before the dispatch's `Date` (both GitHub's clock,
/// in whole seconds).
const CLOCK_SLACK: i64 = 2;
/// The same without a `Date` in the answer: our clock against GitHub's.
const LOCAL_CLOCK_SLACK: i64 = 300;

/// Where the workflow is and what its run should look like.
struct Target {
    slug: String,
    workflow: String,
    git_ref: String,
    /// The run's `head_sha`, when the ref is the staging branch kcideploy pushed.
    head_sha: Option<String>,
}

fn target(ctx: &StepCtx<'_>, with: &GithubWorkflowWith) -> Result<Target, StepError> {
    let failed = |m: String| StepError::Failed(m);
    let (slug, git_ref, head_sha) = match (&with.repo, &with.github_repo) {
        (Some(repo), _) => {
            let config = ctx
                .run
                .config
                .file
                .repos
                .get(repo)
                .ok_or_else(|| failed(format!("unknown repo `{repo}`")))?;
            let slug = slug(config).ok_or_else(|| {
                failed(format!(
                    "repo `{repo}`: set `github_repo: owner/name` (its url is not a github.com URL)"
                ))
            })?;
            let git_ref = with
                .git_ref
                .clone()
                .unwrap_or_else(|| config.staging_branch.clone());
            let head = (git_ref == config.staging_branch)
                .then(|| ctx.run.plan.repos.get(repo).map(|r| r.staging.clone()))
                .flatten();
            (slug, git_ref, head)
        }
        (None, Some(slug)) => {
            let git_ref = with
                .git_ref
                .clone()
                .ok_or_else(|| failed("with.ref is needed with with.github_repo".into()))?;
            (slug.clone(), git_ref, None)
        }
        (None, None) => return Err(failed("with.repo or with.github_repo is needed".into())),
    };
    Ok(Target {
        slug,
        workflow: with.workflow.clone(),
        git_ref,
        head_sha,
    })
}

/// A query parameter's value, percent-encoded.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The inputs with `${...}` replaced in strings.
fn inputs(ctx: &StepCtx<'_>, with: &GithubWorkflowWith) -> Result<Value, StepError> {
    let mut out = serde_json::Map::new();
    for (k, v) in &with.inputs {
        let v = match v {
            Value::String(s) => Value::String(
                super::docker::substitute(s, ctx)
                    .map_err(|e| StepError::Failed(format!("with.inputs.{k}: {e}")))?,
            ),
            other => other.clone(),
        };
        out.insert(k.clone(), v);
    }
    Ok(Value::Object(out))
}

/// Sleep `d`, or stop when the run is cancelled.
async fn pause(ctx: &mut StepCtx<'_>, d: Duration) -> Result<(), StepError> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = process::cancelled(&mut ctx.cancel, Cancel::Graceful) => Err(StepError::Cancelled),
    }
}

struct Follow<'a> {
    client: GitHub,
    target: Target,
    interval: Duration,
    deadline: Instant,
    limit: Duration,
    with: &'a GithubWorkflowWith,
}

impl Follow<'_> {
    fn runs_path(&self) -> String {
        let t = &self.target;
        format!(
            "/repos/{}/actions/workflows/{}/runs?event=workflow_dispatch&branch={}&per_page=100",
            t.slug,
            encode(&t.workflow),
            encode(&t.git_ref)
        )
    }

    async fn runs(&self) -> Result<Vec<Value>, StepError> {
        let answer = self
            .client
            .get_one(&self.runs_path())
            .await
            .map_err(|e| StepError::Failed(e.to_string()))?;
        Ok(answer["workflow_runs"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Time left before the attempt's limit, at most one poll interval.
    fn next_pause(&self) -> Option<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| left.min(self.interval))
    }

    /// The run the dispatch started, from the runs list.
    async fn find(
        &self,
        ctx: &mut StepCtx<'_>,
        before: &BTreeSet<u64>,
        (dispatched, slack): (Timestamp, i64),
    ) -> Result<u64, StepError> {
        let t = &self.target;
        loop {
            let found = self
                .runs()
                .await?
                .into_iter()
                .filter(|r| r["id"].as_u64().is_some_and(|id| !before.contains(&id)))
                .filter(|r| r["event"] == "workflow_dispatch" && r["head_branch"] == t.git_ref)
                .filter(|r| t.head_sha.as_ref().is_none_or(|sha| r["head_sha"] == *sha))
                .filter(|r| {
                    r["created_at"]
                        .as_str()
                        .and_then(|c| c.parse::<Timestamp>().ok())
                        .is_some_and(|c| c.as_second() >= dispatched.as_second() - slack)
                })
                .filter_map(|r| Some((r["created_at"].as_str()?.to_string(), r["id"].as_u64()?)))
                .min();
            if let Some((_, id)) = found {
                return Ok(id);
            }
            let Some(wait) = self.next_pause() else {
                return Err(StepError::Failed(format!(
                    "no run of workflow {} on {} appeared within {} of the dispatch \
                     (https://github.com/{}/actions/workflows/{})",
                    t.workflow,
                    t.git_ref,
                    crate::config::HumanDuration(self.limit),
                    t.slug,
                    t.workflow
                )));
            };
            pause(ctx, wait).await?;
        }
    }

    /// Poll run `id` until it completes; its conclusion must be `success`.
    async fn follow(&self, ctx: &mut StepCtx<'_>, id: u64) -> Result<Outputs, StepError> {
        let path = format!("/repos/{}/actions/runs/{id}", self.target.slug);
        let mut url = format!("run {id}");
        let mut last = String::new();
        loop {
            let run = self
                .client
                .get_one(&path)
                .await
                .map_err(|e| StepError::Failed(format!("following {url}: {e}")))?;
            if let Some(u) = run["html_url"].as_str() {
                url = u.to_string();
            }
            let status = run["status"].as_str().unwrap_or("unknown").to_string();
            if status != last {
                ctx.progress(format!("{url}: {status}"));
                last = status.clone();
            }
            if status == "completed" {
                let conclusion = run["conclusion"].as_str().unwrap_or("none");
                return match conclusion {
                    "success" => Ok(Some(json!({
                        "run_id": id,
                        "html_url": url,
                        "conclusion": conclusion,
                        "workflow": self.with.workflow,
                        "ref": self.target.git_ref,
                    }))),
                    other => Err(StepError::Failed(format!(
                        "workflow run {url} concluded `{other}`, not `success`"
                    ))),
                };
            }
            let Some(wait) = self.next_pause() else {
                return Err(StepError::Failed(format!(
                    "workflow run {url} did not complete within {} (still `{status}`); \
                     it goes on on GitHub",
                    crate::config::HumanDuration(self.limit)
                )));
            };
            pause(ctx, wait).await?;
        }
    }
}

async fn run(ctx: &mut StepCtx<'_>, with: &GithubWorkflowWith) -> Result<Outputs, StepError> {
    let deadline = Instant::now() + ctx.limit;
    let target = target(ctx, with)?;
    let inputs = inputs(ctx, with)?;
    let client = GitHub::new(&ctx.run.config, &ctx.run.cache_dir)
        .map_err(|e| StepError::Failed(e.to_string()))?;
    let follow = Follow {
        client,
        target,
        interval: with.interval.0,
        deadline,
        limit: ctx.limit,
        with,
    };
    let t = &follow.target;
    let before: BTreeSet<u64> = follow
        .runs()
        .await?
        .iter()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    let dispatch = format!(
        "/repos/{}/actions/workflows/{}/dispatches",
        t.slug,
        encode(&t.workflow)
    );
    ctx.progress(format!(
        "dispatch {} on {} of {}",
        t.workflow, t.git_ref, t.slug
    ));
    let body = json!({ "ref": t.git_ref, "inputs": inputs, "return_run_details": true });
    let local = Timestamp::now();
    let (answer, date) = follow
        .client
        .post_maybe_empty(&dispatch, &body)
        .await
        .map_err(|e| StepError::Failed(e.to_string()))?;
    let named = answer.as_ref().and_then(|a| a["workflow_run_id"].as_u64());
    let id = match named {
        Some(id) => id,
        None => {
            let since = match date {
                Some(date) => (date, CLOCK_SLACK),
                None => (local, LOCAL_CLOCK_SLACK),
            };
            follow.find(ctx, &before, since).await?
        }
    };
    follow.follow(ctx, id).await
}

/// `github_workflow`.
pub struct Workflow(pub GithubWorkflowWith);

impl Kind for Workflow {
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a> {
        Box::pin(run(ctx, &self.0))
    }

    fn default_timeout(&self) -> Duration {
        DEFAULT_TIMEOUT
    }

    fn watches_limit(&self) -> bool {
        true
    }
}
