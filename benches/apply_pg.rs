//! Apply of a binary-tree DAG of `true` steps (step i needs step (i-1)/2, parallelism 10),
//! full cycle, with the local backend (state file and journal) and with PostgreSQL (a
//! throwaway cluster started here, fsync on as in production, on loopback), run
//! alternately; prints the medians and the ratio PostgreSQL / local (goal ≤ 1.5×).
//!
//! `cargo bench --bench apply_pg`; `KCD_BENCH_STEPS` (1000) and `KCD_BENCH_RUNS` (5). Needs
//! `git` and PostgreSQL's `initdb`/`pg_ctl` (see tests/common/postgres.rs).

#[path = "../tests/common/postgres.rs"]
mod postgres;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod shared;
use shared::{Result, dag_plan, make_repo, median};

/// One apply from no state; `backend` is `-backend-config`'s value.
fn apply(dir: &Path, backend: &str) -> Result<Duration> {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kcideploy"))
        .current_dir(dir)
        .args([
            "apply",
            "-f",
            "plan.yaml",
            "-auto-approve",
            "--cycle",
            "full",
            "-parallelism",
            "10",
            "-backend-config",
            backend,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    if !out.status.success() {
        return Err(format!("apply failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(start.elapsed())
}

fn main() -> Result<()> {
    let n: usize = std::env::var("KCD_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let runs: usize = std::env::var("KCD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let pg = postgres::Postgres::start_with(true);
    let dir = tempfile::tempdir()?;
    make_repo(dir.path())?;
    std::fs::write(dir.path().join("plan.yaml"), dag_plan(n))?;
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    // One unmeasured run of each first (the fetch cache, the schema).
    for i in 0..=runs {
        let state = dir.path().join(".kcideploy");
        for suffix in [
            "bench.state.json",
            "bench.state.json.backup",
            "bench.state.json.journal",
        ] {
            let _ = std::fs::remove_file(state.join(suffix));
        }
        let l = apply(dir.path(), "local")?;
        let r = apply(dir.path(), &pg.database())?;
        if i > 0 {
            local.push(l);
            remote.push(r);
        }
    }
    let (l, r) = (median(local), median(remote));
    println!(
        "| apply of {n} steps (median of {runs}) | local backend | PostgreSQL backend | ratio | goal |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| binary-tree DAG, parallelism 10 | {:.0} ms | {:.0} ms | {:.2}× | ≤ 1.5× |",
        l.as_secs_f64() * 1e3,
        r.as_secs_f64() * 1e3,
        r.as_secs_f64() / l.as_secs_f64()
    );
    Ok(())
}
