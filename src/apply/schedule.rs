//! Which steps may start now: pure, given the step graph, what finished and what runs.

use crate::state::StepResult;

/// Steps (in plan order) and, for each, the indices of the steps it runs after.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    pub deps: Vec<Vec<usize>>,
    /// `approve: true`: asked before it starts.
    pub approve: Vec<bool>,
    /// `when_failed`: those of `deps` whose failure it waits for (it runs only if one failed).
    pub when_failed: Vec<Vec<usize>>,
    /// `run_after_failures`: those of `deps` (its `after`) whose failure does not skip it.
    pub tolerates: Vec<Vec<usize>>,
}

impl Graph {
    /// Whether a failure of `d` lets `i` run (`when_failed`, `run_after_failures`).
    fn watches(&self, i: usize, d: usize) -> bool {
        self.when_failed.get(i).is_some_and(|w| w.contains(&d))
            || self.tolerates.get(i).is_some_and(|t| t.contains(&d))
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Waiting,
    /// Its approver was asked; the answer is not in yet.
    Approving,
    /// Approved; starts when a slot is free.
    Approved,
    Running,
    Done(StepResult),
}

impl Status {
    fn open(self) -> bool {
        matches!(self, Status::Waiting | Status::Approved)
    }
}

/// Why a step is finished without having run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRun {
    /// This dependency failed (or was skipped).
    DependencyFailed(usize),
    /// Behind a cancelled step, or the run is stopping.
    Cancelled,
    /// A `when_failed` step whose watched steps all finished without failing.
    NotNeeded,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Start(usize),
    /// Ask its approver (takes no slot).
    Ask(usize),
    /// Finish it without running it.
    Drop(usize, NotRun),
}

impl NotRun {
    pub fn result(self) -> StepResult {
        match self {
            NotRun::DependencyFailed(_) => StepResult::Skipped,
            NotRun::Cancelled => StepResult::Cancelled,
            NotRun::NotNeeded => StepResult::NotNeeded,
        }
    }
}

/// The next decisions: steps behind a failure are dropped (transitively, in the order given),
/// then, unless the run is `stopping`, ready steps are started in plan order while `free`
/// slots last. When stopping, once nothing runs any more, every step not started is dropped as
/// cancelled.
pub fn next(graph: &Graph, status: &[Status], free: usize, stopping: bool) -> Vec<Decision> {
    let mut status = status.to_vec();
    let mut out = Vec::new();
    loop {
        let mut changed = false;
        for i in 0..status.len() {
            if !status[i].open() {
                continue;
            }
            // A failure a `when_failed` step waits for does not block it; a cancel does.
            let blocker = graph.deps[i].iter().copied().find(|&d| match status[d] {
                Status::Done(StepResult::Cancelled) => true,
                Status::Done(StepResult::Failed | StepResult::Skipped) => !graph.watches(i, d),
                _ => false,
            });
            if let Some(d) = blocker {
                let why = if status[d] == Status::Done(StepResult::Cancelled) {
                    NotRun::Cancelled
                } else {
                    NotRun::DependencyFailed(d)
                };
                status[i] = Status::Done(why.result());
                out.push(Decision::Drop(i, why));
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut free = free;
    let running = status.contains(&Status::Running);
    for i in 0..status.len() {
        if stopping && running {
            break;
        }
        if stopping {
            if status[i].open() || status[i] == Status::Approving {
                out.push(Decision::Drop(i, NotRun::Cancelled));
            }
            continue;
        }
        let ready = status[i].open()
            && graph.deps[i].iter().all(|&d| match status[d] {
                Status::Done(
                    StepResult::Success | StepResult::DoneBefore | StepResult::NotNeeded,
                ) => true,
                Status::Done(_) => graph.watches(i, d),
                _ => false,
            });
        if !ready {
            continue;
        }
        let watched = graph.when_failed.get(i).filter(|w| !w.is_empty());
        if let Some(watched) = watched
            && !watched
                .iter()
                .any(|&d| status[d] == Status::Done(StepResult::Failed))
        {
            out.push(Decision::Drop(i, NotRun::NotNeeded));
            continue;
        }
        if status[i] == Status::Waiting && graph.approve.get(i).copied().unwrap_or(false) {
            out.push(Decision::Ask(i));
        } else if free > 0 {
            free -= 1;
            out.push(Decision::Start(i));
        }
    }
    out
}

/// Whether the run is over: nothing runs, nobody is being asked, nothing can start.
pub fn settled(status: &[Status]) -> bool {
    !status
        .iter()
        .any(|s| matches!(s, Status::Running | Status::Approving))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;
    use Status::*;

    /// a; b needs a; c needs b; d independent; e approve, needs a.
    fn graph() -> Graph {
        Graph {
            deps: vec![vec![], vec![0], vec![1], vec![], vec![0]],
            approve: vec![false, false, false, false, true],
            when_failed: Vec::new(),
            tolerates: Vec::new(),
        }
    }

    #[test]
    fn ready_steps_start_in_plan_order_up_to_the_free_slots() {
        let g = graph();
        let s = [Waiting; 5];
        assert_eq!(next(&g, &s, 10, false), [Start(0), Start(3)]);
        assert_eq!(next(&g, &s, 1, false), [Start(0)]);
        assert_eq!(next(&g, &s, 0, false), []);
    }

    #[test]
    fn approval_is_asked_without_a_slot_and_the_approved_step_starts_later() {
        let g = graph();
        let ok = Done(StepResult::Success);
        let s = [ok, Running, Waiting, Running, Waiting];
        assert_eq!(next(&g, &s, 0, false), [Ask(4)]);
        let s = [ok, Running, Waiting, Running, Approving];
        assert_eq!(next(&g, &s, 1, false), []);
        let s = [ok, Running, Waiting, Running, Approved];
        assert_eq!(next(&g, &s, 1, false), [Start(4)]);
    }

    #[test]
    fn dependents_of_a_failure_are_skipped_transitively_and_others_go_on() {
        let g = graph();
        let s = [Done(StepResult::Failed), Waiting, Waiting, Waiting, Waiting];
        assert_eq!(
            next(&g, &s, 10, false),
            [
                Drop(1, NotRun::DependencyFailed(0)),
                Drop(2, NotRun::DependencyFailed(1)),
                Drop(4, NotRun::DependencyFailed(0)),
                Start(3),
            ]
        );
    }

    #[test]
    fn behind_a_cancelled_step_steps_are_cancelled_not_skipped() {
        let g = graph();
        let s = [
            Done(StepResult::Cancelled),
            Waiting,
            Waiting,
            Running,
            Waiting,
        ];
        let d = next(&g, &s, 10, false);
        assert!(d.contains(&Drop(1, NotRun::Cancelled)), "{d:?}");
        assert!(d.contains(&Drop(2, NotRun::Cancelled)), "{d:?}");
    }

    #[test]
    fn stopping_starts_nothing_and_drops_what_did_not_start_once_nothing_runs() {
        let g = graph();
        let ok = Done(StepResult::Success);
        let s = [Running, Waiting, Waiting, ok, Approving];
        assert_eq!(next(&g, &s, 10, true), []);
        let after = [ok, Waiting, Waiting, ok, Approving];
        assert_eq!(
            next(&g, &after, 10, true),
            [
                Drop(1, NotRun::Cancelled),
                Drop(2, NotRun::Cancelled),
                Drop(4, NotRun::Cancelled)
            ]
        );
        assert!(!settled(&s));
        assert!(settled(&[Done(StepResult::Success), Waiting]));
    }

    /// a; b runs when a fails; c needs b.
    fn when_failed_graph() -> Graph {
        Graph {
            deps: vec![vec![], vec![0], vec![1]],
            approve: vec![false; 3],
            when_failed: vec![vec![], vec![0], vec![]],
            tolerates: Vec::new(),
        }
    }

    #[test]
    fn a_step_that_runs_after_failures_runs_once_they_finished() {
        // a, b; c after both, tolerating them; d needs c.
        let g = Graph {
            deps: vec![vec![], vec![], vec![0, 1], vec![2]],
            approve: vec![false; 4],
            when_failed: Vec::new(),
            tolerates: vec![vec![], vec![], vec![0, 1], vec![]],
        };
        let failed = Done(StepResult::Failed);
        assert_eq!(
            next(&g, &[failed, Running, Waiting, Waiting], 10, false),
            []
        );
        let ok = Done(StepResult::Success);
        assert_eq!(
            next(&g, &[failed, ok, Waiting, Waiting], 10, false),
            [Start(2)]
        );
        let skipped = Done(StepResult::Skipped);
        assert_eq!(
            next(&g, &[skipped, ok, Waiting, Waiting], 10, false),
            [Start(2)]
        );
    }

    #[test]
    fn a_when_failed_step_runs_only_after_its_step_failed() {
        let g = when_failed_graph();
        assert_eq!(next(&g, &[Running, Waiting, Waiting], 10, false), []);
        let failed = [Done(StepResult::Failed), Waiting, Waiting];
        assert_eq!(next(&g, &failed, 10, false), [Start(1)]);
        let ok = [Done(StepResult::Success), Waiting, Waiting];
        assert_eq!(
            next(&g, &ok, 10, false),
            [Drop(1, NotRun::NotNeeded)],
            "not needed when it succeeded"
        );
        let not_needed = [
            Done(StepResult::Success),
            Done(StepResult::NotNeeded),
            Waiting,
        ];
        assert_eq!(next(&g, &not_needed, 10, false), [Start(2)]);
        let cancelled = [Done(StepResult::Cancelled), Waiting, Waiting];
        assert!(next(&g, &cancelled, 10, false).contains(&Drop(1, NotRun::Cancelled)));
    }

    #[test]
    fn done_before_counts_as_success_for_dependents() {
        let g = graph();
        let s = [
            Done(StepResult::DoneBefore),
            Waiting,
            Waiting,
            Done(StepResult::DoneBefore),
            Waiting,
        ];
        assert_eq!(next(&g, &s, 10, false), [Start(1), Ask(4)]);
    }
}
