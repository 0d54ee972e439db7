//! The computed plan: what would run and why. Serialized as `--json` and by `-out`.

use indexmap::IndexMap;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::Cycle;
pub use crate::policy::cycle::CycleDecision;

/// Version of the plan JSON document.
pub const PLAN_FORMAT_VERSION: &str = "1";

/// Why a pending change is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionReason {
    /// The author is not in `pending.trusted`.
    Untrusted,
    /// Listed in `pending.skip`.
    SkipList,
    /// Carries the skip label (github).
    SkipLabel,
    /// A draft PR (github).
    Draft,
    /// Head commit older than `pending.max_age`.
    Stale,
    /// Does not merge with what was merged before it.
    Conflict,
    /// Nothing beyond the base (or the changes merged before it).
    Empty,
    /// Found to break a deploy; left out until its head moves.
    Blamed,
    /// Asks to be merged into another branch (and lacks the `staging:<branch>` label).
    OtherBase,
    /// A check of `pending.require_checks` failed or is missing on the head.
    Checks,
    /// A check of `pending.require_checks` still runs on the head: left out for now, planned
    /// again when it finishes.
    WaitingForChecks,
    /// Touches only `ci_covers` components and its checks passed: not deployed to staging.
    CoveredByCi,
    /// `rollback`: the repo deploys the revision an earlier run recorded.
    Rollback,
}

impl ExclusionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExclusionReason::Untrusted => "untrusted",
            ExclusionReason::SkipList => "skip_list",
            ExclusionReason::SkipLabel => "skip_label",
            ExclusionReason::Draft => "draft",
            ExclusionReason::Stale => "stale",
            ExclusionReason::Conflict => "conflict",
            ExclusionReason::Empty => "empty",
            ExclusionReason::Blamed => "blamed",
            ExclusionReason::OtherBase => "other_base",
            ExclusionReason::Checks => "checks",
            ExclusionReason::WaitingForChecks => "waiting_for_checks",
            ExclusionReason::CoveredByCi => "covered_by_ci",
            ExclusionReason::Rollback => "rollback",
        }
    }

    /// How the plan shows it: `as_str`, but waiting in words (it is not a verdict).
    pub fn label(self) -> &'static str {
        match self {
            ExclusionReason::WaitingForChecks => "waiting for checks",
            other => other.as_str(),
        }
    }
}

/// A change merged into the staging revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Included {
    pub id: String,
    pub head: String,
    pub author: String,
    pub title: String,
    /// Paths this change touches (against its fork point from the base).
    pub paths: Vec<String>,
}

/// A change left out, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    pub id: String,
    pub head: String,
    pub author: String,
    pub reason: ExclusionReason,
    /// The reason in words.
    pub detail: String,
    /// For `conflict`: the conflicting paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// What the changed paths are compared against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffBasis {
    /// The deployed revision recorded in state.
    Deployed,
    /// Nothing deployed yet: every component is affected.
    Initial,
    /// State names a deployed revision the cache does not have: every component is affected.
    UnknownDeployed,
}

/// A path that differs between the deployed and staging revisions, and who changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedPath {
    pub path: String,
    /// Ids of included changes touching it; `base` when the base branch moved;
    /// `removed` when a change deployed before is no longer included; `rollback` in a
    /// rollback.
    pub changes: Vec<String>,
}

/// One repo in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoPlan {
    pub base_branch: String,
    /// Base SHA.
    pub base: String,
    /// The staging revision: base + included changes.
    pub staging: String,
    /// The deployed revision from state, if any.
    pub deployed: Option<String>,
    /// The staging branch on the remote when planning (`git_push` refuses if it moved).
    #[serde(default)]
    pub remote_staging: Option<String>,
    pub diff_basis: DiffBasis,
    pub included: Vec<Included>,
    pub excluded: Vec<Excluded>,
    /// Paths that differ between deployed and staging revisions.
    pub changed_paths: Vec<String>,
    /// The same paths, each with the changes it is attributed to.
    pub attribution: Vec<ChangedPath>,
}

/// One link of a reason chain: change → path → pattern → component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathReason {
    pub change: String,
    pub path: String,
    pub pattern: String,
}

/// Whether a component is affected, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentPlan {
    pub repo: String,
    pub affected: bool,
    /// Affected because nothing is deployed yet (no path reasons then).
    pub initial: bool,
    pub because: Vec<PathReason>,
}

/// Run or skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Run,
    Skip,
}

/// Why a step runs or is skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StepReason {
    /// An `on` component is affected by these paths.
    Component {
        component: String,
        change: String,
        path: String,
        pattern: String,
    },
    /// An `on` component is affected because nothing is deployed yet.
    Initial { component: String },
    /// A step in `needs` is triggered.
    Needs { step: String },
    /// A step of `when_failed` runs: this one runs if it fails.
    WhenFailed { step: String },
    /// `always: true`: runs in every cycle it belongs to.
    Always { cycle: Cycle },
    /// What the step made is no longer as recorded (`plan -refresh`).
    Drift { detail: String },
    /// Skipped: nothing it depends on changed.
    NotTriggered,
    /// Skipped: triggered, but it runs only in full cycles and this one is partial.
    FullCycleOnly,
    /// Skipped: triggered, but it finished with the same inputs in that run (an interrupted
    /// or partly failed run, resumed), and nothing it made drifted.
    DoneBefore { run_id: String },
    /// `-replace`: runs although nothing it depends on changed.
    Replace,
    /// Skipped: triggered, but `-target` leaves it out (it is not a target, nor needed by
    /// one). The deployed revisions of its repos stay where they are.
    Untargeted,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One step in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepPlan {
    pub name: String,
    pub kind: crate::config::StepKind,
    pub cycle: Cycle,
    pub action: Action,
    pub needs: Vec<String>,
    /// Ordering only: runs after these when they run too.
    #[serde(default)]
    pub after: Vec<String>,
    /// Runs only if one of these failed in the run (`when_failed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when_failed: Vec<String>,
    /// Ordering the plan file does not write: the step uses a repo's staging revision, so it
    /// runs after the `git_push` steps that publish it, when they run too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_push: Vec<PublishedBy>,
    pub because: Vec<StepReason>,
    /// What the step will do: its settings resolved, secrets masked.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub params: super::params::Params,
    /// The run of the step's last success, whose settings `changes` compares with; `None`
    /// when there is none to compare with (a new step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared_with: Option<String>,
    /// Settings that differ from that run's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<super::params::ParamChange>,
}

impl StepPlan {
    /// Triggered, but not repeated: it finished before with the same inputs.
    pub fn is_done_before(&self) -> bool {
        matches!(self.because.first(), Some(StepReason::DoneBefore { .. }))
    }

    /// Runs even when it finished before with the same inputs: what it made drifted, or
    /// `-replace` names it.
    pub fn is_forced(&self) -> bool {
        self.because
            .iter()
            .any(|r| matches!(r, StepReason::Drift { .. } | StepReason::Replace))
    }

    /// Triggered, but left out by `-target`.
    pub fn is_untargeted(&self) -> bool {
        self.because.first() == Some(&StepReason::Untargeted)
    }
}

/// A `git_push` step that publishes the staging revision of a repo a step uses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublishedBy {
    /// The `git_push` step.
    pub step: String,
    /// The repo it publishes.
    pub repo: String,
}

/// Every input the plan was computed from; `apply` refuses a plan whose inputs moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// SHA-256 of the plan file's text.
    pub plan_file: String,
    pub state_serial: u64,
    pub state_lineage: Option<String>,
    pub repos: IndexMap<String, RepoFingerprint>,
    /// SHA-256 over all of the above.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoFingerprint {
    pub base: String,
    /// Head SHA of every pending change seen, included or not, by id.
    pub heads: IndexMap<String, String>,
    pub staging: String,
}

/// Step counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub run: usize,
    pub skip: usize,
    /// Triggered steps held back because the cycle is partial.
    pub held_for_full: usize,
    /// Triggered steps that finished before with the same inputs: not repeated.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub done_before: usize,
    /// Triggered steps that `-target` leaves out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub untargeted: usize,
    pub included: usize,
    pub excluded: usize,
}

/// The computed plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: String,
    /// The plan file's `name`.
    pub name: String,
    /// The plan file, as an absolute path (`apply PLANFILE` loads it).
    #[serde(default)]
    pub plan_file: String,
    /// The cache repositories' directory (they hold the staging revisions).
    #[serde(default)]
    pub cache_dir: String,
    /// "now" as used for planning.
    pub planned_at: Timestamp,
    pub cycle: Cycle,
    pub cycle_decision: CycleDecision,
    pub repos: IndexMap<String, RepoPlan>,
    pub components: IndexMap<String, ComponentPlan>,
    /// Steps in the order apply would run them.
    pub steps: Vec<StepPlan>,
    pub summary: Summary,
    /// With `plan --diff`: the changed files each affected component matched, as diffs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_diffs: Vec<FileDiff>,
    /// Steps state has records of that the plan file no longer has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_steps: Vec<String>,
    /// `-target`, `-replace` and rollback, as asked (recorded with the run).
    #[serde(flatten)]
    pub scope: crate::state::RunScope,
    /// What the plan asks to be read before applying it (`-target in effect: this plan is
    /// partial`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub fingerprint: Fingerprint,
    /// A saved plan's seal: SHA-256 over the canonical JSON of everything above, so an
    /// edited saved plan (a step switched to run, a partial cycle made full) is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_digest: Option<String>,
}

impl Plan {
    /// SHA-256 over the plan's canonical JSON without its seal.
    pub fn compute_content_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut unsealed = self.clone();
        unsealed.content_digest = None;
        let bytes = serde_json::to_vec(&unsealed).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    /// Seal the plan for saving with `-out`.
    pub fn seal(&mut self) {
        self.content_digest = Some(self.compute_content_digest());
    }

    /// Whether the seal matches the content (`None`: no seal at all).
    pub fn seal_holds(&self) -> Option<bool> {
        self.content_digest
            .as_ref()
            .map(|d| *d == self.compute_content_digest())
    }

    /// True when at least one step would run.
    pub fn has_changes(&self) -> bool {
        self.summary.run > 0
    }

    /// Nothing to run and every repo's deployed revision is its staging revision: a deploy
    /// would change nothing.
    pub fn is_deployed(&self) -> bool {
        !self.has_changes()
            && self
                .repos
                .values()
                .all(|r| r.deployed.as_deref() == Some(r.staging.as_str()))
    }
}

/// A changed file that an affected component matched, as a diff from the deployed revision
/// to the staging revision (`plan --diff`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDiff {
    pub component: String,
    pub repo: String,
    pub path: String,
    /// The changes the path is attributed to (or `base`, `removed`).
    pub changes: Vec<String>,
    /// `modified`, `added`, `deleted` or `binary`.
    pub status: FileStatus,
    pub hunks: Vec<crate::support::diff::Hunk>,
    /// Lines past the limit (`--diff-lines`), not shown.
    #[serde(default)]
    pub omitted_lines: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Modified,
    Added,
    Deleted,
    Binary,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Modified => "modified",
            FileStatus::Added => "added",
            FileStatus::Deleted => "deleted",
            FileStatus::Binary => "binary",
        }
    }
}
