//! What the apply benchmarks share: the bench repo, the binary-tree DAG plan, medians.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

pub fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let ok = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=b", "-c", "user.email=b@x"])
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

/// A local repo `repo.git` in `dir` for the plan file to name (steps do not depend on it).
pub fn make_repo(dir: &Path) -> Result<()> {
    let work = dir.join("work");
    std::fs::create_dir_all(&work)?;
    git(&work, &["init", "-q", "-b", "main"])?;
    std::fs::write(work.join("README"), "bench\n")?;
    git(&work, &["add", "README"])?;
    git(&work, &["commit", "-q", "-m", "init"])?;
    git(dir, &["clone", "-q", "--bare", "work", "repo.git"])?;
    Ok(())
}

/// The step step `i` needs in the binary tree: `(i - 1) / 2`.
pub fn parent(i: usize) -> Option<usize> {
    (i > 0).then(|| (i - 1) / 2)
}

/// The plan file of `n` full-cycle `always` steps running `true` in a binary tree, so that a
/// full cycle runs all and a partial none.
pub fn dag_plan(n: usize) -> String {
    let mut plan = String::from(
        "version: 1\nname: bench\nstate: { path: .kcideploy/bench.state.json }\nrepos:\n  r: { url: repo.git }\nsteps:\n",
    );
    for i in 0..n {
        let needs = parent(i)
            .map(|p| format!(", needs: [s{p}]"))
            .unwrap_or_default();
        plan.push_str(&format!(
            "  s{i}: {{ kind: command, cycle: full, always: true{needs}, with: {{ run: [\"true\"] }} }}\n"
        ));
    }
    plan
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
