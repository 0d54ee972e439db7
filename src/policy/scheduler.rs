//! The staging policy as a state machine over tokio's clock: when the next deploy starts, and
//! whether an event restarts the one running. `serve` drives it with `sleep_until(next_due())`.
//!
//! - An event after the cooldown: deploy after `settle`; more events in the settle window
//!   push it back, but never beyond one more `settle` from the first event.
//! - An event less than `cooldown` after the last deploy ended: deploy when the cooldown ends
//!   (several events collapse into one deploy).
//! - An event during a partial deploy restarts it, at most `max_restarts` times per deploy;
//!   a full cycle is never interrupted: the event waits for the next deploy.
//! - A full cycle when the last one is `full_cycle_interval` old, else partial (what the
//!   planner's `auto` cycle does); [`Scheduler::full_due`] tells when the next one is due
//!   without any event (never inside the cooldown).
//! - An explicit request (`@kcibot deploy`/`trigger`, the `schedule:` cron) names its cycle
//!   and starts at once when nothing runs; during a deploy it starts right after it.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Cycle, Policy};

/// What to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// A deploy is (now) scheduled for this instant.
    Scheduled(Instant),
    /// Stop the partial deploy running and start it again from the beginning.
    RestartRunning,
    /// A full cycle runs: the event waits for the next deploy.
    Queued,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    first_event: Instant,
    due: Instant,
    /// The cycle an explicit request asked for.
    forced: Option<Cycle>,
}

#[derive(Debug, Clone, Copy)]
struct Running {
    cycle: Cycle,
    restarts: u32,
    /// An event came that this deploy will not include.
    event_waiting: bool,
    /// An explicit request came that this deploy will not serve.
    request_waiting: Option<Cycle>,
}

/// The larger of two cycles (a full cycle does all a partial one does).
fn stronger(a: Option<Cycle>, b: Cycle) -> Cycle {
    match a {
        Some(Cycle::Full) => Cycle::Full,
        _ => b,
    }
}

/// What the next deploy waits for (see [`Scheduler::waiting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// Events came: the deploy waits until then for more pushes.
    pub settle_until: Option<Instant>,
    /// The last deploy ended less than `cooldown` ago: nothing starts before then.
    pub cooldown_until: Option<Instant>,
    /// An explicit request (`@kcibot`, `schedule:`) for this cycle is pending.
    pub requested: Option<Cycle>,
    /// Restarts a partial deploy may take (`max_restarts`).
    pub max_restarts: u32,
}

#[derive(Debug)]
pub struct Scheduler {
    settle: Duration,
    cooldown: Duration,
    full_interval: Duration,
    max_restarts: u32,
    last_finished: Option<Instant>,
    last_full: Option<Instant>,
    pending: Option<Pending>,
    running: Option<Running>,
}

impl Scheduler {
    pub fn new(
        policy: &Policy,
        last_finished: Option<Instant>,
        last_full: Option<Instant>,
    ) -> Scheduler {
        Scheduler {
            settle: policy.settle.0,
            cooldown: policy.cooldown.0,
            full_interval: policy.full_cycle_interval.0,
            max_restarts: policy.max_restarts,
            last_finished,
            last_full,
            pending: None,
            running: None,
        }
    }

    /// An event (a push, a PR update, a label) arrived at `now`.
    pub fn on_event(&mut self, now: Instant) -> Reaction {
        if let Some(run) = &mut self.running {
            if run.cycle == Cycle::Partial && run.restarts < self.max_restarts {
                run.restarts += 1;
                return Reaction::RestartRunning;
            }
            run.event_waiting = true;
            return Reaction::Queued;
        }
        if let Some(p) = self.pending.filter(|p| p.forced.is_some()) {
            // An explicit request already due stays due and includes this event.
            return Reaction::Scheduled(p.due);
        }
        let cooldown_end = self.last_finished.map(|t| t + self.cooldown);
        if let Some(end) = cooldown_end.filter(|end| now < *end) {
            // Within the cooldown: one deploy when it ends.
            let due = self.pending.map(|p| p.due.max(end)).unwrap_or(end);
            self.pending = Some(Pending {
                first_event: self.pending.map(|p| p.first_event).unwrap_or(now),
                due,
                forced: self.pending.and_then(|p| p.forced),
            });
            return Reaction::Scheduled(due);
        }
        let pending = match self.pending {
            None => Pending {
                first_event: now,
                due: now + self.settle,
                forced: None,
            },
            Some(p) => Pending {
                first_event: p.first_event,
                due: p
                    .due
                    .max((now + self.settle).min(p.first_event + 2 * self.settle)),
                forced: None,
            },
        };
        self.pending = Some(pending);
        Reaction::Scheduled(pending.due)
    }

    /// An explicit request for `cycle` at `now`: start at once when idle; restart a partial
    /// deploy for another partial one (within the restart budget); else right after the
    /// running deploy.
    pub fn request(&mut self, now: Instant, cycle: Cycle) -> Reaction {
        if let Some(run) = &mut self.running {
            if run.cycle == Cycle::Partial
                && cycle == Cycle::Partial
                && run.restarts < self.max_restarts
            {
                run.restarts += 1;
                return Reaction::RestartRunning;
            }
            run.request_waiting = Some(stronger(run.request_waiting, cycle));
            return Reaction::Queued;
        }
        let forced = stronger(self.pending.and_then(|p| p.forced), cycle);
        self.pending = Some(Pending {
            first_event: now,
            due: now,
            forced: Some(forced),
        });
        Reaction::Scheduled(now)
    }

    /// The cycle the next deploy will run, if it started at `at`.
    pub fn next_cycle(&self, at: Instant) -> Cycle {
        match self.pending.and_then(|p| p.forced) {
            Some(c) => c,
            None if at >= self.full_due() => Cycle::Full,
            None => Cycle::Partial,
        }
    }

    /// When the next deploy should start: the pending one, else the next full cycle.
    pub fn next_due(&self) -> Option<Instant> {
        match (self.running, self.pending) {
            (Some(_), _) => None,
            (None, Some(p)) => Some(p.due),
            (None, None) => Some(match self.last_finished {
                Some(end) => self.full_due().max(end + self.cooldown),
                None => self.full_due(),
            }),
        }
    }

    /// When a full cycle is due (now if there never was one).
    pub fn full_due(&self) -> Instant {
        self.last_full
            .map(|t| t + self.full_interval)
            .unwrap_or_else(Instant::now)
    }

    /// Start a deploy if one is due at `now`; returns its cycle.
    pub fn start_if_due(&mut self, now: Instant) -> Option<Cycle> {
        if self.running.is_some() {
            return None;
        }
        let due = self.next_due()?;
        if now < due {
            return None;
        }
        let cycle = self.next_cycle(now);
        self.pending = None;
        self.running = Some(Running {
            cycle,
            restarts: 0,
            event_waiting: false,
            request_waiting: None,
        });
        Some(cycle)
    }

    /// The running deploy ended at `now`. An event it did not include schedules the next one
    /// for the end of the cooldown.
    pub fn on_finished(&mut self, now: Instant) {
        let Some(run) = self.running.take() else {
            return;
        };
        self.last_finished = Some(now);
        if run.cycle == Cycle::Full {
            self.last_full = Some(now);
        }
        if let Some(cycle) = run.request_waiting {
            self.pending = Some(Pending {
                first_event: now,
                due: now,
                forced: Some(cycle),
            });
        } else if run.event_waiting {
            self.pending = Some(Pending {
                first_event: now,
                due: now + self.cooldown,
                forced: None,
            });
        }
    }

    /// The cycle running, if any.
    pub fn running(&self) -> Option<Cycle> {
        self.running.map(|r| r.cycle)
    }

    /// When the last full cycle ended (for `/status`).
    pub fn last_full(&self) -> Option<Instant> {
        self.last_full
    }

    /// What state says about deploys this scheduler did not run (a manual `apply`, `run`):
    /// the later of what it knew and what state says.
    pub fn observe(&mut self, last_finished: Option<Instant>, last_full: Option<Instant>) {
        self.last_finished = self.last_finished.max(last_finished);
        self.last_full = self.last_full.max(last_full);
    }

    /// What the next deploy waits for at `now`, for the status page's "why not yet".
    pub fn waiting(&self, now: Instant) -> Waiting {
        let cooldown_until = self
            .last_finished
            .map(|t| t + self.cooldown)
            .filter(|end| *end > now);
        let settle_until = self
            .pending
            .filter(|p| p.forced.is_none() && p.due > now && Some(p.due) != cooldown_until)
            .map(|p| p.due);
        Waiting {
            settle_until,
            cooldown_until,
            requested: self.pending.and_then(|p| p.forced),
            max_restarts: self.max_restarts,
        }
    }

    /// Restarts used by the running deploy.
    pub fn restarts(&self) -> Option<u32> {
        self.running.map(|r| r.restarts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const MIN: Duration = Duration::from_secs(60);

    fn scheduler() -> Scheduler {
        // settle 5m, cooldown 30m, full every 6h, one restart; a full cycle just ran.
        Scheduler::new(
            &Policy::default(),
            Some(Instant::now()),
            Some(Instant::now()),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn event_after_cooldown_deploys_after_settle_and_fixups_extend_it_once() {
        let mut s = scheduler();
        advance(40 * MIN).await;
        let t0 = Instant::now();
        assert_eq!(s.on_event(t0), Reaction::Scheduled(t0 + 5 * MIN));
        advance(4 * MIN).await;
        // A fixup 4 minutes in: 5 more minutes, within the one extra settle.
        assert_eq!(
            s.on_event(Instant::now()),
            Reaction::Scheduled(t0 + 9 * MIN)
        );
        advance(4 * MIN).await;
        // Another at 8 minutes: capped at first event + 2 settles.
        assert_eq!(
            s.on_event(Instant::now()),
            Reaction::Scheduled(t0 + 10 * MIN)
        );
        assert_eq!(s.start_if_due(Instant::now()), None);
        advance(2 * MIN).await;
        assert_eq!(s.start_if_due(Instant::now()), Some(Cycle::Partial));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_tells_settle_and_cooldown_apart() {
        let mut s = scheduler();
        let finished = Instant::now();
        advance(10 * MIN).await;
        // Within the cooldown: an event waits for its end, not for a settle.
        s.on_event(Instant::now());
        let w = s.waiting(Instant::now());
        assert_eq!(w.cooldown_until, Some(finished + 30 * MIN));
        assert_eq!(w.settle_until, None);
        assert_eq!(w.max_restarts, 1);
        advance(30 * MIN).await;
        let _ = s.start_if_due(Instant::now());
        s.on_finished(Instant::now());
        advance(40 * MIN).await;
        let t0 = Instant::now();
        s.on_event(t0);
        let w = s.waiting(t0);
        assert_eq!(
            (w.settle_until, w.cooldown_until),
            (Some(t0 + 5 * MIN), None)
        );
        s.request(t0, Cycle::Full);
        assert_eq!(s.waiting(t0).requested, Some(Cycle::Full));
    }

    #[tokio::test(start_paused = true)]
    async fn events_within_the_cooldown_collapse_into_one_deploy_when_it_ends() {
        let mut s = scheduler();
        let finished = Instant::now();
        advance(10 * MIN).await;
        assert_eq!(
            s.on_event(Instant::now()),
            Reaction::Scheduled(finished + 30 * MIN)
        );
        advance(10 * MIN).await;
        assert_eq!(
            s.on_event(Instant::now()),
            Reaction::Scheduled(finished + 30 * MIN)
        );
        advance(10 * MIN).await;
        assert_eq!(s.start_if_due(Instant::now()), Some(Cycle::Partial));
        assert_eq!(
            s.start_if_due(Instant::now()),
            None,
            "one deploy for both events"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_deploy_restarts_once_then_the_event_waits() {
        let mut s = scheduler();
        advance(40 * MIN).await;
        s.on_event(Instant::now());
        advance(5 * MIN).await;
        assert_eq!(s.start_if_due(Instant::now()), Some(Cycle::Partial));
        advance(MIN).await;
        assert_eq!(s.on_event(Instant::now()), Reaction::RestartRunning);
        assert_eq!(s.restarts(), Some(1));
        advance(MIN).await;
        assert_eq!(
            s.on_event(Instant::now()),
            Reaction::Queued,
            "restart budget spent"
        );
        advance(MIN).await;
        let end = Instant::now();
        s.on_finished(end);
        assert_eq!(
            s.next_due(),
            Some(end + 30 * MIN),
            "the waiting event deploys after the cooldown"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cycle_is_never_interrupted_and_comes_every_interval() {
        let mut s = scheduler();
        let last_full = Instant::now();
        assert_eq!(
            s.next_due(),
            Some(last_full + 6 * 60 * MIN),
            "no event: the next full cycle"
        );
        advance(6 * 60 * MIN).await;
        assert_eq!(s.start_if_due(Instant::now()), Some(Cycle::Full));
        advance(MIN).await;
        assert_eq!(s.on_event(Instant::now()), Reaction::Queued);
        advance(MIN).await;
        s.on_finished(Instant::now());
        // An event right after: partial (the full cycle just ran), after the cooldown.
        advance(31 * MIN).await;
        assert!(matches!(s.on_event(Instant::now()), Reaction::Scheduled(_)));
        advance(31 * MIN).await;
        assert_eq!(s.start_if_due(Instant::now()), Some(Cycle::Partial));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_start_at_once_or_right_after_the_running_deploy() {
        let mut s = scheduler();
        // Inside the cooldown and the settle: a maintainer's request does not wait.
        advance(MIN).await;
        let now = Instant::now();
        assert_eq!(s.request(now, Cycle::Partial), Reaction::Scheduled(now));
        // A plain event after it does not push it back.
        assert_eq!(s.on_event(now), Reaction::Scheduled(now));
        assert_eq!(s.start_if_due(now), Some(Cycle::Partial));
        // `trigger` during a partial deploy: a full cycle right after it.
        advance(MIN).await;
        assert_eq!(s.request(Instant::now(), Cycle::Full), Reaction::Queued);
        advance(MIN).await;
        let end = Instant::now();
        s.on_finished(end);
        assert_eq!(s.next_due(), Some(end));
        assert_eq!(s.start_if_due(end), Some(Cycle::Full));
        // `deploy` during a full cycle is never a restart.
        assert_eq!(s.request(end, Cycle::Partial), Reaction::Queued);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_for_a_partial_deploy_restarts_a_partial_one() {
        let mut s = scheduler();
        advance(40 * MIN).await;
        s.on_event(Instant::now());
        advance(5 * MIN).await;
        assert_eq!(s.start_if_due(Instant::now()), Some(Cycle::Partial));
        assert_eq!(
            s.request(Instant::now(), Cycle::Partial),
            Reaction::RestartRunning
        );
        assert_eq!(s.request(Instant::now(), Cycle::Partial), Reaction::Queued);
    }

    #[tokio::test(start_paused = true)]
    async fn an_overdue_full_cycle_still_waits_for_the_cooldown() {
        let long_ago = Instant::now();
        advance(7 * 60 * MIN).await;
        let end = Instant::now();
        let s = Scheduler::new(&Policy::default(), Some(end), Some(long_ago));
        assert_eq!(s.next_due(), Some(end + 30 * MIN));
        assert_eq!(s.next_cycle(end + 30 * MIN), Cycle::Full);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cycle_applied_by_hand_moves_the_next_one() {
        let mut s = scheduler();
        advance(5 * 60 * MIN).await;
        let by_hand = Instant::now();
        s.observe(Some(by_hand), Some(by_hand));
        advance(60 * MIN).await;
        assert_eq!(s.start_if_due(Instant::now()), None);
        assert_eq!(s.next_due(), Some(by_hand + 6 * 60 * MIN));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_deploy_is_a_full_cycle() {
        let mut s = Scheduler::new(&Policy::default(), None, None);
        assert_eq!(s.start_if_due(Instant::now()), Some(Cycle::Full));
    }
}
