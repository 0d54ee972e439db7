//! Planning benchmark: pending branches of a repo with 3,000 files (40, or each count of
//! `KCD_BENCH_BRANCHES`, e.g. "10 40 160").
//!
//! Prints the median time of `plan` (merges, diffs, components, steps) with nothing staged
//! before (the merges remembered in the cache removed), and of the fetch, and the ratio
//! against what the staging shell script does: merge each branch with the `git` CLI in a
//! work tree (`git merge --no-ff`, as pending.py); then the re-plan after one new branch
//! (a new commit each run) on top of those, with the merges of the others remembered; and the
//! peak RSS of the `kcideploy plan` command with nothing remembered (once per size). Run
//! with `cargo bench --bench plan`; `KCD_BENCH_RUNS` sets the runs (7).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use git2::Repository;
use jiff::Timestamp;

use kcideploy::gitops::scratch;
use kcideploy::planner::CycleRequest;
use kcideploy::workspace::{PlanRequest, Workspace};

const FILES: usize = 3000;
const RUNS: usize = 7;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A repo of [`FILES`] files and `branches` branches `pr/<n>` of three edits each (every
/// 10th conflicts with the one before it), and a plan of 30 components and 30 chained steps.
fn make(dir: &Path, branches: usize) -> Result<std::path::PathBuf> {
    let now = Timestamp::now().as_second();
    let remote = Repository::init_bare(dir.join("repos/big.git"))?;
    let contents: Vec<(String, String)> = (0..FILES)
        .map(|i| {
            (
                format!("d{:02}/f{i:04}.yaml", i % 30),
                format!("key: {i}\nvalue: {}\n", i * 7),
            )
        })
        .collect();
    let edits: Vec<(&str, Option<&str>)> = contents
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    let main = scratch::commit(
        &remote,
        None,
        &edits,
        ("A", "a@example.org"),
        now - 86_400,
        "base",
    )?;
    scratch::set_branch(&remote, "main", main)?;
    for b in 0..branches {
        let target = if b % 10 == 9 { b - 1 } else { b };
        let files = [
            format!("d{:02}/f{:04}.yaml", target % 30, target),
            format!("d{:02}/f{:04}.yaml", (b + 7) % 30, (b * 61 + 7) % FILES),
            format!("d{:02}/new-{b}.yaml", b % 30),
        ];
        let text = format!("key: changed by {b}\n");
        let e: Vec<(&str, Option<&str>)> = files
            .iter()
            .map(|p| (p.as_str(), Some(text.as_str())))
            .collect();
        let head = scratch::commit(
            &remote,
            Some(main),
            &e,
            ("A", "a@example.org"),
            now - 3600,
            "change",
        )?;
        scratch::set_branch(&remote, &format!("pr/{b}"), head)?;
    }
    let plan_path = dir.join("plan.yaml");
    let components: String = (0..30)
        .map(|d| {
            format!("  c{d}: {{ repo: big, paths: [\"d{d:02}/**\"], exclude: [\"**/*.md\"] }}\n")
        })
        .collect();
    let steps: String = (0..30)
        .map(|d| {
            let needs = if d > 0 { format!("s{}", d - 1) } else { String::new() };
            format!("  s{d}: {{ kind: command, on: [c{d}], needs: [{needs}], with: {{ run: [\"true\"] }} }}\n")
        })
        .collect();
    std::fs::write(
        &plan_path,
        format!(
            "version: 1\nname: bench\nstate: {{ path: .kcideploy/bench.state.json }}\nrepos:\n  big: {{ url: repos/big.git }}\ncomponents:\n{components}steps:\n{steps}"
        ),
    )?;
    Ok(plan_path)
}

/// The shell-script way: in a work tree (cloned beforehand, not timed), `git merge --no-ff`
/// of every branch, aborted on a conflict.
fn git_merges(dir: &Path, wt: &Path, branches: usize) -> Result<Duration> {
    let path = wt.to_str().ok_or("path")?;
    git(dir, &["clone", "-q", "-b", "main", "repos/big.git", path])?;
    let t = Instant::now();
    for b in 0..branches {
        let ok = Command::new("git")
            .current_dir(wt)
            .args(["-c", "user.name=b", "-c", "user.email=b@x"])
            .args(["merge", "-q", "--no-ff", "--no-edit"])
            .arg(format!("origin/pr/{b}"))
            .output()?
            .status
            .success();
        if !ok {
            git(wt, &["merge", "--abort"])?;
        }
    }
    let took = t.elapsed();
    std::fs::remove_dir_all(wt)?;
    Ok(took)
}

struct Row {
    branches: usize,
    included: usize,
    fetch: Duration,
    plan: Duration,
    git: Duration,
    replan: Duration,
    /// Peak RSS of the `kcideploy plan` command with nothing remembered, in KB.
    rss: Option<u64>,
}

/// A new branch `pr/<n>` on top of main, with a commit no run made before.
fn new_branch(dir: &Path, n: usize) -> Result<()> {
    let remote = Repository::open_bare(dir.join("repos/big.git"))?;
    let main = remote.refname_to_id("refs/heads/main")?;
    let path = format!("d{:02}/late-{n}.yaml", n % 30);
    let text = format!("late: {n}\n");
    let head = scratch::commit(
        &remote,
        Some(main),
        &[(path.as_str(), Some(text.as_str()))],
        ("A", "a@example.org"),
        Timestamp::now().as_second() - 3600,
        "late change",
    )?;
    scratch::set_branch(&remote, &format!("pr/{n}"), head)?;
    Ok(())
}

fn one(branches: usize, runs: usize) -> Result<Row> {
    let dir = tempfile::tempdir()?;
    let plan_path = make(dir.path(), branches)?;
    let cache = dir.path().join("cache");
    let ws = Workspace::load(&plan_path, Some(&cache)).map_err(|e| format!("{e:?}"))?;
    let request = PlanRequest {
        cycle: CycleRequest::Partial,
        ..Default::default()
    };
    let (mut fetch_times, mut plan_times, mut cli_times) = (Vec::new(), Vec::new(), Vec::new());
    let mut replan_times = Vec::new();
    let mut included = 0;
    // Alternating, so that a busy moment of the machine falls on both alike.
    for run in 0..runs {
        let t = Instant::now();
        let snapshot = ws.fetch().map_err(|e| format!("{e:?}"))?;
        fetch_times.push(t.elapsed());
        // Staging (the merges) and planning: what the staging script's `git merge` loop does.
        // Nothing remembered from the run before.
        let _ = std::fs::remove_file(cache.join("big.git").join(kcideploy::gitops::memo::FILE));
        let t = Instant::now();
        let plan = ws.plan(&snapshot, &request).map_err(|e| format!("{e:?}"))?;
        plan_times.push(t.elapsed());
        included = plan.summary.included;
        // One more branch, pushed after that plan: the re-plan merges it alone.
        let late = branches + 1 + run;
        new_branch(dir.path(), late)?;
        let snapshot = ws.fetch().map_err(|e| format!("{e:?}"))?;
        let t = Instant::now();
        ws.plan(&snapshot, &request).map_err(|e| format!("{e:?}"))?;
        replan_times.push(t.elapsed());
        scratch::delete_branch(
            &Repository::open_bare(dir.path().join("repos/big.git"))?,
            &format!("pr/{late}"),
        )?;
        let wt = dir.path().join(format!("wt{run}"));
        cli_times.push(git_merges(dir.path(), &wt, branches)?);
    }
    let _ = std::fs::remove_file(cache.join("big.git").join(kcideploy::gitops::memo::FILE));
    let rss = peak_rss(&plan_path, &cache)?;
    Ok(Row {
        branches,
        included,
        rss,
        fetch: median(fetch_times),
        plan: median(plan_times),
        git: median(cli_times),
        replan: median(replan_times),
    })
}

/// Peak RSS (KB) of `kcideploy plan` on the bench's plan file: python3's `ru_maxrss` of its
/// only child (`None` without python3).
fn peak_rss(plan: &Path, cache: &Path) -> Result<Option<u64>> {
    let script = "import resource, subprocess, sys\n\
        r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n\
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if r.returncode == 0 else -1)";
    let Ok(out) = Command::new("python3")
        .args(["-c", script, env!("CARGO_BIN_EXE_kcideploy"), "plan", "-f"])
        .arg(plan)
        .arg("--cache-dir")
        .arg(cache)
        .output()
    else {
        return Ok(None);
    };
    let kb: i64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    if kb < 0 {
        return Err("kcideploy plan failed".into());
    }
    Ok(Some(kb as u64))
}

fn main() -> Result<()> {
    let counts: Vec<usize> = std::env::var("KCD_BENCH_BRANCHES")
        .unwrap_or_else(|_| "40".into())
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    let runs = match std::env::var("KCD_BENCH_RUNS") {
        Ok(r) => r.parse()?,
        Err(_) => RUNS,
    };
    let rows = counts
        .into_iter()
        .map(|b| one(b, runs))
        .collect::<Result<Vec<_>>>()?;
    println!(
        "plan benchmark: pending branches over {FILES} files, medians of {runs} alternating runs"
    );
    println!(
        "| branches (merged) | kcideploy plan | fetch, warm cache | `git merge --no-ff` each in a work tree | ratio plan / git | goal | re-plan after one more branch | goal | peak RSS of `kcideploy plan` | goal |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} ({}) | {:.0} ms | {:.0} ms | {:.0} ms | {:.3} | ≤ 0.1 | {:.0} ms | ≤ 100 ms | {} | ≤ 50 MB |",
            r.branches,
            r.included,
            ms(r.plan),
            ms(r.fetch),
            ms(r.git),
            ms(r.plan) / ms(r.git),
            ms(r.replan),
            r.rss
                .map(|kb| format!("{:.1} MB", kb as f64 / 1024.0))
                .unwrap_or_else(|| "no python3".into()),
        );
    }
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()?
        .status;
    if status.success() {
        Ok(())
    } else {
        Err(format!("git {args:?} failed").into())
    }
}
