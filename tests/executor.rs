//! The executor through the library: an approval being asked does not hold up other steps
//! (the terminal prompt reads on a blocking thread), and a stop request from the caller
//! stops a running step within its grace. Real processes, a real pipe for the terminal.

mod common;

use std::io::{BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use kcideploy::apply::approve::TerminalPrompt;
use kcideploy::apply::cancel::{CancelReason, StopSource};
use kcideploy::apply::events::PlainReporter;
use kcideploy::apply::{ApplyOptions, Controls, StopSignal};
use kcideploy::planner::CycleRequest;
use kcideploy::state::Backend;

fn plan_text(steps: &str) -> String {
    format!(
        r#"version: 1
name: t
repos:
  pipe: {{ url: repos/pipe.git, pending: {{ branches: "pr/*" }} }}
components:
  config: {{ repo: pipe, paths: ["config/**"] }}
steps:
{steps}"#
    )
}

/// What the prompt wrote.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Write for Screen {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_waiting_prompt_does_not_block_a_parallel_step() {
    let fx = Fixture::new();
    fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let done = fx.path().join("a.done");
    let config = fx.config(&plan_text(&format!(
        "  a: {{ kind: command, always: true, with: {{ shell: \"sleep 0.2; touch {}\" }} }}\n  b: {{ kind: command, always: true, approve: true, with: {{ shell: \"touch b.done\" }} }}\n",
        done.display()
    )));
    let plan = fx.plan(&config, CycleRequest::Partial);
    let backend = Backend::open(&config).expect("backend");
    let lock = backend.lock("test", Duration::ZERO).expect("lock");

    // The person at the terminal answers once kcideploy recorded `a` as finished in state:
    // only possible if the executor went on while the prompt waited.
    let (reader, mut writer) = std::io::pipe().expect("pipe");
    let state_reader = backend.clone();
    let person = std::thread::spawn(move || {
        let recorded = || {
            state_reader
                .read()
                .ok()
                .flatten()
                .and_then(|s| s.current_run)
                .is_some_and(|r| {
                    r.steps
                        .iter()
                        .any(|s| s.name == "a" && s.result == "success")
                })
        };
        let start = Instant::now();
        while !recorded() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let answer = if recorded() { "yes\n" } else { "no\n" };
        let _ = writer.write_all(answer.as_bytes());
        answer
    });
    let screen = Screen::default();
    let controls = Controls {
        approver: Arc::new(TerminalPrompt::new(
            Box::new(BufReader::new(reader)),
            Box::new(screen.clone()),
        )),
        stop: StopSignal::never(),
    };
    let opts = ApplyOptions {
        handle_signals: false,
        ..Default::default()
    };
    let mut reporter = PlainReporter::default();
    reporter.capture = true;
    let report = runtime()
        .block_on(kcideploy::apply::apply(
            config,
            plan,
            &backend,
            &lock,
            &opts,
            &controls,
            &mut reporter,
        ))
        .expect("apply");
    assert_eq!(
        person.join().expect("person"),
        "yes\n",
        "`a` finished first"
    );
    assert_eq!(report.result, "success", "{report:?}");
    assert!(fx.path().join("b.done").exists(), "the approved step ran");
    let asked = String::from_utf8(screen.0.lock().expect("screen").clone()).expect("utf-8");
    assert!(asked.contains("Step `b` needs approval."), "{asked}");
}

#[test]
fn a_stop_from_the_caller_stops_a_running_step_within_its_grace() {
    let fx = Fixture::new();
    fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let started = fx.path().join("long.pid");
    let config = fx.config(&plan_text(&format!(
        "  long: {{ kind: command, always: true, with: {{ shell: \"echo $$ > {}; exec sleep 60\" }} }}\n  next: {{ kind: command, always: true, needs: [long], with: {{ run: [\"true\"] }} }}\n",
        started.display()
    )));
    let plan = fx.plan(&config, CycleRequest::Partial);
    let backend = Backend::open(&config).expect("backend");
    let lock = backend.lock("test", Duration::ZERO).expect("lock");
    let (source, stop) = StopSource::new();
    let controls = Controls {
        approver: Arc::new(kcideploy::apply::approve::AutoApprove),
        stop,
    };
    let opts = ApplyOptions {
        handle_signals: false,
        grace: Duration::from_secs(2),
        ..Default::default()
    };
    let mut reporter = PlainReporter::default();
    reporter.capture = true;
    let rt = runtime();
    let (report, stopped_after) = rt.block_on(async {
        let apply = kcideploy::apply::apply(
            config,
            plan,
            &backend,
            &lock,
            &opts,
            &controls,
            &mut reporter,
        );
        tokio::pin!(apply);
        let start = Instant::now();
        loop {
            tokio::select! {
                r = &mut apply => panic!("finished before the stop: {r:?}"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if started.exists() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "never started");
        }
        let at = Instant::now();
        source.stop(CancelReason::Shutdown, "the test");
        let report = apply.await.expect("apply");
        (report, at.elapsed())
    });
    assert_eq!(report.result, "cancelled");
    assert!(stopped_after < Duration::from_secs(30), "{stopped_after:?}");
    let steps: Vec<(&str, &str)> = report
        .steps
        .iter()
        .map(|(n, r)| (n.as_str(), r.as_str()))
        .collect();
    assert_eq!(steps, [("long", "cancelled"), ("next", "cancelled")]);
}
