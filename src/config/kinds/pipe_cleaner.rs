//! `with:` of `pipe_cleaner` steps.

use serde::Deserialize;

use super::default_poll;
use crate::config::HumanDuration;

/// An upstream tree the pipe-cleaner kernel is made from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTree {
    /// `next`, `mainline`, `stable`: the pushed branch is `staging-<name>`.
    pub name: String,
    /// Clone URL, or a path relative to the plan file.
    pub url: String,
    pub branch: String,
}

/// Staging-only patches applied on top of the upstream tip (`git am`, in name order).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchesDir {
    /// The repo holding them (its staging revision).
    pub repo: String,
    /// Directory of `*.patch` / `*.mbox` files in that repo.
    pub dir: String,
}

/// Limits of the result comparison with the previous pipe-cleaner run of the same tree.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// The number of builds may not drop by more than this percentage.
    #[serde(default = "Thresholds::default_build_drop")]
    pub build_drop_percent: f64,
    /// The test pass rate may not drop by more than this many percentage points.
    #[serde(default = "Thresholds::default_pass_rate_drop")]
    pub pass_rate_drop_points: f64,
    /// The build pass rate may not drop by more than this many percentage points.
    #[serde(default = "Thresholds::default_pass_rate_drop")]
    pub build_pass_rate_drop_points: f64,
}

impl Thresholds {
    fn default_build_drop() -> f64 {
        10.0
    }
    fn default_pass_rate_drop() -> f64 {
        5.0
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            build_drop_percent: Self::default_build_drop(),
            pass_rate_drop_points: Self::default_pass_rate_drop(),
            build_pass_rate_drop_points: Self::default_pass_rate_drop(),
        }
    }
}

/// What a `pipe_cleaner` step does: push the test kernel, check its results, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipeCleanerPhase {
    /// Push the next tree's test kernel (before the pipeline restarts: its trigger polls
    /// once at start-up).
    Push,
    /// Wait for the results of the kernel the `push_step` pushed in the same run, compare.
    Check,
    /// Push, then check, in one step.
    #[default]
    Both,
    /// Push nothing: wait for the next checkout of a tree the deployed trigger watches
    /// (`with.watch`) made after the step starts, and compare its results with that tree's
    /// previous checkout. For production, whose trigger watches no test branch.
    Watch,
}

/// A tree and branch a deployed trigger polls (`data.kernel_revision.tree` / `.branch`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchedTree {
    /// The tree's name in the pipeline's trees config (`mainline`, `next`).
    pub tree: String,
    pub branch: String,
}

/// The pipeline's list of watched branches: a file of a repo's staging revision.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchedBy {
    /// The repo (a key of `repos`), e.g. `kernelci-pipeline`.
    pub repo: String,
    /// The trees file, e.g. `config/trees/kernelci.yaml` (`build_configs.*.branch`).
    pub file: String,
}

/// `pipe_cleaner`: push a test kernel, find its checkout, wait for its results, compare.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipeCleanerWith {
    #[serde(default)]
    pub phase: PipeCleanerPhase,
    /// `phase: check`: the `phase: push` step whose kernel of this run is checked.
    #[serde(default)]
    pub push_step: Option<String>,
    /// Where the test kernel is pushed (the kernelci/linux tree), URL or path.
    #[serde(default)]
    pub push_url: Option<String>,
    /// Upstream trees, used in turn (next → mainline → stable).
    #[serde(default)]
    pub trees: Vec<UpstreamTree>,
    #[serde(default)]
    pub patches: Option<PatchesDir>,
    /// Refuse to push a branch the pipeline's trigger does not watch.
    #[serde(default)]
    pub watched_by: Option<WatchedBy>,
    /// `data.kernel_revision.tree` of the checkout node.
    #[serde(default = "PipeCleanerWith::default_api_tree")]
    pub api_tree: String,
    /// How many `staging-<tree>-YYYYMMDD.N` tags to keep per tree.
    #[serde(default = "PipeCleanerWith::default_tag_keep")]
    pub tag_keep: usize,
    /// How long the pipeline may take to pick up the commit (its checkout node).
    #[serde(default = "PipeCleanerWith::default_checkout_timeout")]
    pub checkout_timeout: HumanDuration,
    /// Time between two polls.
    #[serde(default = "default_poll")]
    pub interval: HumanDuration,
    #[serde(default)]
    pub thresholds: Thresholds,
    /// `phase: watch`: the trees whose next checkout is checked (the first to appear).
    #[serde(default)]
    pub watch: Vec<WatchedTree>,
    /// `phase: watch`: how far back the previous checkout of the same tree is looked for.
    #[serde(default = "PipeCleanerWith::default_lookback")]
    pub lookback: HumanDuration,
}

impl PipeCleanerWith {
    fn default_api_tree() -> String {
        "kernelci".into()
    }
    fn default_tag_keep() -> usize {
        20
    }
    fn default_checkout_timeout() -> HumanDuration {
        HumanDuration::from_secs(3600)
    }
    fn default_lookback() -> HumanDuration {
        HumanDuration::from_secs(14 * 24 * 3600)
    }

    /// The settings that only pushing uses, and whether each is set.
    fn push_settings(&self) -> [(&'static str, bool); 4] {
        [
            ("push_url", self.push_url.is_some()),
            ("trees", !self.trees.is_empty()),
            ("patches", self.patches.is_some()),
            ("watched_by", self.watched_by.is_some()),
        ]
    }

    /// The settings each phase needs, and none that belong to the other phase.
    pub(super) fn check_phase(&self) -> Result<(), String> {
        if self.phase == PipeCleanerPhase::Watch {
            if let Some((field, _)) = self.push_settings().iter().find(|(_, set)| *set) {
                return Err(format!(
                    "with.{field}: a step with phase: watch pushes nothing; it watches with.watch"
                ));
            }
            if self.push_step.is_some() {
                return Err(
                    "with.push_step: only a step with phase: check names a push step".into(),
                );
            }
            if self.watch.is_empty() {
                return Err("a pipe_cleaner step with phase: watch needs at least one tree in with.watch ({ tree, branch } the deployed trigger polls)".into());
            }
            return Ok(());
        }
        if !self.watch.is_empty() {
            return Err("with.watch: only a step with phase: watch watches trees".into());
        }
        if self.phase == PipeCleanerPhase::Check {
            if let Some((field, _)) = self.push_settings().iter().find(|(_, set)| *set) {
                return Err(format!(
                    "with.{field}: belongs to the push step (phase: push), not to a check step"
                ));
            }
            return match &self.push_step {
                Some(_) => Ok(()),
                None => Err("a pipe_cleaner step with phase: check needs with.push_step (the phase: push step whose kernel it checks)".into()),
            };
        }
        if self.push_step.is_some() {
            return Err("with.push_step: only a step with phase: check names a push step".into());
        }
        if self.push_url.is_none() {
            return Err("a pipe_cleaner step that pushes needs with.push_url".into());
        }
        if self.trees.is_empty() {
            return Err(
                "a pipe_cleaner step that pushes needs at least one tree in with.trees".into(),
            );
        }
        Ok(())
    }
}
