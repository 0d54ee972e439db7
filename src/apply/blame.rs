//! Find the included change that broke a deploy: check for a flake, then bisect the candidate
//! changes (those that affected the failed step's components) by running the failed step's
//! subgraph on staging revisions made from subsets of them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use git2::Oid;
use jiff::Timestamp;
use tokio::sync::{mpsc, watch};

use super::events::{Event, Reporter, StepResult};
use super::process::Cancel;
use super::{RunContext, run_step};
use crate::config::Config;
use crate::gitops::{self, MergeStep};
use crate::planner::{Action, Plan};
use crate::state::{BlameRecord, BlameRound};

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

/// The failed step and every step it runs after (through `needs` and `after`) that the plan
/// runs, in plan order.
pub fn subgraph(config: &Config, plan: &Plan, failed: &str) -> Vec<String> {
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
    }
    plan.steps
        .iter()
        .filter(|s| s.action == Action::Run && keep.contains(&s.name))
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

/// What a bisection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This change breaks the step.
    Blamed(usize),
    /// These two break it only together; the second is left out.
    Pair(usize, usize),
    /// The step passed on the same inputs.
    Flake,
    /// It fails without any candidate (or there is none): nobody to blame.
    Infrastructure(String),
    /// Out of rounds, or a subset did not merge.
    Undecided(String),
}

/// The search, apart from how a round runs: `fails(set)` runs the subgraph with the non-candidate
/// changes and the candidates in `set` (indices, in merge order); `None` is inconclusive.
/// Single culprit among n: ceil(log2 n) prefix rounds + 1 check.
#[allow(unused_assignments)] // the round counter's last increment is not read again
pub async fn search<F, Fut>(n: usize, max_rounds: u32, mut fails: F) -> Verdict
where
    F: FnMut(Vec<usize>) -> Fut,
    Fut: std::future::Future<Output = Option<bool>>,
{
    let mut rounds = 0u32;
    macro_rules! test {
        ($set:expr) => {{
            if rounds >= max_rounds {
                return Verdict::Undecided(format!("max_rounds ({max_rounds}) reached"));
            }
            rounds += 1;
            match fails($set).await {
                Some(f) => f,
                None => return Verdict::Undecided("a subset of the changes did not merge".into()),
            }
        }};
    }
    if n == 0 {
        return Verdict::Infrastructure("no included change touched the step's components".into());
    }
    // Smallest failing prefix: all n fail (the apply), the empty prefix is not tested yet.
    let (mut lo, mut hi) = (0usize, n);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if test!((0..mid).collect()) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let k = hi - 1;
    if k == 0 {
        if test!(Vec::new()) {
            return Verdict::Infrastructure(
                "the step fails without any of the candidate changes".into(),
            );
        }
        return Verdict::Blamed(0);
    }
    if test!(vec![k]) {
        return Verdict::Blamed(k);
    }
    // Fails only with something before it: find the partner the same way.
    let (mut lo, mut hi) = (0usize, k);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let mut set: Vec<usize> = (0..mid).collect();
        set.push(k);
        if test!(set) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Verdict::Pair(hi - 1, k)
}

/// Staging revisions with the non-candidates and the candidates in `set`; `None` on a conflict.
fn staging_for(
    plan: &Plan,
    cands: &[Candidate],
    set: &BTreeSet<usize>,
) -> Result<Option<Plan>, String> {
    let mut out = plan.clone();
    let repos: BTreeSet<&str> = cands.iter().map(|c| c.repo.as_str()).collect();
    for repo in repos {
        let repo_plan = &plan.repos[repo];
        let cache =
            git2::Repository::open_bare(PathBuf::from(&plan.cache_dir).join(format!("{repo}.git")))
                .map_err(|e| format!("cannot open the cache of `{repo}`: {e}"))?;
        let mut tip = Oid::from_str(&repo_plan.base).map_err(|e| e.to_string())?;
        for change in &repo_plan.included {
            let index = cands
                .iter()
                .position(|c| c.repo == repo && c.change == change.id);
            if index.is_some_and(|i| !set.contains(&i)) {
                continue;
            }
            let head = Oid::from_str(&change.head).map_err(|e| e.to_string())?;
            let message = format!(
                "kcideploy: merge {} ({}) into {} (bisection)\n",
                change.id,
                crate::support::text::short(&change.head),
                repo_plan.base_branch
            );
            match gitops::merge_change(&cache, tip, head, &message).map_err(|e| e.to_string())? {
                MergeStep::Merged(c) => tip = c,
                MergeStep::Empty => {}
                MergeStep::Conflict(_) | MergeStep::Unrelated => return Ok(None),
            }
        }
        if let Some(r) = out.repos.get_mut(repo) {
            r.staging = tip.to_string();
        }
    }
    Ok(Some(out))
}

/// The staging branch's SHA on the remote now (bisection rounds push it).
fn remote_head(url: &str, branch: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["ls-remote", url, &format!("refs/heads/{branch}")])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(String::from)
}

/// Run the subgraph once on `plan`; `true` when every step succeeded.
async fn run_round(
    config: &Config,
    plan: Plan,
    steps: &[String],
    log_dir: PathBuf,
    checkout_dir: PathBuf,
    cancel: &watch::Receiver<Cancel>,
) -> bool {
    let mut plan = plan;
    // git_push steps push each round's revision: lease on what the remote has now.
    for (name, repo_cfg) in &config.file.repos {
        if let Some(r) = plan.repos.get_mut(name) {
            r.remote_staging = remote_head(&config.repo_url(repo_cfg), &repo_cfg.staging_branch);
        }
    }
    if std::fs::create_dir_all(&log_dir).is_err() {
        return false;
    }
    let ctx = Arc::new(RunContext {
        checkout_dir,
        cache_dir: PathBuf::from(&plan.cache_dir),
        config: config.clone(),
        run_id: format!("blame-{}", Timestamp::now().as_second()),
        log_dir,
        grace: std::time::Duration::from_secs(10),
        now: Timestamp::now(),
        http: OnceLock::new(),
        previous_outputs: Default::default(),
        plan,
    });
    let (events, _ignored) = mpsc::unbounded_channel();
    for (i, step) in steps.iter().enumerate() {
        let outcome = run_step(ctx.clone(), i, step.clone(), cancel.clone(), events.clone()).await;
        if outcome.result != StepResult::Success {
            return false;
        }
    }
    true
}

/// Where a bisection works.
pub struct BisectEnv {
    /// The rounds' logs go under it (`round-N/`).
    pub log_root: PathBuf,
    /// Where repo checkouts are exported.
    pub checkout_dir: PathBuf,
    pub cancel: watch::Receiver<Cancel>,
}

/// Bisect the failure of `failed` in run `run_id`.
pub async fn bisect(
    config: &Config,
    plan: &Plan,
    failed: &str,
    run_id: &str,
    env: BisectEnv,
    reporter: &mut dyn Reporter,
) -> (BlameRecord, Vec<Candidate>, Verdict) {
    let BisectEnv {
        log_root,
        checkout_dir,
        cancel,
    } = env;
    let steps = subgraph(config, plan, failed);
    let cands = candidates(config, plan, failed);
    let labels: Vec<String> = cands.iter().map(Candidate::label).collect();
    let rounds = std::cell::RefCell::new(Vec::<BlameRound>::new());
    let reporter = std::cell::RefCell::new(reporter);
    let run_one = |n: u32, set: BTreeSet<usize>| {
        let steps = steps.clone();
        let log_dir = log_root.join(format!("round-{n}"));
        let cancel = cancel.clone();
        let checkout_dir = checkout_dir.clone();
        let cands = &cands;
        let rounds = &rounds;
        let reporter = &reporter;
        async move {
            let included: Vec<String> = set.iter().map(|&i| cands[i].label()).collect();
            let result = match staging_for(plan, cands, &set) {
                Ok(Some(p)) => Some(
                    !run_round(config, p, &steps, log_dir.clone(), checkout_dir, &cancel).await,
                ),
                Ok(None) | Err(_) => None,
            };
            let text = match result {
                Some(true) => "fail",
                Some(false) => "pass",
                None => "conflict",
            };
            reporter.borrow_mut().event(&Event::BlameRound {
                step: failed.to_string(),
                round: n,
                included: included.clone(),
                result: text.to_string(),
            });
            rounds.borrow_mut().push(BlameRound {
                n,
                included,
                result: text.to_string(),
                log_dir: log_dir.display().to_string(),
            });
            result
        }
    };

    let verdict = if cands.is_empty() {
        Verdict::Infrastructure("no included change touched the step's components".into())
    } else if run_one(0, (0..cands.len()).collect()).await == Some(false) {
        Verdict::Flake
    } else {
        let mut n = 0;
        search(cands.len(), config.file.blame.max_rounds, |set| {
            n += 1;
            run_one(n, set.into_iter().collect())
        })
        .await
    };
    let (name, culprits, summary) = match &verdict {
        Verdict::Blamed(i) => (
            "blamed",
            vec![labels[*i].clone()],
            format!("{} breaks `{failed}`", labels[*i]),
        ),
        Verdict::Pair(a, b) => (
            "pair",
            vec![labels[*a].clone(), labels[*b].clone()],
            format!(
                "{} and {} break `{failed}` only together; {} is left out",
                labels[*a], labels[*b], labels[*b]
            ),
        ),
        Verdict::Flake => (
            "flake",
            vec![],
            format!("`{failed}` passed on the same inputs: a flake, nobody blamed"),
        ),
        Verdict::Infrastructure(why) => (
            "infrastructure",
            vec![],
            format!("infrastructure failure of `{failed}`: {why}; nobody blamed"),
        ),
        Verdict::Undecided(why) => (
            "undecided",
            vec![],
            format!("no culprit for `{failed}`: {why}"),
        ),
    };
    let record = BlameRecord {
        run_id: run_id.to_string(),
        step: failed.to_string(),
        at: Timestamp::now(),
        candidates: labels,
        rounds: rounds.into_inner(),
        verdict: name.to_string(),
        culprits,
        summary: summary.clone(),
    };
    reporter.borrow_mut().event(&Event::BlameVerdict {
        step: failed.to_string(),
        verdict: name.to_string(),
        summary,
    });
    (record, cands, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fails(set)` of a world where `bad` (all of them together) break the step.
    async fn run(n: usize, bad: &[usize], max: u32) -> (Verdict, u32) {
        let count = std::cell::Cell::new(0);
        let verdict = search(n, max, |set| {
            count.set(count.get() + 1);
            let fails = !bad.is_empty() && bad.iter().all(|b| set.contains(b));
            async move { Some(fails) }
        })
        .await;
        (verdict, count.get())
    }

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt")
            .block_on(f)
    }

    #[test]
    fn single_culprit_within_log2_plus_one_rounds() {
        for n in 1..=16usize {
            let bound = (n as f64).log2().ceil() as u32 + 1;
            for culprit in 0..n {
                let (verdict, rounds) = block(run(n, &[culprit], 20));
                assert_eq!(verdict, Verdict::Blamed(culprit), "n={n}");
                assert!(
                    rounds <= bound,
                    "n={n} culprit={culprit}: {rounds} rounds > {bound}"
                );
            }
        }
    }

    #[test]
    fn pairs_are_found() {
        for n in 2..=9usize {
            for a in 0..n {
                for b in a + 1..n {
                    let (verdict, _) = block(run(n, &[a, b], 20));
                    assert_eq!(verdict, Verdict::Pair(a, b), "n={n}");
                }
            }
        }
    }

    #[test]
    fn failing_without_candidates_blames_nobody() {
        let verdict = block(search(4, 10, |_| async { Some(true) }));
        assert!(matches!(verdict, Verdict::Infrastructure(_)), "{verdict:?}");
        let (verdict, _) = block(run(8, &[3], 2));
        assert!(matches!(verdict, Verdict::Undecided(_)), "{verdict:?}");
    }
}
