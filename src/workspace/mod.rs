//! The one path from a plan file on disk to a [`Plan`]: load the plan file and the state,
//! fetch the forges, stage the change sets, plan. Every verb (plan, apply, run, serve, blame's
//! replanning, demo) gets its inputs here, so a fix reaches all of them.
//!
//! ```text
//! Workspace::load ─▶ fetch (forge snapshot) ─▶ stage (gitops: merge, diff) ─▶ planner::plan
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use jiff::Timestamp;
use miette::{IntoDiagnostic, Result, WrapErr};

mod preview;

pub use preview::Preview;

use crate::config::Config;
use crate::forge::ForgeSnapshot;
use crate::gitops::stage::{StageRequest, StagedRepo};
use crate::planner::{self, CycleRequest, Plan, PlanInputs};
use crate::state::{Backend, RunRevision, RunScope, State};

/// A loaded plan file and its state.
#[derive(Debug)]
pub struct Workspace {
    pub config: Config,
    pub backend: Backend,
    /// The state as last read (`None`: nothing applied yet).
    pub state: Option<State>,
    /// Where fetched repos are cached (absolute).
    pub cache_dir: PathBuf,
    /// The plan file's absolute path, as saved plans name it.
    pub plan_file: String,
}

/// What to plan for.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    pub cycle: CycleRequest,
    /// "Now" for the policy and `max_age` (`None`: the clock).
    pub now: Option<Timestamp>,
    /// Steps whose recorded outputs drifted (from `plan -refresh`).
    pub drift: BTreeMap<String, String>,
    /// `-target`, `-replace`, rollback.
    pub scope: RunScope,
    /// Rollback: per repo, the revision to deploy instead of staging its pending changes.
    pub pins: BTreeMap<String, RunRevision>,
}

impl Workspace {
    /// Load the plan file and read its state; `cache_dir` defaults to `cache/<name>/` beside
    /// the state file.
    pub fn load(file: &Path, cache_dir: Option<&Path>) -> Result<Workspace> {
        let config = Config::load(file)?;
        let backend = Backend::open(&config)?;
        let state = backend.read()?;
        let cache_dir = cache_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| crate::forge::default_cache_dir(&config));
        let cache_dir = std::path::absolute(&cache_dir).unwrap_or(cache_dir);
        let plan_file = std::fs::canonicalize(&config.path)
            .unwrap_or_else(|_| config.path.clone())
            .display()
            .to_string();
        Ok(Workspace {
            config,
            backend,
            state,
            cache_dir,
            plan_file,
        })
    }

    /// Read the state again (after an apply, or under the lock before applying).
    pub fn reload_state(&mut self) -> Result<()> {
        self.state = self.backend.read()?;
        Ok(())
    }

    /// Fetch every repo of the plan file and list its pending changes.
    pub fn fetch(&self) -> Result<ForgeSnapshot> {
        tracing::debug!(plan = %self.config.file.name, "fetching the forges");
        Ok(crate::forge::snapshot(&self.config, &self.cache_dir)?)
    }

    /// Merge each repo's screened change set into a staging revision and diff it against the
    /// deployed revision.
    /// A rollback's pinned repos are not merged: their staging revision is the pinned one.
    pub fn stage(
        &self,
        snapshot: &ForgeSnapshot,
        now: Timestamp,
        plan: &PlanRequest,
    ) -> Result<IndexMap<String, StagedRepo>> {
        let mut staged = IndexMap::new();
        for name in self.config.file.repos.keys() {
            let Some(snap) = snapshot.repos.get(name) else {
                continue;
            };
            let screened = planner::scope::screen(
                &self.config,
                name,
                snap,
                self.state.as_ref(),
                now,
                &plan.pins,
                plan.scope.rollback_of.as_deref(),
            );
            let deployed = self
                .state
                .as_ref()
                .and_then(|s| s.repos.get(name))
                .map(|r| r.deployed.as_str());
            let pin = plan.pins.get(name).map(|p| p.staging.as_str());
            if let Some(pin) = pin {
                check_pinned(name, &snap.cache, pin, plan)?;
            }
            let request = StageRequest {
                cache: snap.cache.clone(),
                base: pin.unwrap_or(&snap.base),
                base_branch: &snap.base_branch,
                changes: planner::to_merge(&screened),
                deployed,
            };
            let repo = crate::gitops::stage::stage(&request)
                .map_err(|e| miette::miette!("repo `{name}`: {e}"))?;
            staged.insert(name.clone(), repo);
        }
        Ok(staged)
    }

    /// Stage and plan from a snapshot already fetched.
    pub fn plan(&self, snapshot: &ForgeSnapshot, request: &PlanRequest) -> Result<Plan> {
        let now = request.now.unwrap_or_else(Timestamp::now);
        let staged = self.stage(snapshot, now, request)?;
        let plan = planner::plan(&PlanInputs {
            config: &self.config,
            snapshot,
            staged: &staged,
            state: self.state.as_ref(),
            drift: &request.drift,
            cycle: request.cycle,
            now,
            plan_file: &self.plan_file,
            scope: &request.scope,
            pins: &request.pins,
        })
        .wrap_err_with(|| format!("cannot plan {}", self.plan_file))?;
        Ok(plan)
    }

    /// Read each repo's staging branch on its remote again (a deploy's pushes, or blame's
    /// rounds, moved it since the fetch): pushes lease on what the remote has now.
    pub fn refresh_remote_staging(&self, snapshot: &mut ForgeSnapshot) {
        for (name, repo_cfg) in &self.config.file.repos {
            if let Some(snap) = snapshot.repos.get_mut(name) {
                let url = self.config.repo_url(repo_cfg);
                match crate::gitops::remote::branch_head(
                    &url,
                    &repo_cfg.staging_branch,
                    &self.config.file.timeouts,
                ) {
                    Ok(head) => snap.remote_staging = head,
                    Err(e) => tracing::warn!("repo `{name}`: cannot read the staging branch: {e}"),
                }
            }
        }
    }

    /// Every file of each repo's staging revision (its base when nothing is pending) against
    /// the plan's components and `ignore:` globs (`coverage`, `validate --strict`).
    /// `offline`: from the cache as last fetched, without the network.
    pub fn coverage(
        &self,
        offline: bool,
        now: Timestamp,
    ) -> Result<Vec<planner::coverage::RepoCoverage>> {
        let snapshot = if offline {
            crate::forge::cached_snapshot(&self.config, &self.cache_dir)?
        } else {
            self.fetch()?
        };
        let staged = self.stage(&snapshot, now, &PlanRequest::default())?;
        let mut out = Vec::new();
        for (name, repo) in &staged {
            let Some(snap) = snapshot.repos.get(name) else {
                continue;
            };
            let git = git2::Repository::open_bare(&snap.cache)
                .into_diagnostic()
                .wrap_err_with(|| format!("repo `{name}`: cannot open {}", snap.cache.display()))?;
            let files = crate::gitops::tree_paths(&git, &repo.staging)
                .into_diagnostic()
                .wrap_err_with(|| {
                    format!("repo `{name}`: cannot list the files of {}", repo.staging)
                })?;
            let merged = repo
                .merges
                .iter()
                .filter(|(_, m)| matches!(m, crate::gitops::stage::Merge::Merged { .. }))
                .count();
            out.push(planner::coverage::repo_coverage(
                &self.config,
                name,
                &repo.staging,
                merged,
                &files,
            ));
        }
        Ok(out)
    }

    /// `plan --diff`: for each affected component, the diff of every changed file it matched,
    /// from the deployed revision to the staging revision, at most `max_lines` lines each.
    pub fn file_diffs(&self, snapshot: &ForgeSnapshot, plan: &mut Plan, max_lines: usize) {
        use crate::planner::{FileDiff, FileStatus};
        let mut diffs = Vec::new();
        for (name, component) in &plan.components {
            let (Some(repo), Some(snap)) = (
                plan.repos.get(&component.repo),
                snapshot.repos.get(&component.repo),
            ) else {
                continue;
            };
            let mut paths: Vec<&str> = component.because.iter().map(|r| r.path.as_str()).collect();
            paths.sort_unstable();
            paths.dedup();
            for path in paths {
                let read = |sha: Option<&str>| {
                    sha.and_then(|sha| {
                        crate::gitops::files::file_at(&snap.cache, sha, path)
                            .ok()
                            .flatten()
                    })
                };
                let old = read(repo.deployed.as_deref());
                let new = read(Some(&repo.staging));
                let status = match (&old, &new) {
                    (None, Some(_)) => FileStatus::Added,
                    (Some(_), None) => FileStatus::Deleted,
                    _ => FileStatus::Modified,
                };
                let text = |b: &Option<Vec<u8>>| {
                    b.as_deref()
                        .map(|b| std::str::from_utf8(b).map(str::to_string))
                };
                let (hunks, omitted_lines, status) = match (text(&old), text(&new)) {
                    (Some(Err(_)), _) | (_, Some(Err(_))) => (Vec::new(), 0, FileStatus::Binary),
                    (o, n) => {
                        let o = o.and_then(Result::ok).unwrap_or_default();
                        let n = n.and_then(Result::ok).unwrap_or_default();
                        let (h, om) = crate::support::diff::unified(&o, &n, max_lines);
                        (h, om, status)
                    }
                };
                let changes = repo
                    .attribution
                    .iter()
                    .find(|a| a.path == path)
                    .map(|a| a.changes.clone())
                    .unwrap_or_default();
                diffs.push(FileDiff {
                    component: name.clone(),
                    repo: component.repo.clone(),
                    path: path.to_string(),
                    changes,
                    status,
                    hunks,
                    omitted_lines,
                });
            }
        }
        plan.file_diffs = diffs;
    }

    /// What a rollback to `run_id` (default: [`planner::scope::rollback_run`]'s choice)
    /// plans: that run's revisions pinned for the repos the plan file still has, and the run.
    pub fn rollback_request(
        &self,
        run_id: Option<&str>,
        cycle: CycleRequest,
    ) -> Result<(PlanRequest, crate::state::RunRecord)> {
        let Some(state) = &self.state else {
            miette::bail!(
                "{}: nothing deployed yet: no run to roll back to",
                self.plan_file
            );
        };
        let run = planner::scope::rollback_run(state, run_id)
            .map_err(|e| miette::miette!("cannot roll back {}: {e}", self.plan_file))?;
        let pins = run
            .revisions
            .iter()
            .filter(|(repo, _)| self.config.file.repos.contains_key(*repo))
            .map(|(repo, rev)| (repo.clone(), rev.clone()))
            .collect();
        let request = PlanRequest {
            cycle,
            scope: RunScope {
                rollback_of: Some(run.id.clone()),
                ..Default::default()
            },
            pins,
            ..Default::default()
        };
        Ok((request, run.clone()))
    }

    /// Fetch, stage and plan: what `plan`, `apply -f`, `run` and `serve` do once per deploy.
    pub fn fetch_and_plan(&self, request: &PlanRequest) -> Result<(ForgeSnapshot, Plan)> {
        let snapshot = self.fetch()?;
        let plan = self.plan(&snapshot, request)?;
        Ok((snapshot, plan))
    }
}

/// A rollback's revision must still be in the cache (staging merges are made there).
fn check_pinned(repo: &str, cache: &Path, sha: &str, plan: &PlanRequest) -> Result<()> {
    let found = git2::Repository::open_bare(cache)
        .and_then(|git| {
            let oid = git2::Oid::from_str(sha)?;
            git.find_commit(oid).map(|_| ())
        })
        .is_ok();
    if !found {
        miette::bail!(
            help = "the cache was moved or cleaned since that run; pick a later run (kcideploy state history)",
            "repo `{repo}`: revision {sha}, which run {} deployed, is not in the cache {}",
            plan.scope.rollback_of.as_deref().unwrap_or("?"),
            cache.display()
        );
    }
    Ok(())
}
