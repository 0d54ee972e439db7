//! Why steps stop before they finish, and where a stop comes from: signals to kcideploy, the
//! caller (a server shutting down, a newer push), a step's own time limit.

use tokio::sync::watch;

use super::process::Cancel;

/// Why a step is stopped or never started. Ordered: a stronger reason replaces a weaker one,
/// never the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CancelReason {
    /// A step it depends on failed: it never starts.
    DependencyFailed,
    /// The attempt ran past its time limit: SIGTERM, SIGKILL after the grace.
    Timeout,
    /// SIGINT or SIGTERM to kcideploy: start nothing new, SIGTERM running steps.
    UserInterrupt,
    /// The caller stops the run (the server shutting down, a newer push), or state cannot be
    /// written any more: as an interrupt.
    Shutdown,
    /// Stop now (a second signal, `Cancel::Kill`): SIGKILL without waiting for the grace.
    Kill,
}

impl CancelReason {
    /// What a running process of the step is told.
    pub fn level(self) -> Cancel {
        match self {
            CancelReason::DependencyFailed => Cancel::None,
            CancelReason::Timeout | CancelReason::UserInterrupt | CancelReason::Shutdown => {
                Cancel::Graceful
            }
            CancelReason::Kill => Cancel::Kill,
        }
    }
}

/// A stop request: the reason, and who asked (`SIGINT`, `SIGTERM`, `the caller`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub reason: CancelReason,
    pub by: &'static str,
}

/// The receiving half: every step of a run (and of a bisection round) watches one.
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<Option<Stop>>);

/// The sending half; requests only escalate.
#[derive(Debug)]
pub struct StopSource(watch::Sender<Option<Stop>>);

impl StopSource {
    pub fn new() -> (StopSource, StopSignal) {
        let (tx, rx) = watch::channel(None);
        (StopSource(tx), StopSignal(rx))
    }

    /// Ask to stop; `false` when an equal or stronger request was made before.
    pub fn stop(&self, reason: CancelReason, by: &'static str) -> bool {
        self.0.send_if_modified(|now| match now {
            Some(s) if s.reason >= reason => false,
            _ => {
                *now = Some(Stop { reason, by });
                true
            }
        })
    }

    pub fn signal(&self) -> StopSignal {
        StopSignal(self.0.subscribe())
    }
}

impl StopSignal {
    /// A signal nobody can send.
    pub fn never() -> StopSignal {
        StopSignal(watch::channel(None).1)
    }

    /// The strongest request so far.
    pub fn current(&self) -> Option<Stop> {
        *self.0.borrow()
    }

    /// Wait for the next (stronger) request; forever when nobody can send one any more.
    pub async fn changed(&mut self) -> Stop {
        loop {
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if let Some(stop) = *self.0.borrow_and_update() {
                return stop;
            }
        }
    }
}

/// Listens to SIGINT/SIGTERM and the caller's [`Cancel`] channel while it lives, and turns
/// them into stop requests: the first signal interrupts, a second one kills.
pub struct Listener {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start listening (on the current runtime). With neither signals nor a caller's channel the
/// signal never fires.
pub fn listen(
    handle_signals: bool,
    outside: Option<watch::Receiver<Cancel>>,
) -> Result<(StopSignal, Listener), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let (source, stop) = StopSource::new();
    let mut signals = if handle_signals {
        let int =
            signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
        let term =
            signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
        Some((int, term))
    } else {
        None
    };
    let mut outside = outside;
    // Cancelled before it started (the server stopping while this run planned).
    if let Some(level) = outside.as_ref().map(|rx| *rx.borrow()) {
        from_caller(&source, level);
    }
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(name) = next_signal(&mut signals) => {
                    let reason = match source.signal().current() {
                        Some(s) if s.reason >= CancelReason::UserInterrupt => CancelReason::Kill,
                        _ => CancelReason::UserInterrupt,
                    };
                    source.stop(reason, name);
                }
                level = caller(&mut outside) => from_caller(&source, level),
            }
        }
    });
    Ok((stop, Listener { task }))
}

fn from_caller(source: &StopSource, level: Cancel) {
    match level {
        Cancel::None => false,
        Cancel::Graceful => source.stop(CancelReason::Shutdown, "the caller"),
        Cancel::Kill => source.stop(CancelReason::Kill, "the caller"),
    };
}

async fn next_signal(
    signals: &mut Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
) -> Option<&'static str> {
    match signals {
        Some((int, term)) => tokio::select! {
            _ = int.recv() => Some("SIGINT"),
            _ = term.recv() => Some("SIGTERM"),
        },
        None => std::future::pending().await,
    }
}

async fn caller(rx: &mut Option<watch::Receiver<Cancel>>) -> Cancel {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => *rx.borrow(),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_only_escalate() {
        let (source, signal) = StopSource::new();
        assert!(source.stop(CancelReason::UserInterrupt, "SIGINT"));
        assert!(!source.stop(CancelReason::Timeout, "timer"));
        assert!(!source.stop(CancelReason::UserInterrupt, "SIGTERM"));
        assert_eq!(signal.current().map(|s| s.by), Some("SIGINT"));
        assert!(source.stop(CancelReason::Kill, "SIGTERM"));
        assert_eq!(signal.current().map(|s| s.reason), Some(CancelReason::Kill));
        assert!(CancelReason::Shutdown.level() < CancelReason::Kill.level());
        assert_eq!(CancelReason::DependencyFailed.level(), Cancel::None);
    }
}
