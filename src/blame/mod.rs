//! Find the included change that broke a deploy: check for a flake, then bisect the candidate
//! changes (those that affected the failed step's components). This module is the search
//! strategy only: each round asks apply to run the failed step's subgraph on a staging
//! revision made from a subset of them ([`crate::apply::run_round`]: the same executor,
//! approvals, time limits and cancellation as an apply).

mod search;

use std::collections::BTreeSet;
use std::path::PathBuf;

use jiff::Timestamp;

pub use search::{Next, Search, Verdict};

use crate::apply::events::{Event, Reporter};
use crate::apply::{ApplyOptions, Controls, Round, RunDirs, run_round};
use crate::config::Config;
use crate::gitops::remote::branch_head;
use crate::gitops::stage::{Merge, StageRequest, ToMerge, stage};
use crate::planner::{Action, Plan};
use crate::state::{BlameRecord, BlameRound, RoundResult, RunResult, StepResult, VerdictKind};

/// A change that may have broken the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub repo: String,
    pub change: String,
    pub head: String,
}

impl Candidate {
    pub fn label(&self) -> String {
        format!("{} {}", self.repo, self.change)
    }
}

/// The failed step and every step it runs after (through `needs`, `after`, and the
/// `git_push` steps publishing a revision it uses) that the plan runs, or would run but for
/// having finished with the same inputs (a round's inputs differ), in plan order.
pub fn subgraph(config: &Config, plan: &Plan, failed: &str) -> Vec<String> {
    let published = crate::planner::graph::published_by(config);
    let mut keep = BTreeSet::new();
    let mut todo = vec![failed.to_string()];
    while let Some(name) = todo.pop() {
        if !keep.insert(name.clone()) {
            continue;
        }
        if let Some(step) = config.file.steps.get(&name) {
            todo.extend(
                step.needs
                    .iter()
                    .chain(&step.after)
                    .map(|n| n.value.clone()),
            );
        }
        // A step using a repo's revision reads the pushed one: each round pushes its own.
        todo.extend(
            published
                .get(&name)
                .into_iter()
                .flatten()
                .map(|p| p.step.clone()),
        );
    }
    plan.steps
        .iter()
        .filter(|s| (s.action == Action::Run || s.is_done_before()) && keep.contains(&s.name))
        .map(|s| s.name.clone())
        .collect()
}

/// Included changes whose paths affected a component that triggered the failed step or one
/// of the steps it needs (transitively), in merge order.
pub fn candidates(config: &Config, plan: &Plan, failed: &str) -> Vec<Candidate> {
    let mut components = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![failed.to_string()];
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(step) = config.file.steps.get(&name) {
            components.extend(step.on.iter().map(|c| c.value.clone()));
            todo.extend(step.needs.iter().map(|n| n.value.clone()));
        }
    }
    // A change's own paths (against its fork point) decide, so this holds with nothing
    // deployed yet too.
    let mut out = Vec::new();
    for (repo, repo_plan) in &plan.repos {
        for change in &repo_plan.included {
            let touched = components.iter().any(|c| {
                config
                    .file
                    .components
                    .get(c)
                    .is_some_and(|cc| cc.repo.value == *repo)
                    && change
                        .paths
                        .iter()
                        .any(|p| crate::planner::graph::component_matches(config, c, p))
            });
            if touched {
                out.push(Candidate {
                    repo: repo.clone(),
                    change: change.id.clone(),
                    head: change.head.clone(),
                });
            }
        }
    }
    out
}

/// Staging revisions with the non-candidates and the candidates in `set`; `None` when they
/// do not merge. Staged by gitops like any plan: the same inputs give the same commits.
fn staging_for(
    plan: &Plan,
    cands: &[Candidate],
    set: &BTreeSet<usize>,
) -> Result<Option<Plan>, String> {
    let mut out = plan.clone();
    let repos: BTreeSet<&str> = cands.iter().map(|c| c.repo.as_str()).collect();
    for repo in repos {
        let repo_plan = &plan.repos[repo];
        let changes = repo_plan
            .included
            .iter()
            .filter(|change| {
                let index = cands
                    .iter()
                    .position(|c| c.repo == repo && c.change == change.id);
                index.is_none_or(|i| set.contains(&i))
            })
            .map(|change| ToMerge {
                id: change.id.clone(),
                head: change.head.clone(),
                title: change.title.clone(),
                files: Some(change.paths.clone()),
            })
            .collect();
        let request = StageRequest {
            cache: PathBuf::from(&plan.cache_dir).join(format!("{repo}.git")),
            base: &repo_plan.base,
            base_branch: &repo_plan.base_branch,
            changes,
            deployed: None,
        };
        let staged = stage(&request).map_err(|e| format!("repo `{repo}`: {e}"))?;
        let merged_all = staged
            .merges
            .iter()
            .all(|(_, m)| matches!(m, Merge::Merged { .. } | Merge::Empty));
        if !merged_all {
            return Ok(None);
        }
        if let Some(r) = out.repos.get_mut(repo) {
            r.staging = staged.staging;
        }
    }
    Ok(Some(out))
}

/// Where and how a bisection runs its rounds.
pub struct BisectEnv<'a> {
    /// The rounds' logs go under it (`round-N/`).
    pub log_root: PathBuf,
    /// Where repo checkouts are exported.
    pub checkout_dir: PathBuf,
    /// Parallelism and grace, as for the apply.
    pub opts: &'a ApplyOptions,
    /// The apply's approver and stop requests.
    pub controls: &'a Controls,
}

/// Runs rounds and keeps their records.
struct Trials<'a> {
    config: &'a Config,
    plan: &'a Plan,
    failed: &'a str,
    steps: Vec<String>,
    cands: &'a [Candidate],
    env: BisectEnv<'a>,
    rounds: Vec<BlameRound>,
}

impl Trials<'_> {
    /// Round `n` with the candidates in `set`: whether the step failed, or why the round
    /// says nothing.
    async fn run(
        &mut self,
        n: u32,
        set: BTreeSet<usize>,
        reporter: &mut dyn Reporter,
    ) -> Result<bool, String> {
        if let Some(stop) = self.env.controls.stop.current() {
            return Err(format!("cancelled by {}", stop.by));
        }
        let included: Vec<String> = set.iter().map(|&i| self.cands[i].label()).collect();
        let log_dir = self.env.log_root.join(format!("round-{n}"));
        let (result, steps, found) = match staging_for(self.plan, self.cands, &set) {
            Ok(Some(plan)) => {
                let report = run_round(
                    Round {
                        config: self.config,
                        plan: with_remote_heads(self.config, plan),
                        steps: &self.steps,
                        run_id: format!("blame-{}", Timestamp::now().as_second()),
                        dirs: RunDirs {
                            log_dir: log_dir.clone(),
                            checkout_dir: self.env.checkout_dir.clone(),
                        },
                    },
                    self.env.opts,
                    self.env.controls,
                    reporter,
                )
                .await;
                let found = match (report.result, &report.stopped) {
                    (RunResult::Success, _) => Ok(false),
                    (RunResult::Failed, _) => Ok(true),
                    (_, Some(stop)) => Err(format!("cancelled by {}", stop.by)),
                    _ => Err(not_run(n, &report.steps)),
                };
                let result = match found {
                    Ok(true) => RoundResult::Fail,
                    Ok(false) => RoundResult::Pass,
                    Err(_) => RoundResult::Cancelled,
                };
                (result, report.steps, found)
            }
            Ok(None) | Err(_) => (
                RoundResult::Conflict,
                Vec::new(),
                Err("a subset of the changes did not merge".to_string()),
            ),
        };
        reporter.event(&Event::BlameRound {
            step: self.failed.to_string(),
            round: n,
            included: included.clone(),
            result,
        });
        self.rounds.push(BlameRound {
            n,
            included,
            result,
            log_dir: log_dir.display().to_string(),
            steps,
        });
        found
    }
}

/// Why a round that neither passed nor failed says nothing: its first step not run.
fn not_run(n: u32, steps: &[crate::state::RunStep]) -> String {
    match steps.iter().find(|s| s.result == StepResult::Cancelled) {
        Some(s) => format!(
            "round {n} did not run `{}`: {}",
            s.name,
            s.detail.as_deref().unwrap_or("cancelled")
        ),
        None => format!("round {n} was cancelled"),
    }
}

/// git_push steps push each round's revision: lease on what the remote has now.
fn with_remote_heads(config: &Config, mut plan: Plan) -> Plan {
    for (name, repo_cfg) in &config.file.repos {
        if let Some(r) = plan.repos.get_mut(name) {
            // Unknown (unreachable remote): the push step then reports it.
            r.remote_staging = branch_head(
                &config.repo_url(repo_cfg),
                &repo_cfg.staging_branch,
                &config.file.timeouts,
            )
            .ok()
            .flatten();
        }
    }
    plan
}

/// Bisect the failure of `failed` in run `run_id`.
pub async fn bisect(
    config: &Config,
    plan: &Plan,
    failed: &str,
    run_id: &str,
    env: BisectEnv<'_>,
    reporter: &mut dyn Reporter,
) -> (BlameRecord, Vec<Candidate>, Verdict) {
    let cands = candidates(config, plan, failed);
    let labels: Vec<String> = cands.iter().map(Candidate::label).collect();
    let mut trials = Trials {
        config,
        plan,
        failed,
        steps: subgraph(config, plan, failed),
        cands: &cands,
        env,
        rounds: Vec::new(),
    };
    let mut search = Search::new(cands.len(), config.file.blame.max_rounds);
    let verdict = if cands.is_empty() {
        Verdict::Infrastructure("no included change touched the step's components".into())
    } else {
        match trials.run(0, (0..cands.len()).collect(), reporter).await {
            Ok(false) => Verdict::Flake,
            Err(why) => Verdict::Undecided(why),
            Ok(true) => {
                let mut n = 0;
                loop {
                    match search.advance() {
                        Next::Test(set) => {
                            n += 1;
                            let found = trials.run(n, set.into_iter().collect(), reporter).await;
                            search.found(found);
                        }
                        Next::Done(verdict) => break verdict,
                    }
                }
            }
        }
    };
    let (kind, culprits, summary) = describe(&verdict, &labels, failed);
    let record = BlameRecord {
        run_id: run_id.to_string(),
        step: failed.to_string(),
        at: Timestamp::now(),
        candidates: labels,
        rounds: trials.rounds,
        verdict: kind,
        culprits,
        summary: summary.clone(),
    };
    reporter.event(&Event::BlameVerdict {
        step: failed.to_string(),
        verdict: kind,
        summary,
    });
    (record, cands, verdict)
}

/// The verdict's kind, culprits and one-line summary.
fn describe(
    verdict: &Verdict,
    labels: &[String],
    failed: &str,
) -> (VerdictKind, Vec<String>, String) {
    match verdict {
        Verdict::Blamed(i) => (
            VerdictKind::Blamed,
            vec![labels[*i].clone()],
            format!("{} breaks `{failed}`", labels[*i]),
        ),
        Verdict::Pair(a, b) => (
            VerdictKind::Pair,
            vec![labels[*a].clone(), labels[*b].clone()],
            format!(
                "{} and {} break `{failed}` only together; {} is left out",
                labels[*a], labels[*b], labels[*b]
            ),
        ),
        Verdict::Flake => (
            VerdictKind::Flake,
            vec![],
            format!("`{failed}` passed on the same inputs: a flake, nobody blamed"),
        ),
        Verdict::Infrastructure(why) => (
            VerdictKind::Infrastructure,
            vec![],
            format!("infrastructure failure of `{failed}`: {why}; nobody blamed"),
        ),
        Verdict::Undecided(why) => (
            VerdictKind::Undecided,
            vec![],
            format!("no culprit for `{failed}`: {why}"),
        ),
    }
}
