//! `kcideploy apply` with the real binary: failure isolation, resume, stale plans, lock
//! contention between processes, SIGTERM, dated tags, the remote-moved check, http_wait.

mod common;

use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn bin() -> StdCommand {
    let mut cmd = StdCommand::new(assert_cmd::cargo::cargo_bin("kcideploy"));
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Whether a process runs (a zombie nobody reaped yet counts as gone).
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Wait until `path` exists (a step says it started), at most 60 s.
fn wait_for_file(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fixture(steps: &str) -> (Fixture, std::path::PathBuf) {
    let fx = Fixture::new();
    fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let path = fx.plan_file(&plan_with_steps(steps));
    (fx, path)
}

#[test]
fn failed_step_skips_dependents_and_independent_branch_goes_on() {
    let (fx, plan) = fixture(
        r#"  a: { kind: command, always: true, with: { shell: "echo a-out; echo a-err >&2; exit 3" } }
  b: { kind: command, always: true, needs: [a], with: { run: ["true"] } }
  c: { kind: command, always: true, after: [b], with: { run: ["true"] } }
  d: { kind: command, always: true, with: { shell: "echo d >> d.txt" } }
"#,
    );
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("FAILED  a after 1 attempt(s)"), "{out}");
    assert!(out.contains("`sh` exited with exit status: 3"), "{out}");
    assert!(
        out.contains("| a-out") && out.contains("| a-err"),
        "log tail shown: {out}"
    );
    assert!(out.contains("skipped b (dependency failed: a)"), "{out}");
    assert!(out.contains("skipped c (dependency failed: b)"), "{out}");
    assert!(out.contains("done    d"), "{out}");
    assert!(out.contains("1 done, 1 failed, 2 skipped"), "{out}");
    assert_eq!(
        std::fs::read_to_string(fx.path().join("d.txt")).expect("d ran"),
        "d\n"
    );
    let state = state_of(&fx, "t");
    let run = state
        .current_run
        .as_ref()
        .expect("failed run kept for resuming");
    assert_eq!(run.result, "failed");
    // No step deploys `pipe` (none is `on` its components or names it), so the failures
    // do not hold it back: its deployed revision moves to the staging revision, `main`.
    let main = git2::Repository::open_bare(fx.path().join("repos/pipe.git"))
        .expect("remote")
        .refname_to_id("refs/heads/main")
        .expect("main");
    assert_eq!(state.repos["pipe"].deployed, main.to_string());
}

#[test]
fn resume_after_failure_does_not_repeat_finished_steps() {
    let (fx, plan) = fixture(
        r#"  a: { kind: command, always: true, with: { shell: "echo a >> ran.txt" } }
  b: { kind: command, always: true, needs: [a], with: { shell: "echo b >> ran.txt; test -f ok" } }
  c: { kind: command, always: true, needs: [b], with: { shell: "echo c >> ran.txt" } }
"#,
    );
    let apply = || {
        output(
            kcideploy()
                .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
                .arg(&plan),
        )
    };
    let (code, out, _) = apply();
    assert_eq!(code, 1, "{out}");
    std::fs::write(fx.path().join("ok"), "").expect("marker");
    let (code, out, err) = apply();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Resuming run"), "{out}");
    // The plan says a is not repeated, and apply does not run it.
    assert!(out.contains("= a (command) in run"), "{out}");
    assert!(
        out.contains("needs a, triggered but finished before with the same inputs"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(fx.path().join("ran.txt")).expect("ran"),
        "a\nb\nb\nc\n"
    );
    let state = state_of(&fx, "t");
    assert!(state.current_run.is_none());
    assert_eq!(
        state.history.last().map(|r| r.result.as_str()),
        Some("success")
    );
    assert_eq!(state.history.len(), 1, "one run, resumed");
    // A new run runs `always` steps again.
    let (code, _, _) = apply();
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read_to_string(fx.path().join("ran.txt")).expect("ran"),
        "a\nb\nb\nc\na\nb\nc\n"
    );
}

#[test]
fn retries_with_backoff_then_success() {
    let (fx, plan) = fixture(
        r#"  flaky:
    kind: command
    always: true
    retries: 2
    retry_delay: 1s
    with: { shell: "echo x >> tries; test $(wc -l < tries) -ge 3" }
"#,
    );
    let start = Instant::now();
    let (code, out, _) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "1s then 2s of backoff"
    );
    assert!(out.contains("retry   flaky: attempt 1 failed"), "{out}");
    assert!(out.contains("next in 2.0s"), "{out}");
    assert_eq!(
        std::fs::read_to_string(fx.path().join("tries"))
            .expect("tries")
            .lines()
            .count(),
        3
    );
}

#[test]
fn step_timeout_stops_the_process_group() {
    let (fx, plan) = fixture(
        r#"  slow: { kind: command, always: true, timeout: 1s, with: { shell: "sleep 120 & echo $! > child.pid; wait" } }
"#,
    );
    let start = Instant::now();
    let (code, out, _) = output(
        kcideploy()
            .args([
                "apply",
                "-auto-approve",
                "--cycle",
                "partial",
                "--grace",
                "1s",
                "-f",
            ])
            .arg(&plan),
    );
    assert_eq!(code, 1, "{out}");
    // Without the 1 s timeout the step would run for 120 s.
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "timeout honoured"
    );
    assert!(out.contains("timed out after 1s"), "{out}");
    let pid = std::fs::read_to_string(fx.path().join("child.pid")).expect("pid");
    assert!(!alive(&pid), "grandchild killed with its group");
}

#[test]
fn stale_saved_plan_is_refused_naming_what_moved() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    let plan = fx.plan_file(&plan_with_steps(
        "  restart: { kind: command, on: [config], with: { run: [\"true\"] } }\n",
    ));
    let saved = fx.path().join("p.json");
    kcideploy()
        .args(["plan", "-f"])
        .arg(&plan)
        .arg("-out")
        .arg(&saved)
        .assert()
        .success();
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 3\n"))]);
    remote.branch("pr/2", ALICE, &[("config/b.yaml", Some("b\n"))]);
    let (code, out, err) = output(kcideploy().arg("apply").arg(&saved));
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("the saved plan is stale"), "{err}");
    assert!(err.contains("repo `pipe`: change pr/1 moved from"), "{err}");
    assert!(err.contains("repo `pipe`: new change pr/2"), "{err}");
    assert!(
        !fx.path().join(".kcideploy/t.state.json").exists(),
        "nothing applied"
    );

    // A fresh plan applies; applying it twice is refused: the state moved.
    kcideploy()
        .args(["plan", "-f"])
        .arg(&plan)
        .arg("-out")
        .arg(&saved)
        .assert()
        .success();
    let (code, out, err) = output(kcideploy().arg("apply").arg(&saved));
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = output(kcideploy().arg("apply").arg(&saved));
    assert_eq!(code, 1);
    assert!(err.contains("the state moved from serial 0 to"), "{err}");
}

#[test]
fn no_terminal_and_no_auto_approve_is_an_error() {
    let (fx, plan) = fixture("  a: { kind: command, always: true, with: { run: [\"true\"] } }\n");
    let (code, _, err) = output(
        kcideploy()
            .args(["apply", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 1);
    assert!(err.contains("no terminal to confirm the plan on"), "{err}");
    assert!(!fx.path().join(".kcideploy/t.state.json").exists());
}

#[test]
fn lock_contention_between_two_processes() {
    let (fx, plan) = fixture(
        r#"  hold: { kind: command, always: true, with: { shell: "echo start >> steps.log; touch started; while [ ! -f release ]; do sleep 0.05; done; echo end >> steps.log" } }
"#,
    );
    let mut first = bin()
        .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
        .arg(&plan)
        .stdout(Stdio::null())
        .spawn()
        .expect("first apply");
    wait_for_file(&fx.path().join("started"));
    let start = Instant::now();
    let (code, _, err) = output(
        kcideploy()
            .args([
                "apply",
                "-auto-approve",
                "--cycle",
                "partial",
                "-lock-timeout",
                "500ms",
                "-f",
            ])
            .arg(&plan),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "waited for the lock"
    );
    assert!(
        err.contains(&format!("held by pid {} on", first.id())),
        "{err}"
    );
    assert!(err.contains("for `apply`"), "{err}");
    let id = err
        .split("lock ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("lock id")
        .to_string();
    // The exact command that works, with the plan file.
    assert!(
        err.contains(&format!(
            "kcideploy force-unlock {id} -f {}",
            plan.display()
        )),
        "{err}"
    );
    // The second apply, given enough time, waits for the lock: once it has the lock file open
    // it keeps polling it, and its step does not start while the first one's runs.
    let lock_file = kcideploy::state::lock::lock_path(&fx.path().join(".kcideploy/t.state.json"));
    let mut second = bin()
        .args([
            "apply",
            "-auto-approve",
            "--cycle",
            "partial",
            "-lock-timeout",
            "60s",
            "-f",
        ])
        .arg(&plan)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("second apply");
    let _stop = TermOnPanic(vec![first.id(), second.id()]);
    if fx.db.is_some() {
        // PostgreSQL: no file to watch; the second apply polls pg_try_advisory_lock.
        std::thread::sleep(Duration::from_secs(1));
    } else {
        let lock_file = lock_file
            .canonicalize()
            .expect("the first apply holds the lock file");
        let start = Instant::now();
        while !has_open(second.id(), &lock_file) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the second apply never opened {}",
                lock_file.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // `state show` reads the state while the lock is held.
    let (code, out, err) = output(kcideploy().args(["state", "show", "-f"]).arg(&plan));
    assert_eq!(code, 0, "state show while locked: {out}{err}");
    assert!(!err.contains("lock"), "{err}");
    // Give a second apply that ignored the lock a generous second to start its step; a
    // waiting one never does, however loaded the machine.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(1) {
        assert_eq!(
            std::fs::read_to_string(fx.path().join("steps.log")).expect("log"),
            "start\n",
            "the second apply started its step while the first held the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(fx.path().join("release"), "").expect("release");
    assert!(first.wait().expect("first").success());
    let status = second.wait().expect("second");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(
        status.success(),
        "second apply got the lock after the first: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(fx.path().join("steps.log")).expect("log"),
        "start\nend\nstart\nend\n",
        "one step after the other"
    );
}

/// On a failed assertion, SIGTERM these processes (the applies, which stop their steps), so
/// that no step is left waiting for a file in a removed temp dir.
struct TermOnPanic(Vec<u32>);

impl Drop for TermOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for pid in &self.0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
}

/// Whether process `pid` has `path` open.
fn has_open(pid: u32, path: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
}

#[test]
fn sigterm_during_a_long_step_leaves_state_consistent() {
    let (fx, plan) = fixture(
        r#"  quick: { kind: command, always: true, with: { run: ["true"] } }
  long: { kind: command, always: true, needs: [quick], with: { shell: "echo $$ > long.pid; exec sleep 60" } }
  after: { kind: command, always: true, needs: [long], with: { run: ["true"] } }
"#,
    );
    let mut child = bin()
        .args([
            "apply",
            "-auto-approve",
            "--cycle",
            "partial",
            "--grace",
            "2s",
            "-f",
        ])
        .arg(&plan)
        .stdout(Stdio::piped())
        .spawn()
        .expect("apply");
    wait_for_file(&fx.path().join("long.pid"));
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = child.wait().expect("wait");
    assert!(!status.success());
    // Without the SIGTERM the step would run for 60 s.
    assert!(start.elapsed() < Duration::from_secs(30));
    let pid = std::fs::read_to_string(fx.path().join("long.pid")).expect("pid");
    assert!(!alive(&pid), "the step's process is gone");
    let state = state_of(&fx, "t");
    let run = state.current_run.as_ref().expect("run kept");
    assert_eq!(run.result, "cancelled");
    let results: Vec<(&str, &str)> = run
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.result.as_str()))
        .collect();
    assert_eq!(
        results,
        [
            ("quick", "success"),
            ("long", "cancelled"),
            ("after", "cancelled")
        ]
    );
    assert_eq!(state.steps["quick"].result, "success");
    assert!(!state.steps.contains_key("long"));
    assert!(fx.backend("t").holder().expect("lock").is_none());
}

#[test]
fn git_push_dated_tags_and_retention() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    // The binary names tags after its run's wall clock (`--at` moves only the planning
    // clock), and that date is recorded in the state: the expectation follows the date the
    // binary used, so that the test holds across midnight UTC.
    let today = jiff::Timestamp::now().strftime("%Y%m%d").to_string();
    for tag in [
        "staging-20200101.1",
        "staging-20200102.1",
        "staging-20200102.2",
        &format!("staging-{today}.1"),
        "other-20200101.1",
    ] {
        remote
            .repo
            .reference(&format!("refs/tags/{tag}"), remote.main, true, "t")
            .expect("tag");
    }
    let plan = fx.plan_file(&plan_with_steps(
        "  push: { kind: git_push, on: [config], with: { repo: pipe, tag_prefix: staging-, tag_keep: 3 } }\n",
    ));
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    let staging = remote
        .repo
        .refname_to_id("refs/heads/staging.kernelci.org")
        .expect("pushed");
    let state = state_of(&fx, "t");
    assert_eq!(state.repos["pipe"].deployed, staging.to_string());
    let run_day = state
        .history
        .last()
        .expect("run recorded")
        .started_at
        .strftime("%Y%m%d")
        .to_string();
    // The day's second tag; or, when midnight passed since `today`, the new day's first.
    let new_tag = if run_day == today {
        format!("staging-{today}.2")
    } else {
        format!("staging-{run_day}.1")
    };
    let mut tags: Vec<String> = remote
        .repo
        .tag_names(None)
        .expect("tags")
        .iter()
        .flatten()
        .flatten()
        .map(String::from)
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            "other-20200101.1".to_string(),
            "staging-20200102.2".to_string(),
            format!("staging-{today}.1"),
            new_tag.clone(),
        ]
    );
    assert_eq!(
        remote
            .repo
            .refname_to_id(&format!("refs/tags/{new_tag}"))
            .expect("new tag"),
        staging
    );
}

#[test]
fn git_push_refuses_when_the_remote_moved_since_planning() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    let plan = fx.plan_file(&plan_with_steps(
        "  push: { kind: git_push, on: [config], with: { repo: pipe } }\n",
    ));
    let saved = fx.path().join("p.json");
    kcideploy()
        .args(["plan", "--cycle", "partial", "-f"])
        .arg(&plan)
        .arg("-out")
        .arg(&saved)
        .assert()
        .success();
    // Somebody else pushes the staging branch meanwhile.
    kcideploy::gitops::scratch::set_branch(&remote.repo, "staging.kernelci.org", remote.main)
        .expect("push");
    let (code, out, _) = output(kcideploy().arg("apply").arg(&saved));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the remote branch staging.kernelci.org moved since planning"),
        "{out}"
    );
    assert_eq!(
        remote
            .repo
            .refname_to_id("refs/heads/staging.kernelci.org")
            .expect("ref"),
        remote.main
    );
    assert!(
        state_of(&fx, "t").repos.is_empty(),
        "deployed revision did not move"
    );
}

#[test]
fn http_wait_polls_until_the_service_answers() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting")
                } else {
                    (axum::http::StatusCode::OK, "api ok")
                }
            }
        }),
    );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    runtime.spawn(async move { axum::serve(listener, app).await });
    let (fx, plan) = fixture(&format!(
        "  up: {{ kind: http_wait, always: true, timeout: 20s, with: {{ url: \"http://{addr}/health\", body_contains: ok, interval: 100ms }} }}\n  never: {{ kind: http_wait, always: true, timeout: 1s, with: {{ url: \"http://{addr}/nope\", interval: 200ms }} }}\n"
    ));
    let (code, out, _) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("done    up"), "{out}");
    assert!(hits.load(Ordering::SeqCst) >= 3);
    assert!(out.contains(&format!("http://{addr}/nope did not answer as expected within 1s (last: status 404, expected 200)")), "{out}");
    let log = std::fs::read_to_string(
        fx.path()
            .join(".kcideploy/runs/t")
            .read_dir()
            .expect("runs")
            .flatten()
            .next()
            .expect("run")
            .path()
            .join("up.log"),
    )
    .expect("log");
    assert!(log.contains("status 503, expected 200"), "{log}");
}

#[test]
fn json_events_and_state_commands() {
    let (_fx, plan) = fixture("  a: { kind: command, always: true, with: { run: [\"true\"] } }\n");
    let (code, out, _) = output(
        kcideploy()
            .args([
                "apply",
                "-auto-approve",
                "--json",
                "--cycle",
                "partial",
                "-f",
            ])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "run_started",
            "step_started",
            "step_finished",
            "run_finished"
        ]
    );
    assert_eq!(events[2]["result"], "success");
    assert!(events[2]["duration_ms"].is_u64());
    let (code, shown, _) = output(kcideploy().args(["state", "show", "-f"]).arg(&plan));
    assert_eq!(code, 0);
    assert!(
        shown.contains("pipe: ") && shown.contains("Last partial cycle: 20"),
        "{shown}"
    );
    let (code, history, _) = output(kcideploy().args(["state", "history", "-f"]).arg(&plan));
    assert_eq!(code, 0);
    assert!(history.contains("partial cycle, success"), "{history}");
    assert!(history.contains("success      a"), "{history}");
}

#[test]
fn command_runs_in_the_staging_checkout_with_revision_variables() {
    let fx = Fixture::new();
    let remote = fx.repo(
        "pipe",
        &[
            ("config/a.yaml", Some("a: 1\n")),
            ("scripts/deploy.sh", Some("echo deployed\n")),
        ],
    );
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    let plan = fx.plan_file(&plan_with_steps(
        r#"  show:
    kind: command
    on: [config]
    with:
      repo: pipe
      cwd: config
      env: { EXTRA: "yes" }
      pass_env: [OUT]
      shell: "cat a.yaml > \"$OUT/seen\"; env | grep -E '^(KCIDEPLOY_|EXTRA=)' | sort > \"$OUT/env\"; sh ../scripts/deploy.sh"
"#,
    ));
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan)
            .env("OUT", fx.path()),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(fx.path().join("seen")).expect("seen"),
        "a: 2\n",
        "the staging revision, pr/1 merged"
    );
    let env = std::fs::read_to_string(fx.path().join("env")).expect("env");
    let state = state_of(&fx, "t");
    let staging = &state.repos["pipe"].deployed;
    for line in [
        "EXTRA=yes".to_string(),
        "KCIDEPLOY_CYCLE=partial".to_string(),
        "KCIDEPLOY_PLAN=t".to_string(),
        "KCIDEPLOY_STEP=show".to_string(),
        "KCIDEPLOY_ATTEMPT=1".to_string(),
        format!("KCIDEPLOY_REPO_PIPE_SHA={staging}"),
        format!("KCIDEPLOY_REPO_PIPE_BASE={}", remote.main),
        "KCIDEPLOY_REPO_PIPE_BRANCH=main".to_string(),
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line} in\n{env}");
    }
    assert!(env.contains("KCIDEPLOY_CHECKOUT="), "{env}");
    let log_dir = fx
        .path()
        .join(".kcideploy/runs/t")
        .read_dir()
        .expect("runs")
        .flatten()
        .next()
        .expect("run")
        .path();
    assert!(
        std::fs::read_to_string(log_dir.join("show.log"))
            .expect("log")
            .contains("deployed")
    );
}

#[test]
fn approve_steps_stop_the_run_without_a_terminal_and_auto_approve_resumes_it() {
    let (fx, plan) = fixture(
        r#"  build: { kind: command, always: true, with: { shell: "echo build >> ran.txt" } }
  restart: { kind: command, always: true, needs: [build], approve: true, with: { shell: "echo restart >> ran.txt" } }
  check: { kind: command, always: true, needs: [restart], with: { shell: "echo check >> ran.txt" } }
"#,
    );
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "--cycle", "partial", "-f"])
            .arg(&plan)
            .args(["--lock-timeout", "0s"]),
    );
    // No terminal: the plan itself needs -auto-approve.
    assert_eq!(code, 1, "{out}{err}");
    let saved = fx.path().join("p.json");
    kcideploy()
        .args(["plan", "--cycle", "partial", "-f"])
        .arg(&plan)
        .arg("-out")
        .arg(&saved)
        .assert()
        .success();
    let (code, out, _) = output(kcideploy().arg("apply").arg(&saved));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cancel  restart"), "{out}");
    assert_eq!(
        std::fs::read_to_string(fx.path().join("ran.txt")).expect("ran"),
        "build\n"
    );
    let state = state_of(&fx, "t");
    let run = state.current_run.as_ref().expect("kept for resuming");
    assert!(run.steps.iter().any(|s| {
        s.name == "restart"
            && s.detail
                .as_deref()
                .unwrap_or("")
                .starts_with("awaiting approval")
    }));
    // Approved: the same inputs resume the run after `build`.
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Resuming run"), "{out}");
    assert_eq!(
        std::fs::read_to_string(fx.path().join("ran.txt")).expect("ran"),
        "build\nrestart\ncheck\n"
    );
}

#[test]
fn run_applies_obeys_the_cooldown_and_says_when_there_is_nothing_to_do() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    let plan = fx.plan_file(&plan_with_steps(
        "  restart: { kind: command, on: [config], with: { shell: \"echo restart >> ran.txt\" } }\n",
    ));
    let run = |at: Option<&str>| {
        let mut cmd = kcideploy();
        cmd.args(["run", "-f"]).arg(&plan);
        if let Some(at) = at {
            cmd.args(["--at", at]);
        }
        output(&mut cmd)
    };
    let (code, out, err) = run(None);
    assert_eq!(code, 2, "applied: {out}{err}");
    assert_eq!(
        std::fs::read_to_string(fx.path().join("ran.txt")).expect("ran"),
        "restart\n"
    );
    let (code, out, _) = run(None);
    assert_eq!(code, 0, "nothing to do: {out}");
    assert!(out.contains("Nothing to do"), "{out}");
    remote.branch("pr/2", ALICE, &[("config/b.yaml", Some("b\n"))]);
    let (code, out, _) = run(None);
    assert_eq!(code, 3, "held back: {out}");
    assert!(
        out.contains("Held back by the policy") && out.contains("cooldown is 30m"),
        "{out}"
    );
    let later = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_mins(31))
        .expect("ts")
        .to_string();
    let (code, out, err) = run(Some(&later));
    assert_eq!(code, 2, "after the cooldown: {out}{err}");
    assert_eq!(
        std::fs::read_to_string(fx.path().join("ran.txt")).expect("ran"),
        "restart\nrestart\n"
    );
}

/// A run whose cancel came before it started (the server stopping while it planned) starts
/// nothing, records every step cancelled, and the next apply resumes it.
#[test]
fn a_run_cancelled_before_it_starts_runs_nothing_and_resumes_later() {
    let (fx, plan_file) =
        fixture("  a: { kind: command, on: [config], with: { run: [\"true\"] } }\n");
    let config = kcideploy::config::Config::load(&plan_file).expect("config");
    let plan = fx.plan(&config, kcideploy::planner::CycleRequest::Partial);
    let backend = kcideploy::state::Backend::open(&config).expect("backend");
    let lock = backend.lock("test", Duration::ZERO).expect("lock");
    let (tx, rx) = tokio::sync::watch::channel(kcideploy::apply::process::Cancel::None);
    tx.send(kcideploy::apply::process::Cancel::Graceful)
        .expect("send");
    let opts = kcideploy::apply::ApplyOptions {
        handle_signals: false,
        cancel: Some(rx),
        ..Default::default()
    };
    let mut reporter = kcideploy::apply::events::PlainReporter::default();
    reporter.capture = true;
    let report = kcideploy::deploy::run_apply(
        config.clone(),
        plan.clone(),
        &backend,
        &lock,
        opts,
        &mut reporter,
    )
    .expect("apply");
    assert_eq!(report.result, "cancelled");
    let state = state_of(&fx, "t");
    let run = state.current_run.expect("kept for resuming");
    assert_eq!(run.steps[0].result, "cancelled");
    assert_eq!(
        run.steps[0].detail.as_deref(),
        Some("not started: cancelled")
    );
    let resumed = kcideploy::deploy::run_apply(
        config,
        plan,
        &backend,
        &lock,
        kcideploy::apply::ApplyOptions {
            handle_signals: false,
            ..Default::default()
        },
        &mut reporter,
    )
    .expect("apply");
    assert_eq!(resumed.result, "success");
    assert_eq!(resumed.run_id, report.run_id, "the same run, resumed");
}

/// `-parallelism 2` holds: six independent steps of half a second each, never more than two
/// at once (each step logs `+` when it starts and `-` when it ends).
#[test]
fn parallelism_limit_holds() {
    let step = |name: &str| {
        format!(
            "  {name}: {{ kind: command, always: true, with: {{ shell: \"echo + >> events; sleep 0.5; echo - >> events\" }} }}\n"
        )
    };
    let steps: String = ["a", "b", "c", "d", "e", "f"].map(step).concat();
    let (fx, plan) = fixture(&steps);
    let (code, out, err) = output(
        kcideploy()
            .args([
                "apply",
                "-auto-approve",
                "--cycle",
                "partial",
                "-parallelism",
                "2",
                "-f",
            ])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    let events = std::fs::read_to_string(fx.path().join("events")).expect("events");
    let (mut running, mut most) = (0i32, 0i32);
    for event in events.lines() {
        running += if event == "+" { 1 } else { -1 };
        most = most.max(running);
    }
    assert_eq!(events.lines().count(), 12, "{events}");
    assert_eq!(running, 0);
    assert!(most <= 2, "{most} steps ran at once: {events:?}");
}

/// `force-unlock ID` through the CLI: a wrong ID is refused and the lock stays; the right
/// one is refused too while the holder runs on this host; with --force it removes it, and
/// another apply can take the state while the old holder still runs.
#[test]
fn force_unlock_through_the_cli() {
    let (fx, plan) = fixture(
        r#"  hold: { kind: command, always: true, with: { shell: "echo run >> runs.log; test -f started && exit 0; touch started; while [ ! -f release ]; do sleep 0.05; done" } }
"#,
    );
    let mut first = bin()
        .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
        .arg(&plan)
        .stdout(Stdio::null())
        .spawn()
        .expect("first apply");
    let _stop = TermOnPanic(vec![first.id()]);
    wait_for_file(&fx.path().join("started"));
    let holder = fx.backend("t").holder().expect("lock").expect("held");
    let (code, out, err) = output(
        kcideploy()
            .args(["force-unlock", "0000000000000000", "-f"])
            .arg(&plan),
    );
    assert_ne!(code, 0, "a wrong ID: {out}{err}");
    assert!(err.contains(&holder.id), "names the real holder: {err}");
    assert!(fx.backend("t").holder().expect("lock").is_some());
    // The holder still runs here: refused, naming its pid, and the lock stays.
    let (code, out, err) = output(
        kcideploy()
            .args(["force-unlock", &holder.id, "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("pid {} is alive", first.id())),
        "{err}"
    );
    assert!(fx.backend("t").holder().expect("lock").is_some());
    // Forced twice over: removed.
    let (code, out, err) = output(
        kcideploy()
            .args(["force-unlock", &holder.id, "--force", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Removed the lock"), "{out}");
    assert!(out.contains(&holder.id), "{out}");
    // The state is free for another apply (no lock wait at all), though the first runs on.
    let (code, out, err) = output(
        kcideploy()
            .args([
                "apply",
                "-auto-approve",
                "--cycle",
                "partial",
                "-lock-timeout",
                "0s",
                "-f",
            ])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(fx.path().join("runs.log")).expect("runs"),
        "run\nrun\n"
    );
    assert!(
        first.try_wait().expect("first").is_none(),
        "the first apply still runs"
    );
    std::fs::write(fx.path().join("release"), "").expect("release");
    let first = first.wait_with_output().expect("first");
    if fx.db.is_some() {
        // PostgreSQL refuses the old holder's last write (the second apply wrote since it
        // read): nothing of the second one is lost. The state file is overwritten instead.
        assert!(!first.status.success(), "the stale writer is refused");
    } else {
        assert!(first.status.success());
    }
}
