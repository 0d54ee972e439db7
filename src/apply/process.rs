//! Run a child process for a step: its own process group, output to the step log, and
//! cancellation (SIGTERM to the group, SIGKILL after a grace period). The step runner owns
//! time limits: it cancels the step when its attempt runs too long.

use std::fs::File;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// How far a run is being stopped. Only escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cancel {
    None,
    /// Start nothing new; running steps get SIGTERM.
    Graceful,
    /// Kill running steps now (second Ctrl-C).
    Kill,
}

/// Why a process did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{program}` exited with {status}")]
    Failed { program: String, status: ExitStatus },
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Wait until the run is cancelled to at least `level` (forever if nobody can cancel it).
pub async fn cancelled(rx: &mut watch::Receiver<Cancel>, level: Cancel) {
    let reached = rx.wait_for(|c| *c >= level).await.is_ok();
    if !reached {
        std::future::pending::<()>().await;
    }
}

/// What a finished process printed, when asked to capture stdout.
pub struct Finished {
    pub stdout: Vec<u8>,
}

/// Run `cmd` to completion. stderr (and stdout unless `capture`) go to `log`.
pub async fn run(
    mut cmd: Command,
    program: &str,
    log: &File,
    capture: bool,
    grace: Duration,
    cancel: &mut watch::Receiver<Cancel>,
) -> Result<Finished, ProcessError> {
    cmd.stdin(Stdio::null())
        .stderr(log.try_clone()?)
        .process_group(0)
        .kill_on_drop(true);
    if capture {
        cmd.stdout(Stdio::piped());
    } else {
        cmd.stdout(log.try_clone()?);
    }
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: program.to_string(),
        source,
    })?;
    let mut stdout_pipe = child.stdout.take();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(pipe) = stdout_pipe.as_mut() {
            use tokio::io::AsyncReadExt;
            let _ = pipe.read_to_end(&mut buf).await;
        }
        buf
    });
    if *cancel.borrow() >= Cancel::Graceful {
        stop(&mut child, grace, cancel).await;
        return Err(ProcessError::Cancelled);
    }
    let mut watcher = cancel.clone();
    let status = tokio::select! {
        status = child.wait() => status?,
        _ = cancelled(&mut watcher, Cancel::Graceful) => {
            stop(&mut child, grace, cancel).await;
            return Err(ProcessError::Cancelled);
        }
    };
    let stdout = reader.await.unwrap_or_default();
    if status.success() {
        Ok(Finished { stdout })
    } else {
        Err(ProcessError::Failed {
            program: program.to_string(),
            status,
        })
    }
}

/// SIGTERM the child's process group, wait up to `grace` (or a kill request), then SIGKILL.
async fn stop(child: &mut Child, grace: Duration, cancel: &mut watch::Receiver<Cancel>) {
    let Some(pid) = child.id() else { return };
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    tokio::select! {
        _ = child.wait() => {}
        _ = tokio::time::sleep(grace) => {}
        _ = cancelled(cancel, Cancel::Kill) => {}
    }
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait().await;
}

/// The last `n` lines of a log file.
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
