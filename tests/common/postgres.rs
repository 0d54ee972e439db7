//! A throwaway PostgreSQL cluster for tests: `initdb` and `pg_ctl` (PostgreSQL's own
//! binaries, found on PATH, in /usr/local/bin or /usr/lib/postgresql/*/bin) make one in a
//! temp dir, listening on a free loopback port with trust authentication for 127.0.0.1
//! only; it is stopped (`pg_ctl stop -m immediate`) when the [`Postgres`] is dropped, and by
//! a watchdog when the test process dies first. Run as root (CI containers), the cluster
//! runs as the `postgres` user (or `nobody`): PostgreSQL refuses to run as root. No mock.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A running cluster; stopped on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    owner: Option<(u32, u32)>,
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`, if any.
pub fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/local/bin".into());
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    // The newest version first (15 before 9.6: numerically).
    debian.sort_by_key(|p| {
        let version = p
            .parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str());
        std::cmp::Reverse(version.and_then(|v| v.split('.').next()?.parse::<u32>().ok()))
    });
    dirs.extend(debian);
    dirs.into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        // A symlink in /usr/local/bin: the real directory has `postgres` beside them.
        .map(|d| {
            std::fs::canonicalize(d.join("initdb"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or(d)
        })
}

/// uid and gid of `name` from /etc/passwd.
fn user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name) && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Postgres {
    /// Start a cluster (panics, saying why, when PostgreSQL is not installed), without
    /// fsync (tests kill kcideploy, never the machine).
    pub fn start() -> Postgres {
        Postgres::start_with(false)
    }

    /// Start a cluster; `durable`: with fsync, as in production (benchmarks).
    pub fn start_with(durable: bool) -> Postgres {
        let bin = bin_dir().expect(
            "PostgreSQL's initdb and pg_ctl are needed (apt-get install postgresql; scripts/test.sh does)",
        );
        let dir = tempfile::Builder::new()
            .prefix("kcideploy-pg")
            .tempdir()
            .expect("tempdir");
        let owner = nix_is_root()
            .then(|| user("postgres").or_else(|| user("nobody")))
            .flatten();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            owner,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let hba = "local all all trust\nhost all all 127.0.0.1/32 trust\n";
        std::fs::write(Path::new(&data).join("pg_hba.conf"), hba).expect("pg_hba.conf");
        // A port taken between the probe and the start: try another.
        for _ in 0..5 {
            pg.port = free_port();
            let fast = if durable {
                ""
            } else {
                "fsync = off\nfull_page_writes = off\n"
            };
            let conf = format!(
                "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n{fast}max_connections = 200\nshared_buffers = 32MB\n",
                pg.port,
                pg.dir.path().display()
            );
            std::fs::write(Path::new(&data).join("postgresql.auto.conf"), conf).expect("conf");
            let log = pg.dir.path().join("log").display().to_string();
            if pg.try_run(
                "pg_ctl",
                &["-D", &data, "-l", &log, "-w", "-t", "60", "start"],
            ) {
                pg.watchdog();
                return pg;
            }
        }
        let log = std::fs::read_to_string(pg.dir.path().join("log")).unwrap_or_default();
        panic!("PostgreSQL did not start:\n{log}");
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args).stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid).env("HOME", self.dir.path());
        }
        cmd
    }

    fn try_run(&self, program: &str, args: &[&str]) -> bool {
        let out = self.command(program, args).output().expect(program);
        if !out.status.success() {
            eprintln!(
                "{program} {args:?}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.status.success()
    }

    fn run(&self, program: &str, args: &[&str]) {
        assert!(self.try_run(program, args), "{program} failed");
    }

    /// Stops the cluster and removes its directory if this test process dies without dropping
    /// it (the binary's [`shared`] cluster, a static, always does). It runs as this process's
    /// user: it stops the postmaster by signal (SIGQUIT: immediate shutdown), which needs no
    /// `pg_ctl` as the cluster's owner, and may remove the directory this process made.
    fn watchdog(&self) {
        let data = self.data();
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; \
             master=$(head -1 '{data}/postmaster.pid' 2>/dev/null); \
             [ -n \"$master\" ] && kill -QUIT \"$master\" 2>/dev/null; \
             for _ in $(seq 100); do [ -n \"$master\" ] && [ -d /proc/$master ] || break; sleep 0.1; done; \
             rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.path().display(),
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
    }

    /// The URL of `database` (no password: trust).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A new empty database, by its URL.
    pub fn database(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        self.psql(&format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Run `sql` in the `postgres` database; its output.
    pub fn psql(&self, sql: &str) -> String {
        let psql = self.bin.join("psql");
        let out = Command::new(&psql)
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
            ])
            .arg(self.port.to_string())
            .args(["-d", "postgres", "-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Run `sql` in the database of `url`.
    pub fn psql_in(&self, url: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                url,
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn nix_is_root() -> bool {
    // SAFETY-free: geteuid through /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl", &["-D", &data, "stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One cluster for the whole test binary, started on first use (stopped by its watchdog
/// when the binary exits: statics are not dropped).
pub fn shared() -> &'static Postgres {
    static CLUSTER: OnceLock<Postgres> = OnceLock::new();
    CLUSTER.get_or_init(Postgres::start)
}

/// Whether the tests run against PostgreSQL (`KCIDEPLOY_TEST_BACKEND=postgres`).
pub fn selected() -> bool {
    std::env::var("KCIDEPLOY_TEST_BACKEND").is_ok_and(|v| v == "postgres")
}
