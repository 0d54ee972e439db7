//! Tests of [`super`]: the child shares memory, errors come back, signals as std sets them.

use std::sync::atomic::AtomicBool;

use super::*;

fn stdio(out: &std::fs::File) -> Stdio {
    Stdio {
        stdin: dev_null().expect("null"),
        stdout: out.as_raw_fd(),
        stderr: out.as_raw_fd(),
    }
}

fn output(mut file: std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    file.rewind().expect("rewind");
    file.read_to_string(&mut text).expect("read");
    text
}

#[tokio::test]
async fn the_child_shares_kcideploys_memory_until_exec_instead_of_a_copy() {
    // What `fork` would copy: a write of the child before `exec` is seen by the parent.
    let out = tempfile::tempfile().expect("tmp");
    let mut cmd = std::process::Command::new("sh");
    cmd.env_clear().args(["-c", "echo $X; pwd"]).env("X", "y");
    cmd.current_dir("/");
    let spec = Spec::new(&cmd).expect("spec");
    let ran = AtomicBool::new(false);
    let mut child = spawn(&spec, stdio(&out), || {
        ran.store(true, Ordering::SeqCst);
        Ok(())
    })
    .expect("spawn");
    assert!(
        ran.load(Ordering::SeqCst),
        "before_exec ran in shared memory"
    );
    let status = child.wait().await.expect("wait");
    assert!(status.success(), "{status}");
    assert_eq!(child.id(), None, "reaped");
    assert_eq!(output(out), "y\n/\n");
}

#[tokio::test]
async fn errors_before_and_at_exec_are_returned() {
    let out = tempfile::tempfile().expect("tmp");
    let cmd = std::process::Command::new("kcideploy-no-such-program");
    let spec = Spec::new(&cmd).expect("spec");
    let e = spawn(&spec, stdio(&out), || Ok(()))
        .err()
        .expect("no program");
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    let spec = Spec::new(&std::process::Command::new("true")).expect("spec");
    let e = spawn(&spec, stdio(&out), || {
        Err(io::Error::from_raw_os_error(libc::ESRCH))
    })
    .err()
    .expect("refused");
    assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
}

#[tokio::test]
async fn the_child_starts_with_the_signals_std_gives_it() {
    // kcideploy ignores SIGPIPE and catches SIGCHLD and SIGINT (tokio); the child starts
    // as one of std's `Command` does: nothing blocked, SIGPIPE back to its default.
    let _ctrl_c = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    // SAFETY: SIG_IGN for SIGPIPE, as Rust's runtime sets it.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let status = |out: std::fs::File| {
        let text = output(out);
        text.lines()
            .filter(|l| {
                ["SigBlk", "SigIgn", "SigCgt"]
                    .iter()
                    .any(|s| l.starts_with(s))
            })
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let out = tempfile::tempfile().expect("tmp");
    let mut cmd = std::process::Command::new("cat");
    cmd.env_clear().arg("/proc/self/status");
    let spec = Spec::new(&cmd).expect("spec");
    let mut child = spawn(&spec, stdio(&out), || Ok(())).expect("spawn");
    assert!(child.wait().await.expect("wait").success());
    let ours = status(out);
    let std_out = tempfile::tempfile().expect("tmp");
    let done = cmd
        .stdout(std_out.try_clone().expect("fd"))
        .status()
        .expect("std");
    assert!(done.success());
    let theirs = status(std_out);
    assert_eq!(ours.len(), 3, "{ours:?}");
    assert_eq!(ours, theirs);
}

#[tokio::test]
async fn a_dropped_child_is_killed() {
    let out = tempfile::tempfile().expect("tmp");
    let mut cmd = std::process::Command::new("sleep");
    cmd.env_clear().arg("30");
    let spec = Spec::new(&cmd).expect("spec");
    let child = spawn(&spec, stdio(&out), || Ok(())).expect("spawn");
    let pid = child.id().expect("pid");
    drop(child);
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if std::fs::read_to_string(format!("/proc/{pid}/stat")).is_err() {
            gone = true;
            break;
        }
    }
    assert!(gone, "killed and reaped");
}
