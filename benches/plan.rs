//! Planning benchmark: 40 pending branches of a repo with 3,000 files.
//!
//! Prints the median time of `plan` (merges, diffs, components, steps) and of the fetch,
//! and the ratio against what the staging shell script does: merge each branch with the
//! `git` CLI in a work tree. Run with `cargo bench --bench plan`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use git2::Repository;
use jiff::Timestamp;

use kcideploy::gitops::scratch;
use kcideploy::planner::CycleRequest;
use kcideploy::workspace::{PlanRequest, Workspace};

const FILES: usize = 3000;
const BRANCHES: usize = 40;
const RUNS: usize = 7;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let now = Timestamp::now().as_second();
    let remote = Repository::init_bare(dir.path().join("repos/big.git"))?;
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
    for b in 0..BRANCHES {
        // Every 10th branch conflicts with the one before it.
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
    let plan_path = dir.path().join("plan.yaml");
    std::fs::write(
        &plan_path,
        "version: 1\nname: bench\nstate: { path: .kcideploy/bench.state.json }\nrepos:\n  big: { url: repos/big.git }\ncomponents:\n".to_string()
            + &(0..30)
                .map(|d| {
                    format!(
                        "  c{d}: {{ repo: big, paths: [\"d{d:02}/**\"], exclude: [\"**/*.md\"] }}\n"
                    )
                })
                .collect::<String>()
            + "steps:\n"
            + &(0..30)
                .map(|d| {
                    format!(
                        "  s{d}: {{ kind: command, on: [c{d}], needs: [{}], with: {{ run: [\"true\"] }} }}\n",
                        if d > 0 {
                            format!("s{}", d - 1)
                        } else {
                            String::new()
                        }
                    )
                })
                .collect::<String>(),
    )?;
    let cache = dir.path().join("cache");
    let ws = Workspace::load(&plan_path, Some(&cache)).map_err(|e| format!("{e:?}"))?;
    let request = PlanRequest {
        cycle: CycleRequest::Partial,
        ..Default::default()
    };
    let mut fetch_times = Vec::new();
    let mut plan_times = Vec::new();
    let mut result = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let snapshot = ws.fetch().map_err(|e| format!("{e:?}"))?;
        fetch_times.push(t.elapsed());
        // Staging (the merges) and planning: what the staging script's `git merge` loop does.
        let t = Instant::now();
        let plan = ws.plan(&snapshot, &request).map_err(|e| format!("{e:?}"))?;
        plan_times.push(t.elapsed());
        result = Some(plan);
    }
    let plan = result.ok_or("no run")?;

    // The shell-script way: a work tree, `git merge` of every branch, abort on conflict.
    let mut cli_times = Vec::new();
    for run in 0..3 {
        let wt = dir.path().join(format!("wt{run}"));
        let t = Instant::now();
        git(
            dir.path(),
            &["clone", "-q", "repos/big.git", wt.to_str().ok_or("path")?],
        )?;
        for b in 0..BRANCHES {
            let ok = Command::new("git")
                .current_dir(&wt)
                .args([
                    "-c",
                    "user.name=b",
                    "-c",
                    "user.email=b@x",
                    "merge",
                    "-q",
                    "--no-edit",
                    &format!("origin/pr/{b}"),
                ])
                .output()?
                .status
                .success();
            if !ok {
                git(&wt, &["merge", "--abort"])?;
            }
        }
        cli_times.push(t.elapsed());
    }

    let (fetch, planned, cli) = (median(fetch_times), median(plan_times), median(cli_times));
    println!(
        "plan of {BRANCHES} branches over {FILES} files ({} included, {} excluded, {} steps to run)",
        plan.summary.included, plan.summary.excluded, plan.summary.run
    );
    println!(
        "  fetch (git CLI, warm cache)    median {:>8.1} ms",
        fetch.as_secs_f64() * 1e3
    );
    println!(
        "  plan (merge, diff, steps)      median {:>8.1} ms",
        planned.as_secs_f64() * 1e3
    );
    println!(
        "  git CLI work-tree merges       median {:>8.1} ms",
        cli.as_secs_f64() * 1e3
    );
    println!(
        "  ratio git CLI / plan           {:>8.1}x",
        cli.as_secs_f64() / planned.as_secs_f64()
    );
    println!(
        "  ratio plan / 1 s budget        {:>8.3}",
        planned.as_secs_f64()
    );
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
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
