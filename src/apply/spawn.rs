//! Start a step's process without copying kcideploy's memory: `clone(CLONE_VM | CLONE_VFORK)`,
//! as `posix_spawn` does, but with kcideploy's own code between the clone and the `exec`
//! ([`super::lifeline`]: `PR_SET_PDEATHSIG`, the journal line, the guard). `fork` copied the
//! page tables of the whole process for every step and then took copy-on-write faults and
//! TLB shootdowns on every core until the `exec`: its cost grew with kcideploy's memory (19
//! MB at 200 steps, 60 MB at 5,000) and was the largest part of a step's overhead.
//!
//! The child shares kcideploy's memory until it calls `exec`, and the calling thread waits
//! until then, so the child runs on a stack of its own, allocates nothing, takes no lock, and
//! touches only what the parent prepared ([`Spec`]) and its error slot. Signals are blocked
//! in the calling thread across the clone; the child resets every caught signal to its
//! default before unblocking them, so no handler of kcideploy's runs in it. The child is
//! waited for through a pidfd.

use std::ffi::{CString, OsStr, OsString, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::libc;
use tokio::io::unix::AsyncFd;

/// What the child needs, prepared by the parent: C strings and their pointer arrays.
pub struct Spec {
    /// Where the program may be, in `PATH` order (one path when its name has a `/`).
    paths: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
}

fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} holds a NUL byte", s.to_string_lossy()),
        )
    })
}

impl Spec {
    /// From a command whose environment was cleared ([`super::process::clean_env`]): only the
    /// variables it sets are passed. The program is looked up in that `PATH` (else
    /// kcideploy's), relative to the command's directory for relative entries, as `execvp`
    /// in the child would.
    pub fn new(cmd: &std::process::Command) -> io::Result<Spec> {
        let program = cmd.get_program();
        let mut argv = vec![c_string(program)?];
        for arg in cmd.get_args() {
            argv.push(c_string(arg)?);
        }
        let mut envp = Vec::new();
        let mut path = None;
        for (name, value) in cmd.get_envs() {
            let Some(value) = value else { continue };
            if name == "PATH" {
                path = Some(value.to_os_string());
            }
            let mut pair = OsString::from(name);
            pair.push("=");
            pair.push(value);
            envp.push(c_string(&pair)?);
        }
        let paths = candidates(program, path.or_else(|| std::env::var_os("PATH")))?;
        let cwd = cmd
            .get_current_dir()
            .map(|d| c_string(d.as_os_str()))
            .transpose()?;
        Ok(Spec {
            paths,
            argv,
            envp,
            cwd,
        })
    }
}

/// The paths `execvp` would try for `program`.
fn candidates(program: &OsStr, path: Option<OsString>) -> io::Result<Vec<CString>> {
    if program.as_bytes().contains(&b'/') {
        return Ok(vec![c_string(program)?]);
    }
    let path = path.unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
    let mut out = Vec::new();
    for dir in path.as_bytes().split(|b| *b == b':') {
        let mut full = if dir.is_empty() {
            b".".to_vec()
        } else {
            dir.to_vec()
        };
        full.push(b'/');
        full.extend_from_slice(program.as_bytes());
        out.push(c_string(OsStr::from_bytes(&full))?);
    }
    Ok(out)
}

/// The standard streams of the child.
#[derive(Clone, Copy)]
pub struct Stdio {
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
}

/// What the child reads: pointers into the [`Spec`], the streams, the work before `exec`,
/// and where it leaves the error that stopped it.
struct Shared<F> {
    paths: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: Option<*const libc::c_char>,
    stdio: Stdio,
    before_exec: F,
    error: AtomicI32,
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Bytes of the child's stack; its deepest frame (reading `/proc/self/stat`) needs about 2 KiB.
const STACK: usize = 64 * 1024;

/// A stack for the children a thread starts, with a guard page below it; kept for the
/// thread's life (the calling thread waits while the child uses it, so one is enough).
struct Stack(*mut c_void);

impl Stack {
    fn new() -> io::Result<Stack> {
        let page = 4096;
        // SAFETY: a fresh private anonymous mapping; the guard page is inside it.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                STACK + page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            if libc::mprotect(base, page, libc::PROT_NONE) != 0 {
                let e = io::Error::last_os_error();
                libc::munmap(base, STACK + page);
                return Err(e);
            }
            Ok(Stack(base))
        }
    }

    /// The top of the stack (it grows down), 16-byte aligned.
    fn top(&self) -> *mut c_void {
        // SAFETY: within the mapping (its end).
        unsafe { self.0.cast::<u8>().add(STACK + 4096).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unused once its thread ends.
        unsafe {
            libc::munmap(self.0, STACK + 4096);
        }
    }
}

thread_local! {
    static STACKS: std::cell::RefCell<Option<Stack>> = const { std::cell::RefCell::new(None) };
}

/// Start `spec` with `stdio`, running `before_exec` in the child just before its program
/// (it must be async-signal-safe and allocate nothing). An error of `before_exec` or of
/// `exec` is returned here, the child reaped. The calling thread waits until the child has
/// called `exec`, and is the child's parent thread (`PR_SET_PDEATHSIG`): see [`spawn_apart`].
pub fn spawn<F>(spec: &Spec, stdio: Stdio, before_exec: F) -> io::Result<Child>
where
    F: FnMut() -> io::Result<()>,
{
    Child::new(start(spec, stdio, before_exec)?)
}

/// A start for the spawner thread.
type Job = Box<dyn FnOnce() + Send>;

/// [`spawn`] on kcideploy's spawner thread, which lives as long as the process (so
/// `PR_SET_PDEATHSIG` fires only when kcideploy goes) and waits for each child's `exec` in
/// place of a runtime worker: under CPU contention a child can wait milliseconds for a core
/// before its `exec`, and the workers go on with the other steps meanwhile.
pub async fn spawn_apart<F>(spec: Spec, stdio: Stdio, before_exec: F) -> io::Result<Child>
where
    F: FnMut() -> io::Result<()> + Send + 'static,
{
    static SPAWNER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("kcideploy-spawn".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(spawner) = spawner else {
        return spawn(&spec, stdio, before_exec);
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let started = start(&spec, stdio, before_exec);
        if let Err(Ok(pid)) = reply.send(started) {
            // Nobody waits for it any more (the attempt was dropped): kill and reap it.
            // SAFETY: our unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    });
    spawner
        .send(job)
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    let pid = answer
        .await
        .map_err(|_| io::Error::other("the spawner thread is gone"))??;
    Child::new(pid)
}

/// Start the child; its pid.
fn start<F>(spec: &Spec, stdio: Stdio, before_exec: F) -> io::Result<libc::pid_t>
where
    F: FnMut() -> io::Result<()>,
{
    let mut shared = Shared {
        paths: pointers(&spec.paths),
        argv: pointers(&spec.argv),
        envp: pointers(&spec.envp),
        cwd: spec.cwd.as_ref().map(|c| c.as_ptr()),
        stdio,
        before_exec,
        error: AtomicI32::new(0),
    };
    let pid = STACKS.with(|cell| -> io::Result<libc::pid_t> {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Stack::new()?);
        }
        let top = slot.as_ref().map_or(std::ptr::null_mut(), Stack::top);
        // SAFETY: every signal blocked in this thread until the child has called `exec` or
        // exited (CLONE_VFORK holds this thread until then); the child runs `child::<F>` on
        // its own stack with `shared`, which outlives it.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let pid = libc::clone(
                child::<F>,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&raw mut shared).cast(),
            );
            let e = io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            if pid < 0 { Err(e) } else { Ok(pid) }
        }
    })?;
    let error = shared.error.load(Ordering::SeqCst);
    if error != 0 {
        let mut status = 0;
        // SAFETY: our child, which exited (or is exiting) without running its program.
        unsafe {
            while libc::waitpid(pid, &mut status, 0) < 0
                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
            {}
        }
        return Err(io::Error::from_raw_os_error(error));
    }
    Ok(pid)
}

/// In the child, on its own stack, sharing the parent's memory: set up and `exec`, or leave
/// the error in `shared.error` and exit 127.
extern "C" fn child<F>(arg: *mut c_void) -> libc::c_int
where
    F: FnMut() -> io::Result<()>,
{
    // SAFETY: `arg` is the parent's `Shared<F>`, alive while the parent waits for this child.
    let shared = unsafe { &mut *arg.cast::<Shared<F>>() };
    let e = prepare_and_exec(shared);
    shared
        .error
        .store(e.raw_os_error().unwrap_or(libc::EINVAL), Ordering::SeqCst);
    // SAFETY: ends the child without running anything of the parent's (no atexit, no flush).
    unsafe { libc::_exit(127) }
}

/// Returns only on failure.
fn prepare_and_exec<F>(shared: &mut Shared<F>) -> io::Error
where
    F: FnMut() -> io::Result<()>,
{
    // SAFETY: system calls on memory prepared by the parent; nothing is allocated.
    unsafe {
        // kcideploy's handlers are not for this process; what kcideploy ignores stays
        // ignored, except SIGPIPE (ignored by Rust's runtime), as std's `Command` does.
        for signal in 1..=64 {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let ignored = old.sa_sigaction == libc::SIG_IGN && signal != libc::SIGPIPE;
            if old.sa_sigaction != libc::SIG_DFL && !ignored {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        let Stdio {
            stdin,
            stdout,
            stderr,
        } = shared.stdio;
        for (fd, target) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
            let done = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if done < 0 {
                return io::Error::last_os_error();
            }
        }
        if let Some(cwd) = shared.cwd
            && libc::chdir(cwd) != 0
        {
            return io::Error::last_os_error();
        }
        if let Err(e) = (shared.before_exec)() {
            return e;
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        let mut denied = false;
        for path in shared.paths.iter().take_while(|p| !p.is_null()) {
            libc::execve(*path, shared.argv.as_ptr(), shared.envp.as_ptr());
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => {}
                Some(libc::EACCES) => denied = true,
                _ => return e,
            }
        }
        io::Error::from_raw_os_error(if denied { libc::EACCES } else { libc::ENOENT })
    }
}

/// A started child, waited for through its pidfd. Dropped before it was reaped, it is
/// killed (SIGKILL) and reaped in the background.
pub struct Child {
    pid: libc::pid_t,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

impl Child {
    fn new(pid: libc::pid_t) -> io::Result<Child> {
        let mut child = Child {
            pid,
            pidfd: None,
            status: None,
        };
        // SAFETY: no pointers; the fd returned is ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            // Dropping `child` kills and reaps it.
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd from pidfd_open.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "a step's process is started only on the runtime",
            ));
        }
        // SAFETY: the OwnedFd stays open, the same file, until the AsyncFd drops it.
        let pidfd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        child.pidfd = Some(pidfd);
        Ok(child)
    }

    /// The pid while the child is not reaped.
    pub fn id(&self) -> Option<u32> {
        self.status.is_none().then_some(self.pid as u32)
    }

    /// Wait for the child to exit (cancel-safe: the status is kept once read).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            if let Some(status) = reap(self.pid)? {
                self.status = Some(status);
                continue;
            }
            let Some(pidfd) = &self.pidfd else {
                return Err(io::Error::from_raw_os_error(libc::ECHILD));
            };
            let mut ready = pidfd.readable().await?;
            match reap(self.pid)? {
                Some(status) => self.status = Some(status),
                None => ready.clear_ready(),
            }
        }
    }
}

/// The child's status if it exited (reaping it), `None` while it runs.
fn reap(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is valid; `pid` is our unreaped child.
        let n = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if n == pid {
            return Ok(Some(ExitStatus::from_raw(status)));
        }
        if n == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // SAFETY: not reaped yet, so the pid is still this child's.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
        }
        let pid = self.pid;
        let pidfd = self.pidfd.take();
        match (tokio::runtime::Handle::try_current(), pidfd) {
            (Ok(rt), Some(pidfd)) => {
                rt.spawn(async move {
                    let _ = pidfd.readable().await;
                    let _ = reap(pid);
                });
            }
            (_, pidfd) => {
                drop(pidfd);
                std::thread::spawn(move || {
                    let mut status = 0;
                    // SAFETY: blocks until our killed child is gone.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                });
            }
        }
    }
}

/// A pipe for the child's stdout: (read end, write end), both close-on-exec (the child gets
/// its own copy of the write end as fd 1).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` holds two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh fds, owned from here on.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `/dev/null` for the children's stdin, opened once.
pub fn dev_null() -> io::Result<RawFd> {
    static NULL: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    if let Some(f) = NULL.get() {
        return Ok(f.as_raw_fd());
    }
    let file = std::fs::File::open("/dev/null")?;
    Ok(NULL.get_or_init(|| file).as_raw_fd())
}

#[cfg(test)]
mod tests;
