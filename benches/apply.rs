//! Apply benchmark, each figure side by side with its reference in the same run (issue #20):
//! (a) apply of a binary-tree DAG of `true` steps (step i needs step (i-1)/2), parallelism
//!     10, against Terraform (`terraform_data` + `local-exec "true"`, same dependencies) and
//!     against `xargs -P10` running as many `true` processes;
//! (s) what the apply wrote to its state files and journal, and its syncs (one more run under
//!     `strace`, not timed);
//! (b) the no-op plan of the same, against `terraform plan` (up to
//!     `KCD_BENCH_TERRAFORM_PLAN_MAX` steps, 1000: above `KCD_BENCH_TERRAFORM_MAX`, Terraform
//!     applies once, untimed, so that its plan has the state to compare with);
//! (c) wall time / critical path for a DAG of `sleep` steps.
//!
//! `cargo bench --bench apply`; sizes and runs from the environment: `KCD_BENCH_STEPS`
//! ("200", a list such as "200 1000 5000"), `KCD_BENCH_RUNS` (5), `KCD_BENCH_TERRAFORM_MAX`
//! (200: the largest size Terraform runs at; 0 for none). Needs `git`; `terraform`, `xargs`
//! and `strace` where their figures are wanted (a missing one is said and skipped).
//! `KCD_BENCH_BEFORE=<another kcideploy binary>` measures it too, alternately, as "before".

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod shared;
use shared::{Result, dag_plan, make_repo, median, parent};

/// The kcideploy binaries measured: this build's, and `KCD_BENCH_BEFORE` (another build, e.g.
/// of an older commit) run alternately with it, labelled "before".
fn binaries() -> Vec<(&'static str, PathBuf)> {
    let mut bins = vec![("", PathBuf::from(env!("CARGO_BIN_EXE_kcideploy")))];
    if let Some(before) = std::env::var_os("KCD_BENCH_BEFORE") {
        bins.push((", before", PathBuf::from(before)));
    }
    bins
}

fn kcideploy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kcideploy"))
}

fn run(cmd: &mut Command) -> Result<Duration> {
    let start = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(start.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The plan file and the Terraform configuration of `n` steps.
fn dag(n: usize) -> (String, String) {
    let mut tf = String::new();
    for i in 0..n {
        let depends = parent(i)
            .map(|p| format!("  depends_on = [terraform_data.s{p}]\n"))
            .unwrap_or_default();
        tf.push_str(&format!(
            "resource \"terraform_data\" \"s{i}\" {{\n{depends}  provisioner \"local-exec\" {{\n    command = \"true\"\n  }}\n}}\n"
        ));
    }
    (dag_plan(n), tf)
}

const STATE: &str = ".kcideploy/bench.state.json";

fn apply_cmd(k: &Path, bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(k).args([
        "apply",
        "-f",
        "plan.yaml",
        "-auto-approve",
        "--cycle",
        "full",
        "-parallelism",
        "10",
    ]);
    cmd
}

/// A fresh start for the next apply: no state (its step logs stay, as they would).
fn forget_state(k: &Path) {
    for suffix in ["", ".backup", ".journal"] {
        let _ = std::fs::remove_file(k.join(format!("{STATE}{suffix}")));
    }
}

/// One size's timings (medians).
struct Sized {
    n: usize,
    /// Per binary of [`binaries`]: the label, the apply, what it wrote, its no-op plan.
    kcideploy: Vec<(&'static str, Duration, Option<Written>, Option<Duration>)>,
    xargs: Option<Duration>,
    terraform: Option<Duration>,
    terraform_plan: Option<Duration>,
}

fn one_size(dir: &Path, n: usize, runs: usize, tf_max: (usize, usize)) -> Result<Sized> {
    let (tf_max, tf_plan_max) = tf_max;
    let k = dir.join(format!("k{n}"));
    let t = dir.join(format!("t{n}"));
    std::fs::create_dir_all(&k)?;
    std::fs::create_dir_all(&t)?;
    make_repo(&k)?;
    let (plan, tf) = dag(n);
    std::fs::write(k.join("plan.yaml"), &plan)?;
    let terraform = n <= tf_max && has("terraform");
    let terraform_plan = n <= tf_max.max(tf_plan_max) && has("terraform");
    if terraform_plan {
        std::fs::write(t.join("main.tf"), &tf)?;
        run(Command::new("terraform")
            .current_dir(&t)
            .args(["init", "-input=false"]))?;
    }
    let xargs = has("xargs");
    let bins = binaries();
    let mut k_apply = vec![Vec::new(); bins.len()];
    let (mut x_apply, mut t_apply) = (Vec::new(), Vec::new());
    // Alternating, so that a busy moment of the machine falls on all of them alike.
    for _ in 0..runs {
        for ((_, bin), times) in bins.iter().zip(&mut k_apply) {
            forget_state(&k);
            times.push(run(&mut apply_cmd(&k, bin))?);
        }
        if xargs {
            x_apply.push(run(
                Command::new("sh").args(["-c", &format!("seq {n} | xargs -n1 -P10 true")])
            )?);
        }
        if terraform {
            for f in ["terraform.tfstate", "terraform.tfstate.backup"] {
                let _ = std::fs::remove_file(t.join(f));
            }
            t_apply.push(run(Command::new("terraform").current_dir(&t).args([
                "apply",
                "-auto-approve",
                "-input=false",
                "-parallelism=10",
            ]))?);
        }
    }
    let mut kcideploy = Vec::new();
    for ((label, bin), times) in bins.iter().zip(k_apply) {
        let w = has("strace").then(|| written(&k, bin)).transpose()?;
        kcideploy.push((*label, median(times), w, None));
    }
    let mut terraform_plan_time = None;
    if terraform_plan {
        if !terraform {
            // Its plan needs a state; this apply is not one of the figures.
            run(Command::new("terraform").current_dir(&t).args([
                "apply",
                "-auto-approve",
                "-input=false",
                "-parallelism=10",
            ]))?;
        }
        let (ours, theirs) = noop_plans(&k, &t, &bins, runs)?;
        for (k, p) in kcideploy.iter_mut().zip(ours) {
            k.3 = Some(p);
        }
        terraform_plan_time = Some(theirs);
    }
    Ok(Sized {
        n,
        kcideploy,
        xargs: xargs.then(|| median(x_apply)),
        terraform: terraform.then(|| median(t_apply)),
        terraform_plan: terraform_plan_time,
    })
}

/// (b) the no-op plan after an apply: medians of each binary's and Terraform's.
fn noop_plans(
    k: &Path,
    t: &Path,
    bins: &[(&str, PathBuf)],
    runs: usize,
) -> Result<(Vec<Duration>, Duration)> {
    let (mut kp, mut tp) = (vec![Vec::new(); bins.len()], Vec::new());
    for _ in 0..runs {
        // Three of kcideploy's (about 10 ms each, so more noise) per Terraform plan.
        for _ in 0..3 {
            for ((_, bin), times) in bins.iter().zip(&mut kp) {
                times.push(run(Command::new(bin).current_dir(k).args([
                    "plan",
                    "-f",
                    "plan.yaml",
                    "--cycle",
                    "partial",
                ]))?);
            }
        }
        tp.push(run(Command::new("terraform").current_dir(t).args([
            "plan",
            "-input=false",
            "-parallelism=10",
            "-detailed-exitcode",
        ]))?);
    }
    Ok((kp.into_iter().map(median).collect(), median(tp)))
}

/// What one apply wrote, from `strace -y` (bytes of `write` to each file).
struct Written {
    /// The state file, its backup and their temporary files.
    state: u64,
    journal: u64,
    /// The state file after the apply.
    final_size: u64,
    syncs: u64,
}

fn written(k: &Path, bin: &Path) -> Result<Written> {
    forget_state(k);
    let trace = k.join("strace.out");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-y", "-e", "trace=write,fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(bin)
        .current_dir(k)
        .args([
            "apply",
            "-f",
            "plan.yaml",
            "-auto-approve",
            "--cycle",
            "full",
            "-parallelism",
            "10",
        ]);
    run(&mut cmd)?;
    let text = std::fs::read_to_string(&trace)?;
    let _ = std::fs::remove_file(&trace);
    let mut w = Written {
        state: 0,
        journal: 0,
        final_size: std::fs::metadata(k.join(STATE))?.len(),
        syncs: 0,
    };
    for line in text.lines() {
        // `<pid> write(<fd><path>, "..."..., <len>) = <written>`
        let Some(call) = line.split_whitespace().nth(1) else {
            continue;
        };
        if call.starts_with("fsync(") || call.starts_with("fdatasync(") {
            w.syncs += 1;
            continue;
        }
        let Some(rest) = call.strip_prefix("write(") else {
            continue;
        };
        let path = rest.split_once('<').and_then(|(_, p)| p.split_once('>'));
        let bytes: u64 = line
            .rsplit_once("= ")
            .and_then(|(_, n)| n.trim().parse().ok())
            .unwrap_or(0);
        match path {
            Some((p, _)) if p.ends_with(".journal") => w.journal += bytes,
            Some((p, _)) if p.contains("/.kcideploy/") && !p.contains("/.kcideploy/runs/") => {
                w.state += bytes
            }
            _ => {}
        }
    }
    Ok(w)
}

/// (c) 31 `sleep` steps in a binary tree, durations 100-400 ms, enough parallelism: wall time
/// and critical path.
fn sleeps(dir: &Path) -> Result<(Duration, Duration)> {
    let k = dir.join("sleep");
    std::fs::create_dir_all(&k)?;
    make_repo(&k)?;
    let sleeps: Vec<u64> = (0..31).map(|i| 100 + (i as u64 * 37) % 301).collect();
    let mut plan = String::from(
        "version: 1\nname: sleep\nstate: { path: .kcideploy/sleep.state.json }\nrepos:\n  r: { url: repo.git }\nsteps:\n",
    );
    let mut path_to = vec![0u64; sleeps.len()];
    for (i, s) in sleeps.iter().enumerate() {
        let needs = parent(i)
            .map(|p| format!(", needs: [s{p}]"))
            .unwrap_or_default();
        plan.push_str(&format!(
            "  s{i}: {{ kind: command, always: true{needs}, with: {{ run: [\"sleep\", \"{:.3}\"] }} }}\n",
            *s as f64 / 1000.0
        ));
        path_to[i] = s + parent(i).map(|p| path_to[p]).unwrap_or(0);
    }
    let critical = Duration::from_millis(*path_to.iter().max().unwrap_or(&0));
    std::fs::write(k.join("sleep.yaml"), &plan)?;
    let mut walls = Vec::new();
    for _ in 0..3 {
        let _ = std::fs::remove_file(k.join(".kcideploy/sleep.state.json"));
        walls.push(run(kcideploy().current_dir(&k).args([
            "apply",
            "-f",
            "sleep.yaml",
            "-auto-approve",
            "--cycle",
            "partial",
            "-parallelism",
            "32",
        ]))?);
    }
    Ok((median(walls), critical))
}

fn row(figure: &str, n: usize, ours: f64, reference: &str, theirs: f64, goal: &str) {
    println!(
        "| {figure} | {n} | {ours:.0} ms | {reference} {theirs:.0} ms | {:.3} | {goal} |",
        ours / theirs
    );
}

fn print(sizes: &[Sized], sleep: (Duration, Duration)) {
    println!("| figure | steps | kcideploy | reference | ratio | goal |");
    println!("|---|---|---|---|---|---|");
    for s in sizes {
        for (label, k, _, _) in &s.kcideploy {
            let figure = format!("(a) apply DAG{label}");
            if let Some(t) = s.terraform {
                row(&figure, s.n, ms(*k), "terraform", ms(t), "≤ 0.25");
            }
            if let Some(x) = s.xargs {
                row(&figure, s.n, ms(*k), "xargs -P10", ms(x), "≤ 1.5");
            }
        }
    }
    per_step(sizes);
    for s in sizes {
        for (label, _, w, _) in &s.kcideploy {
            let Some(w) = w else { continue };
            let times = w.state as f64 / w.final_size as f64;
            println!(
                "| (s) written to state during apply{label} | {} | {:.2} MB; journal {:.2} MB; {} syncs | final state {:.0} KB | {times:.1} | ≤ 4 |",
                s.n,
                w.state as f64 / 1e6,
                w.journal as f64 / 1e6,
                w.syncs,
                w.final_size as f64 / 1e3,
            );
        }
    }
    for s in sizes {
        for (label, _, _, p) in &s.kcideploy {
            if let (Some(k), Some(t)) = (p, s.terraform_plan) {
                let figure = format!("(b) no-op plan{label}");
                row(&figure, s.n, ms(*k), "terraform plan", ms(t), "≤ 0.05");
            }
        }
    }
    let (wall, critical) = sleep;
    println!(
        "| (c) 31 sleep steps: wall / critical path | 31 | {:.0} ms | critical path {:.0} ms | {:.3} | ≤ 1.05 |",
        ms(wall),
        ms(critical),
        ms(wall) / ms(critical)
    );
}

/// Per-step apply time at the largest size over that at the smallest.
fn per_step(sizes: &[Sized]) {
    let (Some(first), Some(last)) = (sizes.first(), sizes.last()) else {
        return;
    };
    if last.n <= first.n {
        return;
    }
    for (i, (label, _, _, _)) in first.kcideploy.iter().enumerate() {
        let per = |s: &Sized| ms(s.kcideploy[i].1) / s.n as f64;
        println!(
            "| per-step apply time{label}, {} / {} steps | | {:.2} / {:.2} ms | | {:.2} | ≤ 1.3 |",
            last.n,
            first.n,
            per(last),
            per(first),
            per(last) / per(first)
        );
    }
}

fn main() -> Result<()> {
    let steps: Vec<usize> = env_or("KCD_BENCH_STEPS", "200")
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    let runs: usize = env_or("KCD_BENCH_RUNS", "5").parse()?;
    let tf_max: usize = env_or("KCD_BENCH_TERRAFORM_MAX", "200").parse()?;
    let tf_plan_max: usize = env_or("KCD_BENCH_TERRAFORM_PLAN_MAX", "1000").parse()?;
    for (program, figure) in [
        ("terraform", "(a), (b) against Terraform"),
        ("xargs", "(a) against xargs"),
        ("strace", "(s)"),
    ] {
        if !has(program) {
            println!("no `{program}` on PATH: {figure} left out");
        }
    }
    let dir = tempfile::tempdir()?;
    let mut sizes = Vec::new();
    for n in steps {
        sizes.push(one_size(dir.path(), n, runs, (tf_max, tf_plan_max))?);
    }
    let sleep = sleeps(dir.path())?;
    println!("apply benchmark, medians of {runs} alternating runs");
    print(&sizes, sleep);
    Ok(())
}
