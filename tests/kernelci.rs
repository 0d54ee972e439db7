//! KernelCI steps against a fake KernelCI API on 127.0.0.1 and real bare repos: drain, the
//! pipe-cleaner's rotation, patches, tags, a pass that is not flagged, a regression that is,
//! a failing checkout, a checkout that never comes.

mod common;
#[path = "common/fake_kernelci.rs"]
mod fake_kernelci;

use std::sync::{Arc, Mutex};

use common::*;
use fake_kernelci::{FakeKci, Scenario, SharedKci};
use serde_json::json;

fn apply(plan: &std::path::Path) -> (i32, String, String) {
    output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "full", "-f"])
            .arg(plan),
    )
}

const PATCH: &str = "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\nFrom: Staging <staging@kernelci.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nSubject: [PATCH] staging: add a marker file\n\n---\n kernelci-staging | 1 +\n 1 file changed, 1 insertion(+)\n create mode 100644 kernelci-staging\n\ndiff --git a/kernelci-staging b/kernelci-staging\nnew file mode 100644\nindex 0000000..3b18e51\n--- /dev/null\n+++ b/kernelci-staging\n@@ -0,0 +1 @@\n+hello world\n-- \n2.39.2\n\n";

struct Setup {
    fx: Fixture,
    kci: SharedKci,
    api: String,
}

fn setup() -> Setup {
    let fx = Fixture::new();
    fx.repo(
        "core",
        &[
            ("patches/0001-marker.patch", Some(PATCH)),
            ("README", Some("core\n")),
        ],
    );
    for tree in ["next", "mainline"] {
        let path = fx.path().join(format!("repos/up-{tree}.git"));
        let repo = git2::Repository::init_bare(&path).expect("init");
        let tip = kcideploy::gitops::scratch::commit(
            &repo,
            None,
            &[("Makefile", Some(format!("# {tree}\n").as_str()))],
            ALICE,
            NOW - DAY,
            tree,
        )
        .expect("commit");
        kcideploy::gitops::scratch::set_branch(&repo, "master", tip).expect("branch");
    }
    git2::Repository::init_bare(fx.path().join("repos/linux.git")).expect("linux");
    let kci: SharedKci = Arc::new(Mutex::new(FakeKci::default()));
    kci.lock().expect("k").kernel = Some(fx.path().join("repos/linux.git"));
    let api = fake_kernelci::start(kci.clone());
    Setup { fx, kci, api }
}

fn plan(api: &str, steps: &str) -> String {
    format!(
        "version: 1\nname: t\nkernelci: {{ api_url: \"{api}\" }}\nrepos:\n  core: {{ url: repos/core.git }}\nsteps:\n{steps}"
    )
}

const PIPE_CLEANER: &str = r#"  pipe-cleaner:
    kind: pipe_cleaner
    cycle: full
    always: true
    timeout: 30s
    with:
      push_url: repos/linux.git
      trees:
        - { name: next, url: repos/up-next.git, branch: master }
        - { name: mainline, url: repos/up-mainline.git, branch: master }
      patches: { repo: core, dir: patches }
      checkout_timeout: 5s
      interval: 50ms
"#;

#[test]
fn drain_waits_for_the_queue_and_times_out_when_it_does_not_empty() {
    let s = setup();
    {
        let mut k = s.kci.lock().expect("k");
        for _ in 0..3 {
            k.add("job", "staging", "t1", json!({}), Some("pass"), false);
        }
        k.add("job", "production", "t2", json!({}), None, true);
    }
    // The nodes stay running until the drain has counted them once (its three count queries,
    // one per unfinished state); then they finish, and the next round counts none.
    s.kci.lock().expect("k").hold = true;
    let path = s.fx.plan_file(&plan(
        &s.api,
        "  drain: { kind: kernelci_drain, cycle: full, always: true, timeout: 10m, with: { owner: staging, interval: 50ms } }\n",
    ));
    let applying = {
        let path = path.clone();
        std::thread::spawn(move || apply(&path))
    };
    let start = std::time::Instant::now();
    while s.kci.lock().expect("k").counts < 3 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60) && !applying.is_finished(),
            "the drain never counted the nodes"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    s.kci.lock().expect("k").hold = false;
    let (code, out, err) = applying.join().expect("apply");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("drain: 3 node(s) running, available or closing"),
        "{out}"
    );
    assert!(
        out.contains("drain: 0 node(s) running, available or closing"),
        "{out}"
    );

    let path = s.fx.plan_file(&plan(
        &s.api,
        "  drain: { kind: kernelci_drain, cycle: full, always: true, timeout: 1s, with: { kind: job, interval: 100ms } }\n",
    ));
    let (code, out, _) = apply(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("1 node(s) still running, available or closing after 1s"),
        "{out}"
    );
}

#[test]
fn pipe_cleaner_rotates_trees_and_catches_a_regression_but_not_a_pass() {
    let s = setup();
    let path = s.fx.plan_file(&plan(&s.api, PIPE_CLEANER));
    let linux = git2::Repository::open_bare(s.fx.path().join("repos/linux.git")).expect("linux");
    // Tags are named after the run's date (the wall clock of the binary, recorded in the
    // state): each expectation follows the date of its run, so midnight UTC may fall anywhere.
    let mut tags = Tags::default();

    // 1: next, with the staging patch and the marker commit; tagged; results recorded.
    let (code, out, err) = apply(&path);
    assert_eq!(code, 0, "{out}{err}");
    let tag = tags.next(&s.fx, "next");
    assert!(tag.ends_with(".0"), "the day's first tag is .0: {tag}");
    let head = marker_commit(&linux, "staging-next", &tag);
    let patched = head.parent(0).expect("patch commit");
    assert_eq!(
        String::from_utf8_lossy(patched.message_bytes())
            .lines()
            .next(),
        Some("staging: add a marker file")
    );
    assert!(
        head.tree()
            .expect("tree")
            .get_path(std::path::Path::new("kernelci-staging"))
            .is_ok()
    );
    let state = s.fx.backend("t").read().expect("s").expect("s");
    let outputs = state.steps["pipe-cleaner"]
        .outputs
        .clone()
        .expect("outputs");
    assert_eq!(outputs["tree"], "next");
    assert_eq!(outputs["summaries"]["next"]["kbuild"]["pass"], 10);
    assert_eq!(outputs["summaries"]["next"]["test"]["fail"], 2);

    // 2: mainline (rotation); nothing to compare with yet.
    let (code, out, err) = apply(&path);
    assert_eq!(code, 0, "{out}{err}");
    assert!(linux.find_reference("refs/heads/staging-mainline").is_ok());
    tags.next(&s.fx, "mainline");

    // 3: next again, same results: compared, not flagged; the day's second tag.
    let (code, out, err) = apply(&path);
    assert_eq!(code, 0, "{out}{err}");
    let tag = tags.next(&s.fx, "next");
    assert!(
        linux.refname_to_id(&format!("refs/tags/{tag}")).is_ok(),
        "{tag}"
    );
    let logs = std::fs::read_dir(s.fx.path().join(".kcideploy/runs/t"))
        .expect("runs")
        .flatten()
        .filter_map(|r| std::fs::read_to_string(r.path().join("pipe-cleaner.log")).ok())
        .collect::<String>();
    assert!(
        logs.contains("no regression against the previous staging-next"),
        "{logs}"
    );

    // 4: mainline gets worse tests: a regression, reported as a table.
    s.kci.lock().expect("k").scenario = Scenario {
        tests: [vec!["pass"; 30], vec!["fail"; 10]].concat(),
        ..Scenario::default()
    };
    let (code, out, _) = apply(&path);
    assert_eq!(code, 1, "{out}");
    let tag = tags.next(&s.fx, "mainline");
    assert!(
        out.contains(&format!(
            "regression on staging-mainline ({tag}) against its previous run"
        )),
        "{out}"
    );
    assert!(
        out.contains("| test pass rate | 95.0% | 75.0% | -20.0 points (limit -5) ✗ |"),
        "{out}"
    );
}

/// The pipe-cleaner's tags so far: `staging-<tree>-<day>.<n>`, n counting that tree's runs
/// on that day before this one.
#[derive(Default)]
struct Tags {
    runs: Vec<(String, String)>,
}

impl Tags {
    /// The tag of the run just finished, on `tree`, dated as the state says it ran.
    fn next(&mut self, fx: &Fixture, tree: &str) -> String {
        let state = fx
            .backend("t")
            .read()
            .expect("state parses")
            .expect("state exists");
        // A failed run stays the current run (to resume); a finished one is in the history.
        let day = state
            .current_run
            .as_ref()
            .or(state.history.last())
            .expect("a run")
            .started_at
            .strftime("%Y%m%d")
            .to_string();
        let run = (tree.to_string(), day.clone());
        // As kernel.py counts them: the day's first tag is `.0`.
        let n = self.runs.iter().filter(|r| **r == run).count();
        self.runs.push(run);
        format!("staging-{tree}-{day}.{n}")
    }
}

/// The head of `branch`: the marker commit kernel.py makes (one file named after the branch
/// holding the tag, by the bot, the tag as subject), with the annotated `tag` on it.
fn marker_commit<'r>(linux: &'r git2::Repository, branch: &str, tag: &str) -> git2::Commit<'r> {
    let head = linux
        .find_reference(&format!("refs/heads/{branch}"))
        .expect("pushed")
        .peel_to_commit()
        .expect("commit");
    assert_eq!(
        String::from_utf8_lossy(head.message_bytes()).lines().next(),
        Some(tag)
    );
    assert_eq!(head.author().name_bytes(), b"kernelci.org bot");
    assert_eq!(head.author().email_bytes(), b"bot@kernelci.org");
    let tree = head.tree().expect("tree");
    let marker = tree
        .get_path(std::path::Path::new(branch))
        .expect("the marker file is named after the branch");
    let blob = marker
        .to_object(linux)
        .expect("blob")
        .peel_to_blob()
        .expect("blob");
    assert_eq!(
        blob.content(),
        tag.as_bytes(),
        "the marker file holds the tag"
    );
    let diff = linux
        .diff_tree_to_tree(
            Some(&head.parent(0).expect("parent").tree().expect("tree")),
            Some(&tree),
            None,
        )
        .expect("diff");
    assert_eq!(diff.deltas().len(), 1, "the marker commit changes one file");
    let annotated = linux
        .find_reference(&format!("refs/tags/{tag}"))
        .expect("tag pushed")
        .peel_to_tag()
        .expect("an annotated tag");
    assert_eq!(annotated.target_id(), head.id());
    assert_eq!(
        String::from_utf8_lossy(annotated.message_bytes().unwrap_or_default()).trim(),
        tag
    );
    assert_eq!(
        annotated.tagger().map(|t| t.name_bytes().to_vec()),
        Some(b"kernelci.org bot".to_vec())
    );
    head
}

#[test]
fn a_failing_checkout_fails_the_step() {
    let s = setup();
    s.kci.lock().expect("k").scenario.checkout_result = "fail";
    let path = s.fx.plan_file(&plan(&s.api, PIPE_CLEANER));
    let (code, out, _) = apply(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("of staging-next") && out.contains("ended fail"),
        "{out}"
    );
}

#[test]
fn a_checkout_that_never_comes_times_out() {
    let s = setup();
    s.kci.lock().expect("k").ignore_new = true;
    let path = s.fx.plan_file(&plan(
        &s.api,
        &PIPE_CLEANER.replace("checkout_timeout: 5s", "checkout_timeout: 1s"),
    ));
    let (code, out, _) = apply(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no checkout node for staging-next")
            && out.contains("after 1s: is the pipeline's trigger running?"),
        "{out}"
    );
}

#[test]
fn a_rate_limited_api_is_waited_for_not_failed() {
    // Before: any 4xx, 429 included, failed the step at once.
    let s = setup();
    s.kci.lock().expect("k").too_many_next = 2;
    let path = s.fx.plan_file(&plan(
        &s.api,
        "  drain: { kind: kernelci_drain, cycle: full, always: true, timeout: 60s, with: { interval: 50ms } }\n",
    ));
    let (code, out, err) = apply(&path);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        s.kci.lock().expect("k").too_many,
        2,
        "both 429s were answered"
    );
}

#[test]
fn api_errors_are_clear() {
    let s = setup();
    let path = s.fx.plan_file(&plan(
        &format!("{}/wrong-prefix", s.api),
        "  drain: { kind: kernelci_drain, cycle: full, always: true, timeout: 5s, with: { interval: 50ms } }\n",
    ));
    let (code, out, _) = apply(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("GET /latest/count: 404 Not Found: \"Not Found\""),
        "{out}"
    );
}

/// The pipe-cleaner's record in state.
fn record(fx: &Fixture) -> kcideploy::state::StepRecord {
    let state = fx
        .backend("t")
        .read()
        .expect("state parses")
        .expect("state exists");
    state.steps["pipe-cleaner"].clone()
}

/// The pipe-cleaner's logs, each read from where the previous call stopped: what the last
/// apply wrote (a resumed run appends to its log).
#[derive(Default)]
struct Logs {
    seen: std::collections::HashMap<std::path::PathBuf, usize>,
}

impl Logs {
    fn new_text(&mut self, fx: &Fixture) -> String {
        let mut text = String::new();
        for run in std::fs::read_dir(fx.path().join(".kcideploy/runs/t"))
            .expect("runs")
            .flatten()
        {
            let path = run.path().join("pipe-cleaner.log");
            let Ok(all) = std::fs::read_to_string(&path) else {
                continue;
            };
            let seen = self.seen.insert(path, all.len()).unwrap_or(0);
            text.push_str(&all[seen..]);
        }
        text
    }
}

/// Issue #14 item 3: a failed cycle records the failure next to the last good outputs, so
/// the rotation goes on from the last success and the summaries it compares with are kept.
#[test]
fn a_failed_cycle_keeps_the_rotation_and_the_summaries_of_the_last_good_one() {
    let s = setup();
    let path = s.fx.plan_file(&plan(&s.api, PIPE_CLEANER));
    let mut logs = Logs::default();

    // 1: next passes.
    let (code, out, err) = apply(&path);
    assert_eq!(code, 0, "{out}{err}");
    let good = record(&s.fx);
    let good_outputs = good.outputs.clone().expect("outputs of a success");
    assert_eq!(good_outputs["tree"], "next");
    assert_eq!(good_outputs["next_index"], 1);
    logs.new_text(&s.fx);

    // 2: mainline's checkout fails: the failure is recorded, the outputs of 1 are kept.
    s.kci.lock().expect("k").scenario.checkout_result = "fail";
    let (code, out, _) = apply(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("of staging-mainline") && out.contains("ended fail"),
        "{out}"
    );
    let failed = record(&s.fx);
    assert_eq!(failed.result, "failed");
    assert_ne!(failed.run_id, good.run_id, "the failure's run is recorded");
    assert_eq!(
        failed.outputs.as_ref(),
        Some(&good_outputs),
        "the outputs of the last success are kept"
    );

    // 3: mainline again (the rotation goes on from 1, not from the start); next's summary
    // from 1 is still there.
    s.kci.lock().expect("k").scenario = fake_kernelci::Scenario::default();
    let (code, out, err) = apply(&path);
    assert_eq!(code, 0, "{out}{err}");
    let outputs = record(&s.fx).outputs.expect("outputs");
    assert_eq!(outputs["tree"], "mainline", "{outputs}");
    assert_eq!(outputs["next_index"], 2, "{outputs}");
    assert_eq!(
        outputs["summaries"]["next"], good_outputs["summaries"]["next"],
        "{outputs}"
    );
    logs.new_text(&s.fx);

    // 4: next, a little worse: compared with the summary of 1.
    s.kci.lock().expect("k").scenario.tests = [vec!["pass"; 37], vec!["fail"; 3]].concat();
    let (code, out, err) = apply(&path);
    assert_eq!(code, 0, "{out}{err}");
    let log = logs.new_text(&s.fx);
    assert!(
        log.contains("no regression against the previous staging-next")
            && log.contains("| test pass rate | 95.0% | 92.5% | -2.5 points (limit -5) |"),
        "{log}"
    );
}

/// Issue #14 item 3: the cycle after a regression compares with the last good result, not
/// with nothing: the regression fails it again until the results recover.
#[test]
fn a_regression_is_not_forgotten_after_the_cycle_it_failed() {
    let s = setup();
    let one_tree = PIPE_CLEANER.replace(
        "        - { name: mainline, url: repos/up-mainline.git, branch: master }\n",
        "",
    );
    let path = s.fx.plan_file(&plan(&s.api, &one_tree));
    let mut logs = Logs::default();
    let regression = "| test pass rate | 95.0% | 75.0% | -20.0 points (limit -5) ✗ |";

    // 1: passes at 95%.
    let (code, out, err) = apply(&path);
    assert_eq!(code, 0, "{out}{err}");
    logs.new_text(&s.fx);

    // 2 and 3: 75%, a regression against 1 both times.
    s.kci.lock().expect("k").scenario.tests = [vec!["pass"; 30], vec!["fail"; 10]].concat();
    for cycle in [2, 3] {
        let (code, out, _) = apply(&path);
        assert_eq!(code, 1, "cycle {cycle}: {out}");
        assert!(
            out.contains("regression on staging-next") && out.contains(regression),
            "cycle {cycle}: {out}"
        );
    }
    logs.new_text(&s.fx);

    // 4: 92.5%, no regression against 1; it is the last good result now.
    s.kci.lock().expect("k").scenario.tests = [vec!["pass"; 37], vec!["fail"; 3]].concat();
    let (code, out, err) = apply(&path);
    assert_eq!(code, 0, "{out}{err}");
    let log = logs.new_text(&s.fx);
    assert!(
        log.contains("| test pass rate | 95.0% | 92.5% | -2.5 points (limit -5) |"),
        "{log}"
    );
    let outputs = record(&s.fx).outputs.expect("outputs");
    assert_eq!(
        outputs["summaries"]["next"]["test"]["pass"], 37,
        "{outputs}"
    );
}

/// The real cycle's order (issue #16): push the kernel, restart the pipeline (its trigger
/// polls the watched branches once, at start-up), then check the results.
const SPLIT: &str = r#"  push-kernel:
    kind: pipe_cleaner
    cycle: full
    always: true
    timeout: 30s
    with:
      phase: push
      push_url: repos/linux.git
      trees:
        - { name: next, url: repos/up-next.git, branch: master }
        - { name: mainline, url: repos/up-mainline.git, branch: master }
      patches: { repo: core, dir: patches }
  pipeline-up:
    kind: command
    cycle: full
    always: true
    after: [push-kernel]
    with:
      shell: >-
        date -u +%Y-%m-%dT%H:%M:%S.%NZ > restart-times && sleep 0.3 &&
        git --git-dir=repos/linux.git for-each-ref --format='%(objectname)' refs/heads/ > trigger-saw &&
        date -u +%Y-%m-%dT%H:%M:%S.%NZ >> restart-times
  check-kernel:
    kind: pipe_cleaner
    cycle: full
    always: true
    needs: [push-kernel]
    after: [pipeline-up]
    timeout: 30s
    with: { phase: check, push_step: push-kernel, checkout_timeout: 5s, interval: 50ms }
"#;

/// The first line of a step's log in the last run: `--- <step>: attempt 1 of 1, <time> ---`.
fn started_at(fx: &Fixture, run: &str, step: &str) -> jiff::Timestamp {
    let log = std::fs::read_to_string(
        fx.path()
            .join(format!(".kcideploy/runs/t/{run}/{step}.log")),
    )
    .expect("step log");
    let first = log.lines().next().unwrap_or_default();
    first
        .rsplit(", ")
        .next()
        .and_then(|t| t.strip_suffix(" ---"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no start time in {first:?}"))
}

#[test]
fn the_kernel_is_pushed_before_the_restart_and_checked_after_it() {
    let s = setup();
    s.kci.lock().expect("k").trigger_saw = Some(s.fx.path().join("trigger-saw"));
    let path = s.fx.plan_file(&plan(&s.api, SPLIT));
    let linux = git2::Repository::open_bare(s.fx.path().join("repos/linux.git")).expect("linux");
    let mut tags = Tags::default();
    for (cycle, tree) in [(1, "next"), (2, "mainline"), (3, "next")] {
        let (code, out, err) = apply(&path);
        assert_eq!(code, 0, "cycle {cycle}: {out}{err}");
        let tag = tags.next(&s.fx, tree);
        let branch = format!("staging-{tree}");
        let head = marker_commit(&linux, &branch, &tag);
        let state =
            s.fx.backend("t")
                .read()
                .expect("state parses")
                .expect("state exists");
        let run = state.history.last().expect("a run").id.clone();
        let pushed = state.steps["push-kernel"]
            .outputs
            .clone()
            .expect("push outputs");
        let checked = state.steps["check-kernel"]
            .outputs
            .clone()
            .expect("check outputs");
        // The push rotates and records the kernel; the check took that very kernel.
        assert_eq!(pushed["tree"], tree, "cycle {cycle}: {pushed}");
        let next_index = (cycle - 1) % 2 + 1;
        assert_eq!(pushed["next_index"], next_index, "cycle {cycle}: {pushed}");
        assert_eq!(pushed["commit"], head.id().to_string(), "cycle {cycle}");
        assert_eq!(pushed["tag"], tag.as_str(), "cycle {cycle}");
        assert_eq!(
            checked["commit"], pushed["commit"],
            "cycle {cycle}: {checked}"
        );
        assert_eq!(checked["tree"], tree, "cycle {cycle}: {checked}");
        assert_eq!(
            checked["summaries"][tree]["kbuild"]["pass"], 10,
            "{checked}"
        );
        // Push, then the restart (which saw the pushed commit), then the check.
        let saw = std::fs::read_to_string(s.fx.path().join("trigger-saw")).expect("restarted");
        assert!(saw.contains(&head.id().to_string()), "cycle {cycle}: {saw}");
        let times = std::fs::read_to_string(s.fx.path().join("restart-times")).expect("times");
        let times: Vec<jiff::Timestamp> =
            times.lines().map(|t| t.parse().expect("a time")).collect();
        let pushed_at = state.steps["push-kernel"].finished_at.expect("finished");
        assert!(
            pushed_at <= times[0],
            "cycle {cycle}: push {pushed_at}, restart {times:?}"
        );
        let check_start = started_at(&s.fx, &run, "check-kernel");
        assert!(
            times[1] <= check_start,
            "cycle {cycle}: restart {times:?}, check {check_start}"
        );
        assert_eq!(
            s.kci.lock().expect("k").unseen_queries,
            0,
            "cycle {cycle}: the check asked for the checkout before the restart"
        );
        if cycle == 3 {
            let log = std::fs::read_to_string(
                s.fx.path()
                    .join(format!(".kcideploy/runs/t/{run}/check-kernel.log")),
            )
            .expect("log");
            assert!(
                log.contains("no regression against the previous staging-next"),
                "{log}"
            );
        }
    }
}

#[test]
fn a_check_step_must_need_a_push_step() {
    let s = setup();
    let cases = [
        (
            SPLIT.replace("    needs: [push-kernel]\n", ""),
            "with.push_step `push-kernel` must also be in `needs`",
        ),
        (
            SPLIT.replace("push_step: push-kernel", "push_step: pipeline-up"),
            "with.push_step `pipeline-up` is not a pipe_cleaner step with phase: push",
        ),
        (
            SPLIT.replace("push_step: push-kernel, ", ""),
            "needs with.push_step",
        ),
        (
            SPLIT.replace(
                "push_step: push-kernel, ",
                "push_url: repos/linux.git, push_step: push-kernel, ",
            ),
            "with.push_url: belongs to the push step",
        ),
    ];
    for (text, want) in cases {
        let path = s.fx.plan_file(&plan(&s.api, &text));
        let (code, out, err) = output(kcideploy().args(["validate", "-f"]).arg(&path));
        assert_ne!(code, 0, "{out}{err}");
        assert!(
            err.contains(want) || out.contains(want),
            "want {want:?}:\n{out}{err}"
        );
    }
}

/// The staging trigger watches only the branches of `config/trees/kernelci.yaml` (the real
/// file, from the snapshot): a tree whose branch is not listed is refused before any push.
#[test]
fn watched_by_refuses_a_branch_the_trigger_does_not_watch() {
    let s = setup();
    let trees = std::fs::read_to_string(format!(
        "{}/tests/fixtures/kernelci-snapshot/kernelci-pipeline/tree/config/trees/kernelci.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("snapshot");
    s.fx.repo(
        "kernelci-pipeline",
        &[("config/trees/kernelci.yaml", Some(trees.as_str()))],
    );
    let text = |tree: &str| {
        plan(&s.api, &PIPE_CLEANER.replace("name: next", &format!("name: {tree}")).replace(
            "      patches: { repo: core, dir: patches }\n",
            "      patches: { repo: core, dir: patches }\n      watched_by: { repo: kernelci-pipeline, file: config/trees/kernelci.yaml }\n",
        ))
        .replace(
            "repos:\n",
            "repos:\n  kernelci-pipeline: { url: repos/kernelci-pipeline.git }\n",
        )
    };
    let linux = git2::Repository::open_bare(s.fx.path().join("repos/linux.git")).expect("linux");

    let (code, out, _) = apply(&s.fx.plan_file(&text("fixes")));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the pipeline's trigger does not watch staging-fixes")
            && out.contains("kernelci-pipeline:config/trees/kernelci.yaml")
            && out.contains("list staging-mainline, staging-next, staging-stable"),
        "{out}"
    );
    assert!(
        linux.find_reference("refs/heads/staging-fixes").is_err(),
        "nothing pushed"
    );

    let (code, out, err) = apply(&s.fx.plan_file(&text("next")));
    assert_eq!(code, 0, "{out}{err}");
    assert!(linux.find_reference("refs/heads/staging-next").is_ok());
}

/// A resumed run does not push again: its check takes the kernel that the run's push step
/// pushed before the run was interrupted.
#[test]
fn a_resumed_run_checks_the_kernel_its_earlier_part_pushed() {
    let s = setup();
    s.kci.lock().expect("k").ignore_new = true;
    let path = s.fx.plan_file(&plan(
        &s.api,
        &SPLIT.replace("checkout_timeout: 5s", "checkout_timeout: 1s"),
    ));
    let linux = git2::Repository::open_bare(s.fx.path().join("repos/linux.git")).expect("linux");
    let (code, out, _) = apply(&path);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no checkout node for staging-next"), "{out}");
    let pushed = linux
        .refname_to_id("refs/heads/staging-next")
        .expect("pushed");

    s.kci.lock().expect("k").ignore_new = false;
    let (code, out, err) = apply(&path);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Resuming run"), "{out}");
    assert_eq!(
        linux
            .refname_to_id("refs/heads/staging-next")
            .expect("pushed"),
        pushed,
        "not pushed again"
    );
    let state =
        s.fx.backend("t")
            .read()
            .expect("state parses")
            .expect("state exists");
    let checked = state.steps["check-kernel"]
        .outputs
        .clone()
        .expect("outputs");
    assert_eq!(checked["commit"], pushed.to_string(), "{checked}");
}
