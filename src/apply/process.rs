//! Run a child process for a step: its own process group, output to the step log, and
//! cancellation (SIGTERM to the group, SIGKILL after a grace period). The step runner owns
//! time limits: it cancels the step when its attempt runs too long.
//!
//! A step's process never inherits kcideploy's whole environment: steps run code from pull
//! requests, and kcideploy's environment holds the GitHub token, the webhook secret and
//! registry credentials. [`clean_env`] starts it from the few variables listed here.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::watch;

use super::{lifeline, spawn};
use crate::state::journal::{Entry, Journal, SpawnedLine};

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
    /// Stopped (its process group signalled) after its own time limit.
    #[error("`{program}` did not finish within {}", crate::support::text::age(.limit.as_secs() as i64))]
    TimedOut { program: String, limit: Duration },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Which of kcideploy's own environment variables a step's process keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inherit {
    /// `command` and `compose` (code from the staging revision): [`BASIC_VARS`], `LC_*` and
    /// [`DOCKER_VARS`].
    Step,
    /// `git` run by `git_push` and `pipe_cleaner` (git itself, no code of a change): also
    /// what credential helpers, ssh and proxies need, [`GIT_VARS`] and `GIT_*`.
    Git,
}

/// Kept for every step when set (with `LC_*`).
pub const BASIC_VARS: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR"];

/// Kept for every step when set: what the Docker client needs to reach the daemon.
pub const DOCKER_VARS: &[&str] = &[
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "DOCKER_API_VERSION",
];

/// Kept for git (with `GIT_*`): credential helpers, the ssh agent, proxies.
pub const GIT_VARS: &[&str] = &[
    "SSH_AUTH_SOCK",
    "XDG_CONFIG_HOME",
    "XDG_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
];

/// The variables of `from` (kcideploy's environment) a process keeps: those `inherit`
/// allows, and those named in `pass` (a step's `pass_env`).
pub fn kept_env(
    from: impl IntoIterator<Item = (OsString, OsString)>,
    inherit: Inherit,
    pass: &[String],
) -> Vec<(OsString, OsString)> {
    let keep = |name: &str| {
        BASIC_VARS.contains(&name)
            || name.starts_with("LC_")
            || DOCKER_VARS.contains(&name)
            || (inherit == Inherit::Git && (GIT_VARS.contains(&name) || name.starts_with("GIT_")))
            || pass.iter().any(|p| p == name)
    };
    from.into_iter()
        .filter(|(name, _)| name.to_str().is_some_and(keep))
        .collect()
}

/// Start `cmd` from a clean environment: only what [`kept_env`] keeps of kcideploy's. Set
/// the step's own variables (`KCIDEPLOY_*`, `env:`) after this.
pub fn clean_env(cmd: &mut Command, inherit: Inherit, pass: &[String]) {
    cmd.env_clear()
        .envs(kept_env(std::env::vars_os(), inherit, pass));
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

/// Where a step's process writes and where it is recorded: stderr (and stdout unless
/// `capture`) to `log`; its group, before its program runs, in the run's journal (the
/// journal, the run id and the step; see [`super::lifeline`]).
#[derive(Clone, Copy)]
pub struct Io<'a> {
    pub log: &'a File,
    pub capture: bool,
    pub journal: Option<(&'a Journal, &'a str, &'a str)>,
}

/// Run `cmd` to completion in its own process group, which dies with kcideploy; stopped as
/// a cancel would stop it when it runs longer than `limit` (a network operation's own time
/// limit, shorter than its step's). `cmd`'s environment must have been cleared
/// ([`clean_env`]): only what it sets is passed. Started by [`spawn`] (no `fork`); killed
/// if the attempt is dropped before it ends.
pub async fn run_within(
    mut cmd: Command,
    program: &str,
    Io {
        log,
        capture,
        journal,
    }: Io<'_>,
    grace: Duration,
    cancel: &mut watch::Receiver<Cancel>,
    limit: Option<Duration>,
) -> Result<Finished, ProcessError> {
    // The child is started on the spawner thread (`spawn::spawn_apart`): the files it gets
    // are copies owned by the start, open until it is over even if this attempt is dropped.
    let mut keep = Vec::new();
    let mut record = None;
    if let Some((journal, run, step)) = journal {
        cmd.env("KCIDEPLOY_RUN_ID", run);
        let fd = dup(journal.fd())?;
        record = Some(lifeline::Record {
            fd: fd.as_raw_fd(),
            line: SpawnedLine::new(run, step, lifeline::this_process()),
        });
        keep.push(fd);
    }
    let spawn_error = |source| ProcessError::Spawn {
        program: program.to_string(),
        source,
    };
    let spec = spawn::Spec::new(cmd.as_std()).map_err(spawn_error)?;
    let log = OwnedFd::from(log.try_clone()?);
    let (read_end, stdout) = match capture {
        true => {
            let (read, write) = spawn::pipe()?;
            (Some(read), write)
        }
        false => (None, dup(log.as_raw_fd())?),
    };
    let stdio = spawn::Stdio {
        stdin: spawn::dev_null()?,
        stdout: stdout.as_raw_fd(),
        stderr: log.as_raw_fd(),
    };
    keep.extend([log, stdout]);
    let mut armed = lifeline::arm(grace, record);
    let before_exec = move || {
        let _open = &keep;
        armed.before_exec()
    };
    let mut child = spawn::spawn_apart(spec, stdio, before_exec)
        .await
        .map_err(spawn_error)?;
    let mut group = child.id().map(|pid| Group::new(pid as i32, journal));
    let stdout_pipe = read_end
        .map(tokio::net::unix::pipe::Receiver::from_owned_fd)
        .transpose()?;
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(mut pipe) = stdout_pipe {
            use tokio::io::AsyncReadExt;
            let _ = pipe.read_to_end(&mut buf).await;
        }
        buf
    });
    if *cancel.borrow() >= Cancel::Graceful {
        stop(&mut child, grace, cancel).await;
        group.iter_mut().for_each(Group::reaped);
        return Err(ProcessError::Cancelled);
    }
    let mut watcher = cancel.clone();
    let over = async {
        match limit {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let status = tokio::select! {
        status = child.wait() => status,
        _ = cancelled(&mut watcher, Cancel::Graceful) => {
            stop(&mut child, grace, cancel).await;
            group.iter_mut().for_each(Group::reaped);
            return Err(ProcessError::Cancelled);
        }
        () = over => {
            stop(&mut child, grace, cancel).await;
            group.iter_mut().for_each(Group::reaped);
            return Err(ProcessError::TimedOut {
                program: program.to_string(),
                limit: limit.unwrap_or_default(),
            });
        }
    };
    group.iter_mut().for_each(Group::reaped);
    let status = status?;
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

/// A close-on-exec copy of `fd`.
fn dup(fd: std::os::fd::RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: no pointers; the new fd is ours.
    let new = unsafe { nix::libc::fcntl(fd, nix::libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(new) })
}

/// A step process's group while its leader runs. Once the leader is reaped (or, when the
/// attempt is dropped before that, once the group is killed), the guard forgets it and the
/// journal says so.
struct Group<'a> {
    pgid: i32,
    start_time: u64,
    journal: Option<(&'a Journal, &'a str, &'a str)>,
    over: bool,
}

impl<'a> Group<'a> {
    fn new(pgid: i32, journal: Option<(&'a Journal, &'a str, &'a str)>) -> Group<'a> {
        // The leader is not reaped yet: its stat is there even if it already exited.
        let start_time = std::fs::read(format!("/proc/{pgid}/stat"))
            .ok()
            .and_then(|s| lifeline::parse_stat(&s))
            .map_or(0, |s| s.start_time);
        Group {
            pgid,
            start_time,
            journal,
            over: false,
        }
    }

    fn reaped(&mut self) {
        if std::mem::replace(&mut self.over, true) {
            return;
        }
        lifeline::forget(self.pgid);
        if let Some((journal, run, step)) = self.journal {
            let entry = Entry::Reaped {
                run: run.to_string(),
                step: step.to_string(),
                pgid: self.pgid,
                start_time: self.start_time,
            };
            // Not synced: after a crash of the machine no process of the group is left.
            if let Err(e) = journal.note(&entry) {
                tracing::warn!("cannot write the journal {}: {e}", journal.path().display());
            }
        }
    }
}

impl Drop for Group<'_> {
    /// The attempt was dropped while its process ran (the runner's backstop): kill the whole
    /// group, not only the leader (`kill_on_drop`). The leader is not reaped yet, so the
    /// group id is still its own.
    fn drop(&mut self) {
        if !self.over {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
            self.reaped();
        }
    }
}

/// SIGTERM the child's process group, wait up to `grace` (or a kill request), then SIGKILL.
async fn stop(child: &mut spawn::Child, grace: Duration, cancel: &mut watch::Receiver<Cancel>) {
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

/// What was written to a log file after its first `offset` bytes (at most 64 KiB of it).
pub fn since(path: &std::path::Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = file.take(64 * 1024).read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The last `n` lines of a log file.
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn names(kept: &[(OsString, OsString)]) -> Vec<String> {
        kept.iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_step_keeps_the_basics_and_docker_and_what_it_names() {
        let parent = env(&[
            ("PATH", "/bin"),
            ("LC_ALL", "C"),
            ("DOCKER_HOST", "unix:///d.sock"),
            ("GITHUB_TOKEN", "t"),
            ("KCIDEPLOY_WEBHOOK_SECRET", "s"),
            ("KCIDEPLOY_REGISTRY_PASSWORD", "p"),
            ("GIT_SSH_COMMAND", "ssh"),
            ("SSH_AUTH_SOCK", "/a"),
            ("EXTRA", "x"),
        ]);
        let kept = kept_env(parent.clone(), Inherit::Step, &["EXTRA".into()]);
        assert_eq!(names(&kept), ["PATH", "LC_ALL", "DOCKER_HOST", "EXTRA"]);
        let git = kept_env(parent, Inherit::Git, &[]);
        assert_eq!(
            names(&git),
            [
                "PATH",
                "LC_ALL",
                "DOCKER_HOST",
                "GIT_SSH_COMMAND",
                "SSH_AUTH_SOCK"
            ]
        );
    }
}
