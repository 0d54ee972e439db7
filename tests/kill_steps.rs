//! kill -9 an apply at random moments while its command steps run, then apply again at once,
//! as systemd or an operator would. Each step logs its start, a few ticks (from a child
//! process, so a step is a tree, not one process) and its end, with its phase, pid and run.
//! Over the trials: the state always parses, no step is lost, no step of the second apply
//! starts while a process of the killed one still runs, and a step that had finished is run
//! again in at most one trial in ten (only a kill in the instant between its exit and its
//! record may do that). The counts are printed; `bench/kill-steps.sh` runs 50 trials.
//!
//! `KCD_KILL_TRIALS` sets the number of trials (20), `KCD_KILL_SEED` replays a seed,
//! `KCD_KILL_BIN` runs another kcideploy binary (an older one, to compare).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kcideploy::state::Backend;

/// s0, then s1..s3 (each needing s0), then s4..s7 (each needing one of s1..s3).
const STEPS: usize = 8;
/// Ticks per step, 30 ms apart.
const TICKS: usize = 8;
/// Log lines of a whole run: start, ticks and end of each step.
const LINES: usize = STEPS * (TICKS + 2);
/// When processes left by the killed apply are counted.
const ORPHAN_CHECK: Duration = Duration::from_millis(100);
/// The ceiling for anything to happen (generous: a loaded machine is only slower).
const PATIENCE: Duration = Duration::from_secs(60);

/// What every step runs (`sh step.sh`, so the shell is the step's process). In the second
/// apply it first looks for processes of the killed one (by their environment) and logs
/// `overlap` for each.
const STEP_SH: &str = r#"me="$KCD_PHASE $KCIDEPLOY_STEP $$ $KCIDEPLOY_RUN_ID"
echo "start $me" >> steps.log
if [ "$KCD_PHASE" = rerun ]; then
  for f in $(grep -lsaz "^KCD_TRIAL=$KCD_TRIAL\$" /proc/[0-9]*/environ); do
    if grep -qsaz '^KCD_PHASE=crash$' "$f"; then echo "overlap $me $f" >> steps.log; fi
  done
fi
( i=0; while [ $i -lt TICKS ]; do echo "tick $me" >> steps.log; sleep 0.03; i=$((i+1)); done ) &
wait
echo "end $me" >> steps.log
"#;

fn plan_text() -> String {
    let mut text =
        String::from("version: 1\nname: kill\nrepos:\n  pipe: { url: repos/pipe.git }\nsteps:\n");
    for i in 0..STEPS {
        let needs = match i {
            0 => String::new(),
            1..=3 => ", needs: [s0]".to_string(),
            _ => format!(", needs: [s{}]", 1 + i % 3),
        };
        text.push_str(&format!(
            "  s{i}: {{ kind: command, always: true{needs}, with: {{ pass_env: [KCD_PHASE, KCD_TRIAL], run: [sh, step.sh] }} }}\n"
        ));
    }
    text
}

/// The binary under test; `KCD_KILL_BIN` names another (the bench measures a release's).
fn apply(plan: &Path, phase: &str, trial: &str) -> Command {
    let bin = std::env::var_os("KCD_KILL_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| assert_cmd::cargo::cargo_bin("kcideploy"));
    let mut cmd = Command::new(bin);
    cmd.args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
        .arg(plan)
        .env("NO_COLOR", "1")
        .env("KCD_PHASE", phase)
        .env("KCD_TRIAL", trial)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// One line of steps.log: `event phase step pid run [...]`.
struct Line {
    event: String,
    phase: String,
    step: String,
    run: String,
}

fn log_lines(dir: &Path) -> Vec<Line> {
    std::fs::read_to_string(dir.join("steps.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(Line {
                event: w.next()?.to_string(),
                phase: w.next()?.to_string(),
                step: w.next()?.to_string(),
                run: w.nth(1)?.to_string(),
            })
        })
        .collect()
}

/// Processes of the killed apply: their environment holds `KCD_TRIAL=<trial>` and
/// `KCD_PHASE=crash`.
fn processes_of(trial: &str) -> usize {
    let marker = format!("KCD_TRIAL={trial}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
            let has = |v: &[u8]| environ.split(|b| *b == 0).any(|e| e == v);
            has(marker.as_bytes()) && has(b"KCD_PHASE=crash")
        })
        .count()
}

/// A small xorshift generator: the kill moments, replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What one trial found.
#[derive(Default)]
struct Found {
    orphans: usize,
    /// Steps the second apply started while a process of the killed one ran.
    overlapping: BTreeSet<String>,
    /// Steps that ended in the killed apply and started again.
    repeated: BTreeSet<String>,
    /// Steps that never ended, or a second apply that did not finish the run.
    lost: Vec<String>,
    /// The state did not parse after the kill.
    corrupt: Option<String>,
}

/// Kill `child` once steps.log has `k` lines, `delay` later (or when it ends by itself).
fn kill_at(child: &mut Child, dir: &Path, k: usize, delay: Duration) {
    let start = Instant::now();
    while log_lines(dir).len() < k && start.elapsed() < PATIENCE {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(delay);
    let _ = child.kill();
    let _ = child.wait();
}

fn trial(trial: &str, k: usize, delay: Duration) -> Found {
    let fx = Fixture::new();
    fx.repo("pipe", &[("a", Some("a\n"))]);
    let plan = fx.plan_file(&plan_text());
    std::fs::write(
        fx.path().join("step.sh"),
        STEP_SH.replace("TICKS", &TICKS.to_string()),
    )
    .expect("step.sh");
    let mut found = Found::default();
    let mut crash = apply(&plan, "crash", trial).spawn().expect("apply");
    kill_at(&mut crash, fx.path(), k, delay);
    let killed_at = Instant::now();

    let backend = fx.backend("kill");
    if let Err(e) = backend.read() {
        found.corrupt = Some(e.to_string());
        return found;
    }
    // The second apply starts at once; the orphans are counted meanwhile.
    let rerun = apply(&plan, "rerun", trial)
        .stderr(Stdio::piped())
        .spawn()
        .expect("rerun");
    std::thread::sleep(ORPHAN_CHECK.saturating_sub(killed_at.elapsed()));
    found.orphans = processes_of(trial);
    let out = rerun.wait_with_output().expect("rerun");
    if !out.status.success() {
        found.lost.push(format!(
            "the second apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // A process of the killed apply may outlive even the second one: wait for it to end so
    // the log is complete (and kill it, so no trial leaves one behind).
    let start = Instant::now();
    while processes_of(trial) > 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    judge(&log_lines(fx.path()), &backend, &mut found);
    found
}

/// Compare the log and the final state.
fn judge(lines: &[Line], backend: &Backend, found: &mut Found) {
    let mut rerun_started = BTreeSet::new();
    let mut crash_ended = BTreeSet::new();
    let mut ended = BTreeSet::new();
    for l in lines {
        match (l.event.as_str(), l.phase.as_str()) {
            ("overlap", _) => {
                found.overlapping.insert(l.step.clone());
            }
            // Run again within the same (resumed) run: a new run runs `always` steps again.
            ("start", "rerun") => {
                if crash_ended.contains(&(l.step.clone(), l.run.clone())) {
                    found.repeated.insert(l.step.clone());
                }
                rerun_started.insert(l.step.clone());
            }
            // A process of the killed apply logging after the second one started the step.
            (_, "crash") if rerun_started.contains(&l.step) => {
                found.overlapping.insert(l.step.clone());
            }
            ("end", "crash") => {
                crash_ended.insert((l.step.clone(), l.run.clone()));
            }
            _ => {}
        }
        if l.event == "end" {
            ended.insert(l.step.clone());
        }
    }
    let state = backend.read().ok().flatten();
    let results: BTreeMap<String, String> = state
        .iter()
        .flat_map(|s| &s.steps)
        .map(|(n, r)| (n.clone(), r.result.to_string()))
        .collect();
    for i in 0..STEPS {
        let step = format!("s{i}");
        if !ended.contains(&step) || results.get(&step).map(String::as_str) != Some("success") {
            found.lost.push(step);
        }
    }
    if state.is_none_or(|s| s.current_run.is_some()) {
        found.lost.push("the run is not finished".into());
    }
}

#[test]
fn kill_9_at_random_moments_then_apply_again() {
    let trials: usize = std::env::var("KCD_KILL_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let seed = std::env::var("KCD_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            u64::from_str_radix(&kcideploy::support::random_hex::<8>(), 16).unwrap_or(1) | 1
        });
    println!("seed {seed} (KCD_KILL_SEED replays it)");
    let mut rng = Rng(seed);
    let mut counts = BTreeMap::<&str, usize>::new();
    let mut failures = Vec::new();
    for n in 0..trials {
        let k = 1 + rng.below(LINES as u64) as usize;
        let delay = Duration::from_millis(rng.below(30));
        let id = format!("{}-{n}", std::process::id());
        let found = trial(&id, k, delay);
        let what = format!("trial {n} (kill after {k} lines + {delay:?})");
        for (name, hit) in [
            ("orphans", found.orphans > 0),
            ("overlapping", !found.overlapping.is_empty()),
            ("repeated", !found.repeated.is_empty()),
            ("lost", !found.lost.is_empty()),
            ("corrupt", found.corrupt.is_some()),
        ] {
            *counts.entry(name).or_default() += usize::from(hit);
        }
        println!(
            "{what}: {} orphans, overlapping {:?}, repeated {:?}, lost {:?}",
            found.orphans, found.overlapping, found.repeated, found.lost
        );
        if let Some(e) = &found.corrupt {
            failures.push(format!("{what}: the state does not parse: {e}"));
        }
        if !found.lost.is_empty() {
            failures.push(format!("{what}: lost {:?}", found.lost));
        }
        if !found.overlapping.is_empty() {
            failures.push(format!(
                "{what}: started {:?} while the killed apply's copy ran",
                found.overlapping
            ));
        }
    }
    println!(
        "kill -9 trials: {trials}; processes left {} ms after the kill in {}; a step started while its killed copy ran in {}; a finished step run again in {}; a step lost in {}; state unreadable in {}",
        ORPHAN_CHECK.as_millis(),
        counts["orphans"],
        counts["overlapping"],
        counts["repeated"],
        counts["lost"],
        counts["corrupt"],
    );
    if counts["repeated"] * 10 > trials {
        failures.push(format!(
            "a finished step ran again in {} of {trials} trials (at most one in ten)",
            counts["repeated"]
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
