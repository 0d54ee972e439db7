//! A step's processes die with kcideploy, even when it is killed without a chance to stop
//! them (SIGKILL, the OOM killer, a systemd stop past its timeout).
//!
//! Every step process runs in its own process group. Between the clone and `exec` ([`arm`],
//! [`super::spawn`]) the process, still running kcideploy's code, asks for SIGTERM when the
//! thread that started it dies (`PR_SET_PDEATHSIG`; that is the spawner thread, which lives
//! as long as the process), writes its own [`SpawnedLine`] to the run's journal, and tells the
//! guard its group, all before its program runs. The guard is one `sh` per kcideploy process
//! ([`GUARD_SCRIPT`]), in its own process group, deaf to SIGINT/SIGTERM/SIGHUP: it keeps the
//! list of running groups from a socket, and when the socket closes (kcideploy is gone,
//! however it went) it sends SIGTERM to the groups still listed, then SIGKILL after the grace
//! to those still there. What survives even that (the guard killed too, a leader that ignores
//! SIGTERM) is stopped by the next apply from the journal (`super::leftovers`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use nix::libc;

use crate::state::journal::{Process, SpawnedLine, put_digits};

/// The guard: reads `+<pgid>` / `-<pgid>` lines; at end of input SIGTERMs the groups still
/// listed, waits up to `$1` tenths of a second for them to go, then SIGKILLs them.
pub const GUARD_SCRIPT: &str = r#"trap '' INT TERM HUP QUIT
# kill -s SIG -- -PGID (dash, bash) or kill -s SIG -PGID (busybox, which refuses --).
sig() { kill -s "$1" -- "-$2" 2>/dev/null || kill -s "$1" "-$2" 2>/dev/null; }
groups=' '
while IFS= read -r line; do
  case $line in
    +*) groups="$groups${line#+} " ;;
    -*) g=${line#-}
        case $groups in *" $g "*) groups="${groups%% $g *} ${groups#* $g }" ;; esac ;;
  esac
done
[ -z "${groups# }" ] && exit 0
for g in $groups; do sig TERM "$g"; done
n=0
while [ "$n" -lt "$1" ]; do
  alive=
  for g in $groups; do sig 0 "$g" && alive=1; done
  [ -z "$alive" ] && exit 0
  sleep 0.1
  n=$((n + 1))
done
for g in $groups; do sig KILL "$g"; done
"#;

/// kcideploy's end of the guard's socket (the guard's child handle is kept, never waited).
struct Guard {
    socket: UnixStream,
    _child: std::process::Child,
}

static GUARD: OnceLock<Option<Guard>> = OnceLock::new();

/// The guard's socket, the guard started on first use with `grace` (the first run's).
fn guard(grace: Duration) -> Option<RawFd> {
    GUARD
        .get_or_init(|| match start_guard(grace) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(
                    "cannot start the guard that stops steps when kcideploy is killed (sh): {e}"
                );
                None
            }
        })
        .as_ref()
        .map(|g| g.socket.as_raw_fd())
}

fn start_guard(grace: Duration) -> io::Result<Guard> {
    let (ours, theirs) = UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    let tenths = grace.as_millis().div_ceil(100).max(1);
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", GUARD_SCRIPT, "kcideploy-guard", &tenths.to_string()])
        .env_clear()
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn()?;
    Ok(Guard {
        socket: ours,
        _child: child,
    })
}

/// Tell the guard `+pgid` or `-pgid`. Async-signal-safe; never blocks, never raises SIGPIPE
/// (a guard that is gone or behind is not waited for: the journal still has the group).
fn tell(socket: RawFd, sign: u8, pgid: i32) {
    let mut digits = [b' '; 10];
    put_digits(&mut digits, pgid.max(0) as u64);
    let first = digits.iter().position(|b| *b != b' ').unwrap_or(9);
    let n = digits.len() - first;
    let mut buf = [0u8; 12];
    buf[0] = sign;
    buf[1..=n].copy_from_slice(&digits[first..]);
    buf[n + 1] = b'\n';
    // SAFETY: `buf` outlives the call and holds `n + 2` bytes.
    unsafe {
        libc::send(
            socket,
            buf.as_ptr().cast(),
            n + 2,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        );
    }
}

/// The group of a reaped step process is over: the guard forgets it.
pub fn forget(pgid: i32) {
    if let Some(Some(g)) = GUARD.get() {
        tell(g.socket.as_raw_fd(), b'-', pgid);
    }
}

/// What a step's process records of itself before its program runs: the journal's file
/// and its line.
pub struct Record {
    pub fd: RawFd,
    pub line: SpawnedLine,
}

/// What makes a step's process lead its own group, die with kcideploy, and be recorded (in
/// the journal when `record` is given, with the guard always) before its program runs:
/// [`Armed::before_exec`], in the child. The journal's file must stay open until the process
/// is spawned.
pub struct Armed {
    parent: libc::pid_t,
    guard: Option<RawFd>,
    record: Option<Record>,
}

/// Prepare [`Armed`] for one process (the guard is started on first use, with `grace`).
pub fn arm(grace: Duration, record: Option<Record>) -> Armed {
    Armed {
        parent: std::process::id() as libc::pid_t,
        guard: guard(grace),
        record,
    }
}

impl Armed {
    /// In the child, between clone and exec: only async-signal-safe system calls (setpgid,
    /// prctl, getppid, getpid, open, read, close, write, send) on memory allocated before;
    /// it allocates nothing (see [`super::spawn`]).
    pub fn before_exec(&mut self) -> io::Result<()> {
        before_exec(self.parent, self.guard, self.record.as_mut())
    }
}

fn os_error() -> io::Error {
    io::Error::last_os_error()
}

/// In the child, after the clone: see [`Armed::before_exec`].
fn before_exec(
    parent: libc::pid_t,
    guard: Option<RawFd>,
    record: Option<&mut Record>,
) -> io::Result<()> {
    // SAFETY: plain system calls without pointers.
    unsafe {
        if libc::setpgid(0, 0) != 0 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
            return Err(os_error());
        }
        // kcideploy died before the line above: nothing would stop this process.
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    // SAFETY: no arguments.
    let pid = unsafe { libc::getpid() };
    if let Some(record) = record {
        let start = own_start_time()?;
        // Not synced: in the page cache it outlives any kill of kcideploy, and a crash of the
        // machine leaves no process to stop. (A sync here would hold every process start.)
        write_all(record.fd, record.line.fill(pid, start))?;
    }
    if let Some(socket) = guard {
        tell(socket, b'+', pid);
    }
    Ok(())
}

fn write_all(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// This process's start time, from `/proc/self/stat`, without allocating.
fn own_start_time() -> io::Result<u64> {
    let mut buf = [0u8; 1024];
    // SAFETY: a NUL-terminated path; `buf` is valid for its length; the fd is closed once.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/stat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(os_error());
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return Err(os_error());
    }
    parse_stat(&buf[..n as usize])
        .map(|s| s.start_time)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

/// This kcideploy process: its pid and start time.
pub fn this_process() -> Process {
    static THIS: OnceLock<Process> = OnceLock::new();
    *THIS.get_or_init(|| Process {
        pid: std::process::id() as i32,
        start_time: own_start_time().unwrap_or(0),
    })
}

/// Whether `process` still runs (the same pid with the same start time).
pub fn alive(process: Process) -> bool {
    std::fs::read(format!("/proc/{}/stat", process.pid))
        .ok()
        .and_then(|s| parse_stat(&s))
        .is_some_and(|s| s.start_time == process.start_time && s.state != b'Z')
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `Z`, ...
    pub state: u8,
    pub pgrp: i32,
    /// Clock ticks after boot.
    pub start_time: u64,
}

/// Parse a `/proc/<pid>/stat` line without allocating (the command name, in parentheses,
/// may hold spaces and parentheses: fields are counted after the last `)`).
pub fn parse_stat(line: &[u8]) -> Option<Stat> {
    let close = line.iter().rposition(|b| *b == b')')?;
    let mut fields = line.get(close + 2..)?.split(|b| *b == b' ');
    let state = *fields.next()?.first()?;
    let _ppid = fields.next()?;
    let pgrp = number(fields.next()?)?;
    // Field 6 (the session) is next; the start time is field 22.
    let start_time = number(fields.nth(16)?)?;
    Some(Stat {
        state,
        pgrp: i32::try_from(pgrp).ok()?,
        start_time,
    })
}

fn number(field: &[u8]) -> Option<u64> {
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    field.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::process::CommandExt;

    use super::*;

    fn group(script: &str) -> std::process::Child {
        std::process::Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .spawn()
            .expect("sh")
    }

    #[test]
    fn the_guard_stops_the_groups_still_listed_when_its_input_closes() {
        let mut guard = std::process::Command::new("sh")
            .args(["-c", GUARD_SCRIPT, "guard", "20"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("guard");
        // A group whose leader ignores SIGTERM (SIGKILL after the grace), one that stops at
        // SIGTERM, and one that ended (forgotten).
        let mut stubborn = group("trap '' TERM; sleep 30 & wait");
        let mut plain = group("sleep 30");
        let mut forgotten = group("sleep 30");
        let mut input = guard.stdin.take().expect("stdin");
        for (sign, child) in [
            ('+', &stubborn),
            ('+', &plain),
            ('+', &forgotten),
            ('-', &forgotten),
        ] {
            writeln!(input, "{sign}{}", child.id()).expect("tell");
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            plain.try_wait().expect("plain").is_none(),
            "nothing before the end"
        );
        drop(input);
        let status = guard.wait().expect("guard");
        assert!(status.success(), "{status}");
        std::thread::sleep(Duration::from_millis(100));
        assert!(plain.try_wait().expect("plain").is_some(), "SIGTERM");
        assert!(stubborn.try_wait().expect("stubborn").is_some(), "SIGKILL");
        assert!(
            forgotten.try_wait().expect("forgotten").is_none(),
            "a forgotten group lives"
        );
        let _ = forgotten.kill();
        let _ = forgotten.wait();
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10\n";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: b'S',
                pgrp: 4242,
                start_time: 987654
            })
        );
        assert_eq!(parse_stat(b"1 (x) S 1"), None);
        let own = std::fs::read("/proc/self/stat").expect("stat");
        assert!(parse_stat(&own).is_some_and(|s| s.start_time > 0));
        assert_eq!(
            own_start_time().expect("start"),
            parse_stat(&own).expect("own").start_time
        );
    }
}
