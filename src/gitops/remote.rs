//! Remote operations through the `git` CLI (credential helpers, ssh, https work as for a
//! person), each within its `timeouts:` setting, with an error that names the operation, the
//! remote (credentials hidden) and the cause.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::config::Timeouts;

/// Where fetched branches land in a cache repository.
pub const REMOTE_NAMESPACE: &str = "refs/kcideploy/remote/";

/// A network operation of the `git` CLI; each has its time limit in the plan file's
/// `timeouts:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitOp {
    Fetch,
    LsRemote,
    Push,
}

impl GitOp {
    /// `git fetch`, as people type it.
    pub fn command(self) -> &'static str {
        match self {
            GitOp::Fetch => "git fetch",
            GitOp::LsRemote => "git ls-remote",
            GitOp::Push => "git push",
        }
    }

    /// The plan file setting of its time limit.
    pub fn setting(self) -> &'static str {
        match self {
            GitOp::Fetch => "timeouts.git_fetch",
            GitOp::LsRemote => "timeouts.git_ls_remote",
            GitOp::Push => "timeouts.git_push",
        }
    }

    /// Its time limit.
    pub fn limit(self, timeouts: &Timeouts) -> Duration {
        match self {
            GitOp::Fetch => timeouts.git_fetch.0,
            GitOp::LsRemote => timeouts.git_ls_remote.0,
            GitOp::Push => timeouts.git_push.0,
        }
    }

    fn preposition(self) -> &'static str {
        match self {
            GitOp::Push => "to",
            GitOp::Fetch | GitOp::LsRemote => "from",
        }
    }

    /// Why it did not finish within `limit`.
    pub fn timed_out(self, limit: Duration) -> String {
        format!(
            "timed out: not finished within {} ({})",
            crate::support::text::age(limit.as_secs() as i64),
            self.setting()
        )
    }
}

/// A failed remote operation: which, with which remote (credentials hidden), and why (what
/// `git` said, or the time limit that ran out).
#[derive(Debug, thiserror::Error)]
#[error("{} {} {remote}: {cause}", op.command(), op.preposition())]
pub struct RemoteError {
    pub op: GitOp,
    /// The remote's URL, credentials hidden: it names the host.
    pub remote: String,
    pub cause: String,
    /// Whether its time limit ran out (else `git` failed).
    pub timed_out: bool,
}

impl RemoteError {
    pub fn new(op: GitOp, url: &str, cause: &str) -> RemoteError {
        RemoteError {
            op,
            remote: redact_url(url),
            cause: redact_url(cause),
            timed_out: false,
        }
    }

    /// `op` with `url` did not finish within `limit`.
    pub fn timeout(op: GitOp, url: &str, limit: Duration) -> RemoteError {
        RemoteError {
            timed_out: true,
            ..RemoteError::new(op, url, &op.timed_out(limit))
        }
    }
}

/// What `git` said on stderr, on one line: its `fatal:`, `error:`, `ssh:` and rejection
/// lines when there are any (`fatal: unable to access '…': Could not resolve host: …`), else
/// all it said. Credentials in URLs hidden.
pub fn cause_of(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let key: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            ["fatal:", "error:", "ssh:", "! ["]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    let shown = if key.is_empty() { lines } else { key };
    if shown.is_empty() {
        return "`git` failed and said nothing".into();
    }
    redact_url(&crate::support::text::clip(&shown.join("; "), 1000))
}

/// `git fetch` `refspecs` of `url` into the bare repository `git_dir`, within
/// `timeouts.git_fetch`; not run for a repository on this machine whose refs the cache holds
/// already ([`super::local_refs`]).
pub fn fetch(
    git_dir: &Path,
    url: &str,
    refspecs: &[String],
    prune: bool,
    timeouts: &Timeouts,
) -> Result<(), RemoteError> {
    if let Some(path) = super::local_refs::local_path(url)
        && super::local_refs::up_to_date(git_dir, &path, refspecs, prune)
    {
        return Ok(());
    }
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir").arg(git_dir).arg("fetch");
    if prune {
        cmd.arg("--prune");
    }
    cmd.args(["--no-tags", "--quiet", "--no-write-fetch-head"])
        .arg(url)
        .args(refspecs);
    run(cmd, GitOp::Fetch, url, GitOp::Fetch.limit(timeouts)).map(|_| ())
}

/// Point `branch` of the remote at `sha` of the repository `git_dir` (`git push --force`:
/// the branch is kcideploy's own, remade whole), within `timeouts.git_push`.
pub fn push_branch(
    git_dir: &Path,
    url: &str,
    sha: &str,
    branch: &str,
    timeouts: &Timeouts,
) -> Result<(), RemoteError> {
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir")
        .arg(git_dir)
        .args(["push", "--quiet", "--force", url])
        .arg(format!("{sha}:refs/heads/{branch}"));
    run(cmd, GitOp::Push, url, GitOp::Push.limit(timeouts)).map(|_| ())
}

/// The SHA the branch has on the remote now (`None`: no such branch), by `git ls-remote`
/// within `timeouts.git_ls_remote`.
pub fn branch_head(
    url: &str,
    branch: &str,
    timeouts: &Timeouts,
) -> Result<Option<String>, RemoteError> {
    ref_head(url, &format!("refs/heads/{branch}"), timeouts)
}

/// What the full ref name (`refs/tags/x`) points at on the remote now (`None`: no such ref),
/// by `git ls-remote` within `timeouts.git_ls_remote`.
pub fn ref_head(url: &str, name: &str, timeouts: &Timeouts) -> Result<Option<String>, RemoteError> {
    let mut cmd = Command::new("git");
    cmd.args(["ls-remote", url, name]);
    let out = run(cmd, GitOp::LsRemote, url, GitOp::LsRemote.limit(timeouts))?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(_, r)| *r == name)
        .map(|(sha, _)| sha.to_string()))
}

/// `git ls-remote url patterns...` within `timeouts.git_ls_remote`: its `<sha>\t<ref>` lines
/// (annotated tags also as `<ref>^{}` with the commit).
pub fn ls_remote(url: &str, patterns: &[&str], timeouts: &Timeouts) -> Result<String, RemoteError> {
    let mut cmd = Command::new("git");
    cmd.args(["ls-remote", url]).args(patterns);
    run(cmd, GitOp::LsRemote, url, GitOp::LsRemote.limit(timeouts))
}

/// Run `git` (`op` with `url`) without a terminal prompt; after `limit`, kill it with its
/// process group (the `git-remote-https` or `ssh` it started). What it printed on stdout.
fn run(mut cmd: Command, op: GitOp, url: &str, limit: Duration) -> Result<String, RemoteError> {
    use std::os::unix::process::CommandExt;
    let err = |cause: String| RemoteError::new(op, url, &cause);
    let temp = || {
        tempfile::tempfile()
            .and_then(|f| Ok((f.try_clone()?, f)))
            .map_err(|e| err(format!("cannot make a temp file: {e}")))
    };
    let (stderr, stderr_w) = temp()?;
    let (stdout, stdout_w) = temp()?;
    let mut child = cmd
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout_w))
        .stderr(Stdio::from(stderr_w))
        .process_group(0)
        .spawn()
        .map_err(|e| err(format!("cannot run `git`: {e}")))?;
    // Waited for on a thread, so that the answer is seen the moment `git` exits (polling
    // added up to its period to every fetch: 20 ms on an 11 ms no-op fetch).
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(limit) {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(err(format!("cannot wait for `git`: {e}"))),
        Err(_) => {
            // Not reaped yet (the waiting thread reaps it): the group id is still its own.
            let group = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = rx.recv();
            return Err(RemoteError::timeout(op, url, limit));
        }
    };
    let read = |mut file: std::fs::File| {
        use std::io::{Read, Seek};
        let mut text = String::new();
        let _ = file.rewind();
        let _ = file.take(1024 * 1024).read_to_string(&mut text);
        text
    };
    if status.success() {
        return Ok(read(stdout));
    }
    Err(err(cause_of(&read(stderr))))
}

/// Hide credentials embedded in URLs (`https://user:token@host`).
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***@");
                out.push_str(&authority[at + 1..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn the_cause_is_what_git_said_that_matters() {
        let ssh = "ssh: Could not resolve hostname h.invalid: Name or service not known\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.\n";
        assert_eq!(
            cause_of(ssh),
            "ssh: Could not resolve hostname h.invalid: Name or service not known; fatal: Could not read from remote repository."
        );
        assert_eq!(cause_of("odd\n"), "odd");
        assert_eq!(cause_of(""), "`git` failed and said nothing");
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("fatal: https://x-access-token:ghp_secret@github.com/k/r.git not found"),
            "fatal: https://***@github.com/k/r.git not found"
        );
        assert_eq!(redact_url("/tmp/local/repo"), "/tmp/local/repo");
        assert_eq!(redact_url("ssh://git@host/x"), "ssh://***@host/x");
    }

    #[test]
    fn git_is_seen_ending_when_it_ends_not_at_a_polling_period() {
        // Polling every 20 ms made every no-op fetch last at least 20 ms.
        let mut times: Vec<Duration> = (0..5)
            .map(|_| {
                let started = Instant::now();
                run(
                    Command::new("true"),
                    GitOp::Fetch,
                    "u",
                    Duration::from_secs(5),
                )
                .expect("true");
                started.elapsed()
            })
            .collect();
        times.sort();
        assert!(times[2] < Duration::from_millis(16), "{times:?}");
    }

    #[test]
    fn a_fetch_that_hangs_is_killed_at_the_timeout_with_what_it_started() {
        let dir = tempfile::tempdir().expect("tmp");
        let git_dir = dir.path().join("c.git");
        git2::Repository::init_bare(&git_dir).expect("init");
        // `ext::` runs a command as the transport (`% ` is a space): a shell, git's child,
        // that says its pid and never answers.
        let pid_file = dir.path().join("transport.pid");
        let url = format!(
            "ext::sh -c echo% $$% >% {};% exec% sleep% 120",
            pid_file.display()
        );
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir")
            .arg(&git_dir)
            .args(["-c", "protocol.ext.allow=always", "fetch", &url]);
        let started = Instant::now();
        let e = run(cmd, GitOp::Fetch, &url, Duration::from_secs(1)).expect_err("times out");
        assert!(e.timed_out, "{e}");
        assert_eq!(
            e.to_string(),
            format!("git fetch from {url}: timed out: not finished within 1s (timeouts.git_fetch)")
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "killed, not waited for"
        );
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .expect("the transport started")
            .trim()
            .parse()
            .expect("pid");
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            // Gone, or a zombie nobody waits for (its parent, git, is dead).
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |stat| stat.contains(") Z "))
        });
        assert!(gone, "the transport git started ({pid}) was killed too");
    }
}
