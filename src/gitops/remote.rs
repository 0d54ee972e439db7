//! Remote operations through the `git` CLI (credential helpers, ssh, https work as for a
//! person), each with a timeout and an error that names the remote (credentials hidden).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where fetched branches land in a cache repository.
pub const REMOTE_NAMESPACE: &str = "refs/kcideploy/remote/";

/// No fetch of one repo takes longer than this.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(600);

/// A failed remote operation: what the remote (credentials hidden) or `git` said.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub message: String,
}

/// `git fetch` `refspecs` of `url` into the bare repository `git_dir`, within `timeout`.
pub fn fetch(
    git_dir: &Path,
    url: &str,
    refspecs: &[String],
    prune: bool,
    timeout: Duration,
) -> Result<(), RemoteError> {
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir").arg(git_dir).arg("fetch");
    if prune {
        cmd.arg("--prune");
    }
    cmd.args(["--no-tags", "--quiet", "--no-write-fetch-head"])
        .arg(url)
        .args(refspecs);
    run(cmd, timeout)
}

/// The SHA the branch has on the remote now (`None`: no such branch), by `git ls-remote`.
pub fn branch_head(
    url: &str,
    branch: &str,
    timeout: Duration,
) -> Result<Option<String>, RemoteError> {
    ref_head(url, &format!("refs/heads/{branch}"), timeout)
}

/// What the full ref name (`refs/tags/x`) points at on the remote now (`None`: no such ref).
pub fn ref_head(url: &str, name: &str, timeout: Duration) -> Result<Option<String>, RemoteError> {
    let mut cmd = Command::new("git");
    cmd.args(["ls-remote", url, name]);
    let out = run_capturing(cmd, timeout)?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(_, r)| *r == name)
        .map(|(sha, _)| sha.to_string()))
}

/// Run a `git` command without a terminal prompt; kill it after `timeout`.
fn run(cmd: Command, timeout: Duration) -> Result<(), RemoteError> {
    run_capturing(cmd, timeout).map(|_| ())
}

/// [`run`], returning what the command printed on stdout.
fn run_capturing(mut cmd: Command, timeout: Duration) -> Result<String, RemoteError> {
    let err = |message: String| RemoteError {
        message: redact_url(&message),
    };
    let temp = || tempfile::tempfile().map_err(|e| err(format!("cannot make a temp file: {e}")));
    let stderr = temp()?;
    let stdout = temp()?;
    let mut child = cmd
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            stdout
                .try_clone()
                .map_err(|e| err(format!("cannot make a temp file: {e}")))?,
        ))
        .stderr(Stdio::from(
            stderr
                .try_clone()
                .map_err(|e| err(format!("cannot make a temp file: {e}")))?,
        ))
        .spawn()
        .map_err(|e| err(format!("cannot run `git`: {e}")))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!(
                    "`git` did not finish within {}",
                    crate::support::text::age(timeout.as_secs() as i64)
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(err(format!("cannot wait for `git`: {e}"))),
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
    Err(err(read(stderr).trim().to_string()))
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
    use super::*;

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
    fn a_fetch_that_hangs_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().expect("tmp");
        let git_dir = dir.path().join("c.git");
        git2::Repository::init_bare(&git_dir).expect("init");
        // `ext::` runs a command as the transport: one that never answers.
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir").arg(&git_dir).args([
            "-c",
            "protocol.ext.allow=always",
            "fetch",
            "ext::sleep 120",
        ]);
        let started = Instant::now();
        let e = run(cmd, Duration::from_millis(500)).expect_err("times out");
        assert!(e.message.contains("did not finish within"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "killed, not waited for"
        );
    }
}
