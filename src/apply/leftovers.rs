//! What an interrupted run left running, stopped before the next apply starts anything.
//!
//! The journal names the process group of every step process that was started and never
//! reaped, with its leader's start time. A group is the interrupted run's when its leader is
//! still there with that start time, or, with the leader gone (it died with kcideploy),
//! for each process still in the group that started after the leader and carries the run's
//! `KCIDEPLOY_RUN_ID`: a pid or group id that another process got since is never signalled.
//! Groups of a kcideploy that still runs (a second apply after `force-unlock --force`
//! twice) are left alone. Each such process gets SIGTERM, and SIGKILL when it is still there after the grace. The
//! signal goes through a pidfd opened before the start time is checked again, so it cannot
//! reach a process that took the pid in between.

use std::time::Duration;

use nix::libc;
use tokio::time::Instant;

use super::lifeline::{self, Stat, parse_stat};
use crate::state::journal::{self, Group, Journal};
use crate::state::{Backend, StateError};

/// Before a run starts (under the lock): stop what the journal says an interrupted run left
/// running (each group with a warning).
pub async fn after_interruption(backend: &Backend, grace: Duration) -> Result<(), StateError> {
    let path = backend.journal_path();
    let entries = journal::read(&path).map_err(|source| StateError::Read { path, source })?;
    for stopped in stop(&journal::unreaped(&entries), grace).await {
        tracing::warn!("{stopped}");
    }
    Ok(())
}

/// This apply's journal, empty: state holds what it said (written by the caller first).
pub fn fresh_journal(backend: &Backend) -> Result<Journal, StateError> {
    let path = backend.journal_path();
    // PostgreSQL state: nothing else made the state directory.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Write {
            path: path.clone(),
            source,
        })?;
    }
    let journal = Journal::open(&path).and_then(|j| j.clear().map(|()| j));
    journal.map_err(|source| StateError::Write { path, source })
}

/// A group of the interrupted run that still had processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub run: String,
    pub step: String,
    pub pgid: i32,
    /// How many of its processes were running.
    pub processes: usize,
    /// Some were still there after the grace: SIGKILL.
    pub killed: bool,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped {} process(es) of step `{}` that the interrupted run {} left running (process group {}{})",
            self.processes,
            self.step,
            self.run,
            self.pgid,
            if self.killed {
                ", SIGKILL after the grace"
            } else {
                ""
            }
        )
    }
}

/// One process, as `/proc` shows it.
struct Proc {
    pid: i32,
    stat: Stat,
}

fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
            Some(Proc {
                pid,
                stat: parse_stat(&stat)?,
            })
        })
        .collect()
}

fn has_run_id(pid: i32, run: &str) -> bool {
    let marker = format!("KCIDEPLOY_RUN_ID={run}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .any(|v| v == marker.as_bytes())
}

/// The live processes of `group` among `procs`: `(pid, start time)`.
fn members(group: &Group, procs: &[Proc]) -> Vec<(i32, u64)> {
    let leader = procs.iter().find(|p| p.pid == group.pgid);
    if leader.is_some_and(|l| l.stat.start_time != group.start_time) {
        // The pid belongs to a later process: the group it led is over.
        return Vec::new();
    }
    procs
        .iter()
        .filter(|p| p.stat.pgrp == group.pgid && p.stat.state != b'Z')
        .filter(|p| {
            leader.is_some()
                || (p.stat.start_time >= group.start_time && has_run_id(p.pid, &group.run))
        })
        .map(|p| (p.pid, p.stat.start_time))
        .collect()
}

/// Send `signal` to `pid` if it is still the process that started at `start_time`.
fn signal_exact(pid: i32, start_time: u64, signal: libc::c_int) {
    let same = || {
        std::fs::read(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
            .is_some_and(|s| s.start_time == start_time)
    };
    // SAFETY: pidfd_open takes a pid and flags; the fd it returns is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        // No pidfd (a kernel before 5.3): check, then signal.
        if same() {
            // SAFETY: plain system call.
            unsafe { libc::kill(pid, signal) };
        }
        return;
    }
    let fd = fd as libc::c_int;
    if same() {
        // SAFETY: `fd` is the pidfd opened above; no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
    // SAFETY: closed once.
    unsafe { libc::close(fd) };
}

/// Stop what `groups` (the journal's unreaped groups) still run: SIGTERM, then SIGKILL to
/// what is left after `grace`. Returns the groups that had processes.
pub async fn stop(groups: &[Group], grace: Duration) -> Vec<Stopped> {
    if groups.is_empty() {
        return Vec::new();
    }
    let procs = processes();
    let mut stopped = Vec::new();
    for group in groups.iter().filter(|g| !lifeline::alive(g.owner)) {
        let found = members(group, &procs);
        if found.is_empty() {
            continue;
        }
        for (pid, start) in &found {
            signal_exact(*pid, *start, libc::SIGTERM);
        }
        stopped.push(Stopped {
            run: group.run.clone(),
            step: group.step.clone(),
            pgid: group.pgid,
            processes: found.len(),
            killed: false,
        });
    }
    let deadline = Instant::now() + grace;
    // Until none is left; after the grace SIGKILL, and a little more for it to land.
    while !stopped.is_empty() && Instant::now() < deadline + Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let procs = processes();
        let mut left = false;
        for report in &mut stopped {
            let Some(group) = groups
                .iter()
                .find(|g| g.pgid == report.pgid && g.step == report.step)
            else {
                continue;
            };
            let found = members(group, &procs);
            left |= !found.is_empty();
            if Instant::now() >= deadline && !found.is_empty() {
                for (pid, start) in &found {
                    signal_exact(*pid, *start, libc::SIGKILL);
                }
                report.killed = true;
            }
        }
        if !left {
            break;
        }
    }
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::journal::Process;

    fn group_of(child: &std::process::Child, run: &str) -> Group {
        let pid = child.id() as i32;
        let stat = std::fs::read(format!("/proc/{pid}/stat")).expect("stat");
        Group {
            run: run.into(),
            step: "s".into(),
            // A kcideploy that is gone.
            owner: Process {
                pid: i32::MAX,
                start_time: 1,
            },
            pgid: pid,
            start_time: parse_stat(&stat).expect("parse").start_time,
        }
    }

    fn spawn(script: &str, run: &str) -> std::process::Child {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", script]).env("KCIDEPLOY_RUN_ID", run);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.spawn().expect("sh")
    }

    #[tokio::test]
    async fn a_group_is_stopped_and_a_reused_pid_is_left_alone() {
        // A leader with a child that ignores SIGTERM: SIGKILL after the grace.
        let mut a = spawn("trap '' TERM; sleep 30 & wait", "r1");
        let group = group_of(&a, "r1");
        // The same pid recorded with another start time: the pid went to another process.
        let mut b = spawn("sleep 30", "r1");
        let mut reused = group_of(&b, "r1");
        reused.start_time -= 1;
        std::thread::sleep(Duration::from_millis(50));
        let stopped = stop(&[group.clone(), reused], Duration::from_millis(200)).await;
        assert_eq!(stopped.len(), 1, "{stopped:?}");
        assert!(
            stopped[0].killed && stopped[0].processes == 2,
            "{stopped:?}"
        );
        assert!(a.wait().is_ok());
        assert!(members(&group, &processes()).is_empty());
        assert!(
            b.try_wait().expect("b").is_none(),
            "the reused pid was signalled"
        );
        let _ = b.kill();
        let _ = b.wait();
    }

    #[tokio::test]
    async fn with_the_leader_gone_only_processes_of_the_run_are_stopped() {
        // The leader exits at once; its child stays in the group.
        let mut a = spawn("sleep 30 & exit 0", "r1");
        let group = group_of(&a, "r1");
        a.wait().expect("leader");
        let other_run = Group {
            run: "r2".into(),
            ..group.clone()
        };
        assert!(
            stop(&[other_run], Duration::from_millis(100))
                .await
                .is_empty()
        );
        let stopped = stop(std::slice::from_ref(&group), Duration::from_secs(5)).await;
        assert_eq!(stopped.len(), 1, "{stopped:?}");
        assert!(!stopped[0].killed, "sleep stops at SIGTERM");
        assert!(members(&group, &processes()).is_empty());
    }
}
