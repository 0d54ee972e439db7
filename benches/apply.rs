//! Apply benchmark against Terraform, printing ratios measured in one run:
//! (a) a 200-step DAG of `true` commands (step i needs step (i-1)/2), parallelism 10, against
//!     Terraform `terraform_data` resources with `local-exec "true"`, same dependencies;
//! (b) the no-op plan of the same, against `terraform plan`;
//! (c) wall time / critical path for a DAG of `sleep` steps.
//! Run with `cargo bench --bench apply` (needs `terraform` and `git` on PATH).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: usize = 200;
const RUNS: usize = 5;

fn kcideploy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kcideploy"))
}

fn run(cmd: &mut Command) -> Result<Duration, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(start.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn git(dir: &Path, args: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let ok = Command::new("git")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .status()?
        .success();
    if ok {
        Ok(())
    } else {
        Err(format!("git {args:?} failed").into())
    }
}

/// A local repo for the plan file to name (steps do not depend on it).
fn make_repo(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let work = dir.join("work");
    std::fs::create_dir_all(&work)?;
    git(&work, &["init", "-q", "-b", "main"])?;
    std::fs::write(work.join("README"), "bench\n")?;
    git(&work, &["add", "README"])?;
    git(
        &work,
        &[
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@x",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    )?;
    git(dir, &["clone", "-q", "--bare", "work", "repo.git"])?;
    Ok(())
}

fn parent(i: usize) -> Option<usize> {
    (i > 0).then(|| (i - 1) / 2)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let k = dir.path().join("k");
    let t = dir.path().join("t");
    std::fs::create_dir_all(&k)?;
    std::fs::create_dir_all(&t)?;
    make_repo(&k)?;

    // kcideploy: full-cycle `always` steps, so a full cycle runs all and a partial none.
    let mut plan = String::from(
        "version: 1\nname: bench\nstate: { path: .kcideploy/bench.state.json }\nrepos:\n  r: { url: repo.git }\nsteps:\n",
    );
    let mut tf = String::new();
    for i in 0..STEPS {
        let needs = parent(i)
            .map(|p| format!(", needs: [s{p}]"))
            .unwrap_or_default();
        plan.push_str(&format!(
            "  s{i}: {{ kind: command, cycle: full, always: true{needs}, with: {{ run: [\"true\"] }} }}\n"
        ));
        let depends = parent(i)
            .map(|p| format!("  depends_on = [terraform_data.s{p}]\n"))
            .unwrap_or_default();
        tf.push_str(&format!(
            "resource \"terraform_data\" \"s{i}\" {{\n{depends}  provisioner \"local-exec\" {{\n    command = \"true\"\n  }}\n}}\n"
        ));
    }
    std::fs::write(k.join("plan.yaml"), &plan)?;
    std::fs::write(t.join("main.tf"), &tf)?;
    run(Command::new("terraform")
        .current_dir(&t)
        .args(["init", "-input=false"]))?;

    let state = k.join(".kcideploy/bench.state.json");
    let mut k_apply = Vec::new();
    let mut t_apply = Vec::new();
    for _ in 0..RUNS {
        let _ = std::fs::remove_file(&state);
        let _ = std::fs::remove_dir_all(k.join(".kcideploy/runs"));
        k_apply.push(run(kcideploy().current_dir(&k).args([
            "apply",
            "-f",
            "plan.yaml",
            "-auto-approve",
            "--cycle",
            "full",
            "-parallelism",
            "10",
        ]))?);
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
    let mut k_plan = Vec::new();
    let mut t_plan = Vec::new();
    for _ in 0..RUNS {
        k_plan.push(run(kcideploy().current_dir(&k).args([
            "plan",
            "-f",
            "plan.yaml",
            "--cycle",
            "partial",
        ]))?);
        t_plan.push(run(Command::new("terraform").current_dir(&t).args([
            "plan",
            "-input=false",
            "-parallelism=10",
            "-detailed-exitcode",
        ]))?);
    }

    // (c) sleep steps: 31 steps in a binary tree, durations 100-400 ms, enough parallelism.
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
    // The time to start kcideploy and plan, which the critical path does not include.
    let overhead = median(k_plan.clone());

    let (ka, ta, kp, tp, wall) = (
        median(k_apply),
        median(t_apply),
        median(k_plan),
        median(t_plan),
        median(walls),
    );
    println!("apply benchmark, medians of {RUNS} runs");
    println!("(a) {STEPS}-step DAG apply, parallelism 10");
    println!(
        "    kcideploy {:>8.1} ms   terraform {:>8.1} ms   ratio {:.3} (goal <= 0.25)",
        ms(ka),
        ms(ta),
        ms(ka) / ms(ta)
    );
    println!("(b) no-op plan of the same");
    println!(
        "    kcideploy {:>8.1} ms   terraform {:>8.1} ms   ratio {:.3} (goal <= 0.1)",
        ms(kp),
        ms(tp),
        ms(kp) / ms(tp)
    );
    println!("(c) 31 sleep steps, critical path {:.0} ms", ms(critical));
    println!(
        "    wall {:>8.1} ms   wall / critical path {:.3} (goal <= 1.05); without the plan's {:.0} ms: {:.3}",
        ms(wall),
        ms(wall) / ms(critical),
        ms(overhead),
        (ms(wall) - ms(overhead)) / ms(critical)
    );
    Ok(())
}
