//! The PostgreSQL state backend against a real throwaway cluster (tests/common/postgres.rs):
//! compare-and-swap writes, the lock, run history and step ends as rows.

mod common;

use std::time::Duration;

use common::postgres::Postgres;
use common::*;
use kcideploy::state::{
    Backend, LockError, RunRecord, RunResult, RunStep, State, StateError, StepResult, journal,
};

#[test]
fn the_harness_starts_a_cluster_and_stops_it_on_drop() {
    let pg = Postgres::start();
    let url = pg.database();
    assert_eq!(pg.psql_in(&url, "SELECT 1 + 1"), "2");
    let port = pg.port;
    drop(pg);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the cluster still listens after the drop"
    );
}

/// A fixture whose plan files keep state in a new database of the shared cluster, whatever
/// `KCIDEPLOY_TEST_BACKEND` says.
fn pg_fixture() -> Fixture {
    let mut fx = Fixture::new();
    if fx.db.is_none() {
        fx.db = Some(common::postgres::shared().database());
    }
    fx
}

fn run(id: &str) -> RunRecord {
    serde_json::from_value(serde_json::json!({
        "id": id, "plan_digest": "p", "inputs_digest": "i", "cycle": "partial",
        "start_serial": 1, "started_at": rfc3339(NOW - DAY), "result": "success"
    }))
    .expect("run")
}

#[test]
fn a_stale_writer_is_refused_and_nothing_is_lost() {
    let fx = pg_fixture();
    let backend = fx.backend("t");
    let mut first = State::new();
    backend.write(&mut first).expect("create");
    let mut a = backend.read().expect("read").expect("some");
    let mut b = backend.read().expect("read").expect("some");
    a.approvals.clear();
    a.cycles.last_full = Some(jiff::Timestamp::UNIX_EPOCH);
    backend.write(&mut a).expect("the first writer");
    assert_eq!(a.serial, 2);
    b.exclusions.clear();
    let err = backend.write(&mut b).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, StateError::Stale { expected: 1, .. }),
        "{err:?}"
    );
    assert!(
        text.contains("read serial 1") && text.contains("has serial 2"),
        "{text}"
    );
    assert!(text.contains("127.0.0.1"), "names the server: {text}");
    assert_eq!(b.serial, 1, "the refused writer's serial is unchanged");
    let now = backend.read().expect("read").expect("some");
    assert_eq!(now.serial, 2);
    assert_eq!(
        now.cycles.last_full,
        Some(jiff::Timestamp::UNIX_EPOCH),
        "kept"
    );
    // Another lineage (a state made elsewhere) does not replace this one either.
    let mut other = State::new();
    let err = backend.write(&mut other).unwrap_err().to_string();
    assert!(
        err.contains(&now.lineage) && err.contains(&other.lineage),
        "{err}"
    );
    assert_eq!(backend.read().expect("read").expect("some"), now);
}

#[test]
fn runs_and_step_ends_are_rows() {
    let fx = pg_fixture();
    let url = fx.db.clone().expect("db");
    let backend = fx.backend("t");
    let mut state = State::new();
    state.history = vec![run("r1"), run("r2")];
    backend.write(&mut state).expect("write");
    let pg = common::postgres::shared();
    let rows = |sql: &str| pg.psql_in(&url, sql);
    assert_eq!(rows("SELECT count(*) FROM kcideploy_runs"), "2");
    assert_eq!(
        rows("SELECT body->'history' FROM kcideploy_state"),
        "[]",
        "the history is not in the state row"
    );
    let seqs = rows("SELECT string_agg(seq::text, ',' ORDER BY seq) FROM kcideploy_runs");
    // Written again unchanged: the rows are not rewritten; a new run is one more row.
    state.history.push(run("r3"));
    backend.write(&mut state).expect("write");
    assert_eq!(
        rows(
            "SELECT string_agg(seq::text, ',' ORDER BY seq) FROM kcideploy_runs WHERE run_id <> 'r3'"
        ),
        seqs
    );
    assert_eq!(rows("SELECT count(*) FROM kcideploy_runs"), "3");
    let read = backend.read().expect("read").expect("some");
    let ids: Vec<&str> = read.history.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2", "r3"]);
    assert_eq!(
        rows("SELECT max(version) FROM kcideploy_schema_version"),
        kcideploy::state::postgres::schema::MIGRATIONS
            .len()
            .to_string(),
        "every migration applied on first use"
    );

    // A step's end, as a row, is in the state read until the run's end folds it in.
    let mut running = run("r4");
    running.result = RunResult::Running;
    state.current_run = Some(running);
    backend.write(&mut state).expect("write");
    let Backend::Postgres(pg_state) = &backend else {
        panic!("not PostgreSQL")
    };
    let end = journal::Entry::Exited {
        run: "r4".into(),
        digest: "d".into(),
        step: RunStep {
            name: "build".into(),
            result: StepResult::Success,
            attempts: 1,
            duration_ms: 3,
            detail: None,
            log: None,
        },
        finished_at: jiff::Timestamp::UNIX_EPOCH,
        outputs: None,
        params: None,
    };
    kcideploy::support::rt::block_on(pg_state.append_step_end(&end)).expect("append");
    let read = backend.read().expect("read").expect("some");
    assert_eq!(read.steps["build"].result, StepResult::Success);
    assert_eq!(read.current_run.expect("run").steps.len(), 1);
    assert_eq!(rows("SELECT count(*) FROM kcideploy_step_ends"), "1");
}

#[test]
fn the_lock_is_a_session_lock_with_its_holder_in_a_row() {
    let fx = pg_fixture();
    let url = fx.db.clone().expect("db");
    let backend = fx.backend("t");
    let first = backend.lock("apply", Duration::ZERO).expect("first");
    let err = backend
        .lock("apply", Duration::from_millis(200))
        .unwrap_err();
    let LockError::Locked {
        holder: Some(holder),
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(holder, &first.info);
    assert_eq!(backend.holder().expect("holder"), Some(first.info.clone()));
    assert!(
        matches!(
            backend.force_unlock("nope", true),
            Err(LockError::WrongId { .. })
        ),
        "a wrong id"
    );
    assert!(
        matches!(
            backend.force_unlock(&first.info.id, false),
            Err(LockError::HolderAlive { .. })
        ),
        "this very process holds it"
    );
    // Another plan's state in the same database has its own lock.
    fx.backend("other")
        .lock("apply", Duration::ZERO)
        .expect("another plan");
    drop(first);
    assert_eq!(backend.holder().expect("holder"), None, "released on drop");
    let second = backend
        .lock("apply", Duration::ZERO)
        .expect("after the drop");
    // The holder's connection dies (its host is gone): the lock goes with it, and the row
    // it leaves means nothing.
    common::postgres::shared().psql_in(
        &url,
        "SELECT pg_terminate_backend(backend_pid) FROM kcideploy_lock",
    );
    let start = std::time::Instant::now();
    while backend.holder().expect("holder").is_some() {
        assert!(start.elapsed() < Duration::from_secs(10), "still held");
        std::thread::sleep(Duration::from_millis(20));
    }
    let third = backend
        .lock("apply", Duration::ZERO)
        .expect("after the session ended");
    assert_ne!(third.info.id, second.info.id);

    // `force-unlock --force` ends the session that holds the lock now and removes its row;
    // reading who holds it never takes the lock (a concurrent apply is not refused).
    assert_eq!(backend.holder().expect("holder"), Some(third.info.clone()));
    let removed = backend
        .force_unlock(&third.info.id, true)
        .expect("force-unlock");
    assert_eq!(removed, third.info);
    assert_eq!(backend.holder().expect("holder"), None, "unlocked");
    let fourth = backend
        .lock("apply", Duration::ZERO)
        .expect("after force-unlock");
    assert_ne!(fourth.info.id, third.info.id);
}

#[test]
fn a_password_in_the_plan_file_is_refused_and_never_shown() {
    let fx = Fixture::new();
    let path = fx.path().join("plan.yaml");
    std::fs::write(
        &path,
        "version: 1\nname: t\nstate: { backend: \"postgres://kci:hunter2@127.0.0.1:1/x\" }\nrepos:\n  pipe: { url: repos/pipe.git }\nsteps:\n  a: { kind: command, with: { run: [\"true\"] } }\n",
    )
    .expect("plan");
    let (code, out, err) = output(kcideploy().args(["state", "show", "-f"]).arg(&path));
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("has a password"), "{err}");
    assert!(!format!("{out}{err}").contains("hunter2"), "{out}{err}");
}

#[test]
fn an_unreachable_server_is_named_with_the_cause() {
    let fx = Fixture::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let plan = fx.plan_file(&format!(
        "version: 1\nname: t\nstate: {{ backend: \"postgres://kci@127.0.0.1:{port}/x\" }}\nrepos:\n  pipe: {{ url: repos/pipe.git }}\nsteps:\n  a: {{ kind: command, with: {{ run: [\"true\"] }} }}\n"
    ));
    let (code, out, err) = output(
        kcideploy()
            .env("PGPASSWORD", "hunter2")
            .args(["state", "show", "-f"])
            .arg(&plan),
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!format!("{out}{err}").contains("hunter2"), "{out}{err}");
}

/// Plan `t` with one step that holds until the test writes `release`.
const HOLD_PLAN: &str = r#"version: 1
name: t
repos:
  pipe: { url: repos/pipe.git }
steps:
  hold: { kind: command, always: true, with: { shell: "echo start >> steps.log; touch started; while [ ! -f release ]; do sleep 0.05; done; echo end >> steps.log" } }
"#;

fn apply_cmd(plan: &std::path::Path, lock_timeout: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("kcideploy"));
    cmd.args([
        "apply",
        "-auto-approve",
        "--cycle",
        "partial",
        "-lock-timeout",
        lock_timeout,
        "-f",
    ])
    .arg(plan)
    .env("NO_COLOR", "1")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    cmd
}

fn wait_for(path: &std::path::Path) {
    let start = std::time::Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn two_concurrent_applies_on_one_database() {
    let fx = pg_fixture();
    fx.repo("pipe", &[("a", Some("a\n"))]);
    let plan = fx.plan_file(HOLD_PLAN);
    let mut first = apply_cmd(&plan, "0s").spawn().expect("first");
    wait_for(&fx.path().join("started"));
    // At once: refused, naming the holder.
    let mut second = apply_cmd(&plan, "0s").spawn().expect("second");
    let started = std::time::Instant::now();
    while second.try_wait().expect("second").is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = second.kill();
            let _ = first.kill();
            panic!("the second apply did not fail at once: it runs beside the first");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = second.wait_with_output().expect("second");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(
        err.contains(&format!("held by pid {} on", first.id())) && err.contains("for `apply`"),
        "{err}"
    );
    assert!(err.contains("kcideploy force-unlock"), "{err}");
    // With -lock-timeout: it waits, and runs once the first is done.
    let mut third = apply_cmd(&plan, "60s").spawn().expect("third");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        std::fs::read_to_string(fx.path().join("steps.log")).expect("log"),
        "start\n",
        "the waiting apply started its step while the first held the lock"
    );
    std::fs::write(fx.path().join("release"), "").expect("release");
    let first = first.wait().expect("first");
    assert!(first.success());
    let third_out = third.wait().expect("third");
    let mut third_err = String::new();
    std::io::Read::read_to_string(&mut third.stderr.take().expect("stderr"), &mut third_err)
        .expect("stderr");
    assert!(third_out.success(), "{third_err}");
    assert_eq!(
        std::fs::read_to_string(fx.path().join("steps.log")).expect("log"),
        "start\nend\nstart\nend\n",
        "one after the other"
    );
    // Two applies, each two writes (its run's start and end): the refused one wrote nothing.
    let state = fx.backend("t").read().expect("read").expect("state");
    assert_eq!(state.serial, 4);
    assert_eq!(state.history.len(), 2);
}

/// Plan `t` with its state in the local file `.kcideploy/t.state.json` whatever the test
/// backend: what `state migrate` starts from.
fn local_plan(fx: &Fixture) -> std::path::PathBuf {
    fx.repo("pipe", &[("a", Some("a\n"))]);
    let path = fx.path().join("plan.yaml");
    std::fs::write(
        &path,
        "version: 1\nname: t\nstate: { path: .kcideploy/t.state.json }\nrepos:\n  pipe: { url: repos/pipe.git }\nsteps:\n  a: { kind: command, always: true, with: { run: [\"true\"] } }\n",
    )
    .expect("plan");
    path
}

fn ok(cmd: &mut assert_cmd::Command) -> String {
    let (code, out, err) = output(cmd);
    assert_eq!(code, 0, "{out}{err}");
    out
}

#[test]
fn migrate_both_ways_and_a_lineage_is_never_replaced() {
    let fx = Fixture::new();
    let plan = local_plan(&fx);
    let url = common::postgres::shared().database();
    let apply = |extra: &[&str]| {
        ok(kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial"])
            .args(extra)
            .arg("-f")
            .arg(&plan))
    };
    apply(&[]);
    let local = Backend::local(fx.path().join(".kcideploy/t.state.json"));
    let before = local.read().expect("read").expect("state");
    assert_eq!((before.serial, before.history.len()), (2, 1));

    let out = ok(kcideploy()
        .args(["state", "migrate", "-f"])
        .arg(&plan)
        .args(["--to", &url]));
    assert!(
        out.contains("Copied the state (serial 2, 1 run(s)"),
        "{out}"
    );
    let setting = kcideploy::config::backend::parse(&url, "test", false).expect("url");
    let pg = Backend::of(setting, "t", fx.path().join("elsewhere.json")).expect("pg");
    assert_eq!(
        pg.read().expect("read").expect("state"),
        before,
        "the same state"
    );
    let out = ok(kcideploy()
        .args(["state", "migrate", "-f"])
        .arg(&plan)
        .args(["--to", &url]));
    assert!(out.contains("nothing to copy"), "{out}");

    // Applied on PostgreSQL (-backend-config over the plan file): the file is left as it was.
    apply(&["-backend-config", &url]);
    let after = pg.read().expect("read").expect("state");
    assert_eq!((after.serial, after.history.len()), (4, 2));
    assert_eq!(local.read().expect("read").expect("state"), before);

    // And back: to a new file, then over the old one (same lineage, older serial).
    let copy = fx.path().join("copy.json");
    ok(kcideploy()
        .args(["state", "migrate", "-backend-config", &url, "-f"])
        .arg(&plan)
        .arg("--to")
        .arg(format!("local:{}", copy.display())));
    assert_eq!(
        Backend::local(&copy).read().expect("read").expect("state"),
        after
    );
    ok(kcideploy()
        .args(["state", "migrate", "-backend-config", &url, "-f"])
        .arg(&plan)
        .args(["--to", "local"]));
    assert_eq!(local.read().expect("read").expect("state"), after);
    // Both hold serial 4 now.
    let (code, out, err) = output(
        kcideploy()
            .args(["state", "migrate", "-f"])
            .arg(&plan)
            .args(["--to", &url]),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing to copy"), "{out}");

    // Another deployment's state (another lineage) is never replaced.
    let other = Fixture::new();
    let other_plan = local_plan(&other);
    ok(kcideploy()
        .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
        .arg(&other_plan));
    let theirs = Backend::local(other.path().join(".kcideploy/t.state.json"))
        .read()
        .expect("read")
        .expect("state");
    let (code, out, err) = output(
        kcideploy()
            .args(["state", "migrate", "-f"])
            .arg(&other_plan)
            .args(["--to", &url]),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&theirs.lineage) && err.contains(&after.lineage),
        "names both lineages: {err}"
    );
    assert_eq!(pg.read().expect("read").expect("state"), after, "untouched");
    // A password on the command line is refused.
    let (code, _, err) = output(
        kcideploy()
            .args(["state", "migrate", "-f"])
            .arg(&plan)
            .args(["--to", "postgres://kci:hunter2@127.0.0.1:1/x"]),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("has a password") && !err.contains("hunter2"),
        "{err}"
    );
}
