//! What the pages say, from hand-made status and state (the browser test in
//! tests/dashboard.rs covers a real server).

use indexmap::IndexMap;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::history;
use super::now::{Deployed, live};
use crate::apply::events::StepResult;
use crate::config::Cycle;
use crate::server::status::{
    ChangeState, ChangeStatus, GraphStep, RunStatus, Status, StepState, StepStatus,
};
use crate::state::{RunRecord, RunResult, RunStep, State, StepRecord};

fn now() -> Timestamp {
    "2026-11-30T14:00:00Z".parse().expect("time")
}

fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

fn page(s: &Status, deployed: &Deployed) -> String {
    live(s, std::path::Path::new("/nonexistent"), deployed, now())
}

#[test]
fn why_not_yet_says_what_the_deploy_waits_for_in_words() {
    let mut s = Status::default();
    s.waiting.settle_until = Some(now() + mins(3));
    s.waiting.max_restarts = 1;
    s.next_full = Some(now() + mins(140));
    s.queue = 2;
    let text = page(&s, &Deployed::new());
    assert!(
        text.contains("Waiting 3 min for more pushes (until 14:03:00 UTC)"),
        "{text}"
    );
    assert!(
        text.contains("Full cycle allowed from 16:20:00 UTC (in 2 h 20 min)"),
        "{text}"
    );
    assert!(text.contains("2 event(s) queued"), "{text}");

    let mut s = Status::default();
    s.waiting.cooldown_until = Some(now() + mins(20));
    s.next_full = Some(now() - mins(1));
    let text = page(&s, &Deployed::new());
    assert!(
        text.contains(
            "Cooling down after the last deploy: nothing starts before 14:20:00 UTC (in 20 min)"
        ),
        "{text}"
    );
    assert!(text.contains("A full cycle is allowed now"), "{text}");
}

fn run(cycle: Cycle, restarts: u32) -> RunStatus {
    RunStatus {
        cycle,
        started_at: now() - mins(2),
        trigger: "@kcibot deploy by alice on o/r#4".into(),
        run_id: Some("r1".into()),
        restarts,
        graph: vec![
            GraphStep {
                name: "build".into(),
                waits_on: vec![],
                approve: false,
            },
            GraphStep {
                name: "promote".into(),
                waits_on: vec!["build".into()],
                approve: true,
            },
            GraphStep {
                name: "verify".into(),
                waits_on: vec!["build".into()],
                approve: false,
            },
        ],
        steps: IndexMap::from([(
            "build".to_string(),
            StepStatus {
                state: StepState::Done(StepResult::Success),
                started_at: Some(now() - mins(2)),
                duration_ms: Some(61_000),
                detail: None,
                log_tail: Some("built <ok>\n".into()),
            },
        )]),
    }
}

#[test]
fn steps_not_started_are_waiting_or_held_and_the_budget_is_told() {
    let mut s = Status::default();
    s.waiting.max_restarts = 1;
    s.running = Some(run(Cycle::Partial, 0));
    let text = page(&s, &Deployed::new());
    assert!(
        text.contains("id=\"step-promote\" data-state=\"held\""),
        "{text}"
    );
    assert!(
        text.contains("id=\"step-verify\" data-state=\"waiting\""),
        "{text}"
    );
    assert!(
        text.contains("id=\"step-build\" data-state=\"success\""),
        "{text}"
    );
    assert!(text.contains("built &lt;ok&gt;"), "{text}");
    assert!(text.contains("for <span id=\"trigger\">@kcibot deploy by alice on o/r#4</span>"));
    assert!(text.contains("1 of 1 restart(s) left"), "{text}");
    // The graph: promote and verify stand right of build.
    let layers: Vec<&str> = text.split("<li>").skip(1).collect();
    assert!(
        layers[0].contains("build") && !layers[0].contains("verify"),
        "{text}"
    );
    assert!(
        layers[1].contains("promote") && layers[1].contains("verify"),
        "{text}"
    );

    s.running = Some(run(Cycle::Full, 0));
    assert!(page(&s, &Deployed::new()).contains("A full cycle is never interrupted"));
}

#[test]
fn included_changes_say_whether_they_are_deployed() {
    let change = |id: &str, state| ChangeStatus {
        repo: "core".into(),
        change: id.into(),
        head: format!("{id}-head"),
        author: "a".into(),
        title: String::new(),
        committed_at: Some(now() - mins(90)),
        url: None,
        state,
        detail: None,
        paths: vec![],
    };
    let mut s = Status {
        changes: vec![
            change("old", ChangeState::Included),
            change("new", ChangeState::Included),
        ],
        ..Default::default()
    };
    let deployed = Deployed::from([("core".into(), "old".into(), "old-head".into())]);
    let text = page(&s, &deployed);
    assert!(
        text.contains("data-change=\"old\" data-state=\"deployed\""),
        "{text}"
    );
    assert!(text.contains("data-change=\"new\" data-state=\"included (not deployed)\""));
    assert!(text.contains("1 h 30 min"), "the age: {text}");
    s.running = Some(run(Cycle::Partial, 0));
    assert!(page(&s, &deployed).contains("data-change=\"new\" data-state=\"deploying\""));
}

#[test]
fn the_pipe_cleaner_shows_its_summaries_and_last_comparison() {
    let plan = concat!(env!("CARGO_MANIFEST_DIR"), "/plans/staging.yaml");
    let config = crate::config::Config::load(std::path::Path::new(plan)).expect("staging plan");
    let mut state = State::default();
    state.steps.insert(
        "check-kernel".into(),
        StepRecord {
            digest: "d".into(),
            result: StepResult::Failed,
            run_id: "r2".into(),
            finished_at: Some(now()),
            duration_ms: 1,
            outputs: Some(json!({ "summaries": { "mainline": {
                "kbuild": { "total": 40, "pass": 38, "fail": 2 },
                "test": { "pass": 900, "fail": 12 } } } })),
            params: None,
            params_run: None,
        },
    );
    state.history.push(RunRecord {
        id: "r2".into(),
        plan_digest: String::new(),
        inputs_digest: String::new(),
        cycle: Cycle::Full,
        start_serial: 0,
        started_at: now() - mins(300),
        finished_at: Some(now()),
        result: RunResult::Failed,
        steps: vec![RunStep {
            name: "check-kernel".into(),
            result: StepResult::Failed,
            attempts: 1,
            duration_ms: 1,
            detail: Some("regression on staging-mainline: test pass rate -3.1 points".into()),
            log: None,
        }],
        scope: Default::default(),
        revisions: Default::default(),
        images: Default::default(),
        pins: Default::default(),
    });
    let mut out = String::new();
    history::pipe_cleaner(
        &mut out,
        &config,
        &state,
        std::path::Path::new("/nonexistent"),
    );
    assert!(out.contains("<h3>check-kernel</h3>"), "{out}");
    assert!(
        out.contains("<th scope=\"row\">mainline</th><td>40</td><td>38/2</td><td>900/12</td>"),
        "{out}"
    );
    assert!(
        out.contains("regression on staging-mainline: test pass rate -3.1 points"),
        "{out}"
    );
}

#[test]
fn log_paths_stay_inside_the_runs_directory() {
    let dir = std::path::Path::new("/runs");
    assert_eq!(
        history::log_path(dir, "r1", "a/b"),
        Some(dir.join("r1").join("a,b.log"))
    );
    for bad in ["..", "../x", ".", "", "a/b"] {
        assert_eq!(history::log_path(dir, bad, "s"), None, "{bad}");
    }
}
