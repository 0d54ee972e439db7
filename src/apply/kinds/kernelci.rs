//! KernelCI steps: drain the queue; the pipe-cleaner's check (find the test kernel's
//! checkout, wait for its results, compare them with the previous run of the same tree). The
//! pipe-cleaner's push and phases are in `pipe_cleaner.rs`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::pipe_cleaner::TestKernel;
use super::{Attempt, Kind, StepCtx, StepError};
use crate::apply::process::{Cancel, cancelled};
use crate::config::kinds::{KernelciDrainWith, PipeCleanerWith, Thresholds};
use crate::kernelci::{Api, node_id};

pub(super) fn failed(e: impl std::fmt::Display) -> StepError {
    StepError::Failed(e.to_string())
}

/// Sleep `interval` (at most until `deadline`), or stop on cancellation.
pub(super) async fn pause(
    ctx: &mut StepCtx<'_>,
    interval: Duration,
    deadline: Instant,
) -> Result<(), StepError> {
    let wait = interval.min(deadline.saturating_duration_since(Instant::now()));
    tokio::select! {
        _ = tokio::time::sleep(wait) => Ok(()),
        _ = cancelled(&mut ctx.cancel, Cancel::Graceful) => Err(StepError::Cancelled),
    }
}

fn age(d: Duration) -> String {
    crate::support::text::age(d.as_secs() as i64)
}

/// Wait until no node (of the owner/kind) is running, available or closing.
pub async fn drain(ctx: &mut StepCtx<'_>, with: &KernelciDrainWith) -> Result<(), StepError> {
    let api = Api::new(&ctx.run.config).map_err(failed)?;
    let mut filters = Vec::new();
    if let Some(owner) = &with.owner {
        filters.push(("owner".to_string(), owner.clone()));
    }
    if let Some(kind) = &with.kind {
        filters.push(("kind".to_string(), kind.clone()));
    }
    let limit = ctx.limit;
    let deadline = Instant::now() + limit;
    loop {
        let left = api.unfinished(&filters).await.map_err(failed)?;
        ctx.progress(format!("{left} node(s) running, available or closing"));
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "{left} node(s) still running, available or closing after {}",
                age(limit)
            )));
        }
        pause(ctx, with.interval.0, deadline).await?;
    }
}

/// Counts of one kind of node by result.
fn count(nodes: &[Value], kind: &str) -> Value {
    let mut c = json!({"total": 0, "pass": 0, "fail": 0, "skip": 0, "incomplete": 0, "none": 0});
    for n in nodes.iter().filter(|n| n["kind"] == kind) {
        let result = n["result"].as_str().unwrap_or("none");
        let key = if ["pass", "fail", "skip", "incomplete"].contains(&result) {
            result
        } else {
            "none"
        };
        c[key] = json!(c[key].as_u64().unwrap_or(0) + 1);
        c["total"] = json!(c["total"].as_u64().unwrap_or(0) + 1);
    }
    c
}

/// Builds and tests of a tree, by result.
pub fn summarise(nodes: &[Value], checkout_result: &str) -> Value {
    json!({"checkout": checkout_result, "kbuild": count(nodes, "kbuild"), "test": count(nodes, "test")})
}

fn num(v: &Value, kind: &str, key: &str) -> f64 {
    v[kind][key].as_f64().unwrap_or(0.0)
}

/// Pass rate in percent of pass + fail (+ incomplete for builds).
fn pass_rate(v: &Value, kind: &str) -> Option<f64> {
    let pass = num(v, kind, "pass");
    let decided = pass + num(v, kind, "fail") + num(v, kind, "incomplete");
    (decided > 0.0).then(|| 100.0 * pass / decided)
}

/// Compare a summary with the previous one of the same tree; `Err(report)` on a regression.
pub fn compare(previous: &Value, now: &Value, t: &Thresholds) -> Result<String, String> {
    let mut report = String::from("| metric | previous | now | delta |\n|---|---|---|---|\n");
    let mut regressed = false;
    let builds = (
        num(previous, "kbuild", "total"),
        num(now, "kbuild", "total"),
    );
    let drop = if builds.0 > 0.0 {
        100.0 * (builds.0 - builds.1) / builds.0
    } else {
        0.0
    };
    let bad = drop > t.build_drop_percent;
    regressed |= bad;
    let _ = writeln!(
        report,
        "| builds | {} | {} | {:+.1}% (limit -{}%){} |",
        builds.0,
        builds.1,
        -drop,
        t.build_drop_percent,
        if bad { " ✗" } else { "" }
    );
    for (label, kind, limit) in [
        ("build pass rate", "kbuild", t.build_pass_rate_drop_points),
        ("test pass rate", "test", t.pass_rate_drop_points),
    ] {
        let (p, n) = (pass_rate(previous, kind), pass_rate(now, kind));
        let delta = match (p, n) {
            (Some(p), Some(n)) => n - p,
            _ => 0.0,
        };
        let bad = delta < -limit;
        regressed |= bad;
        let show = |r: Option<f64>| r.map(|r| format!("{r:.1}%")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            report,
            "| {label} | {} | {} | {delta:+.1} points (limit -{limit}){} |",
            show(p),
            show(n),
            if bad { " ✗" } else { "" }
        );
    }
    let _ = writeln!(
        report,
        "| tests | {} | {} | {:+} |",
        num(previous, "test", "total"),
        num(now, "test", "total"),
        num(now, "test", "total") - num(previous, "test", "total")
    );
    if regressed { Err(report) } else { Ok(report) }
}

/// Wait for the results of `kernel` and compare them with the previous ones of its tree:
/// `treeid`, `summary` and `summaries` (every tree's last good one).
pub(super) async fn check(
    ctx: &mut StepCtx<'_>,
    with: &PipeCleanerWith,
    kernel: &TestKernel,
    deadline: Instant,
) -> Result<Value, StepError> {
    let api = Api::new(&ctx.run.config).map_err(failed)?;
    let previous = ctx
        .run
        .previous_outputs
        .get(ctx.name)
        .cloned()
        .unwrap_or(Value::Null);
    let checkout = find_checkout(ctx, &api, with, kernel, deadline).await?;
    let checkout_id = node_id(&checkout).unwrap_or_default().to_string();
    let treeid = checkout["treeid"]
        .as_str()
        .unwrap_or(&checkout_id)
        .to_string();
    let tree_filter = vec![("treeid".to_string(), treeid.clone())];
    let checkout_result =
        wait_for_tree(ctx, &api, with, kernel, &checkout_id, &treeid, deadline).await?;
    let nodes = api.nodes(&tree_filter).await.map_err(failed)?;
    let summary = summarise(&nodes, &checkout_result);
    let summaries = compare_with_last(ctx, with, &previous, kernel, &summary)?;
    Ok(json!({"treeid": treeid, "summary": summary, "summaries": summaries}))
}

/// The checkout node the pipeline made for the test kernel's commit.
async fn find_checkout(
    ctx: &mut StepCtx<'_>,
    api: &Api,
    with: &PipeCleanerWith,
    kernel: &TestKernel,
    deadline: Instant,
) -> Result<Value, StepError> {
    let filters = vec![
        ("kind".to_string(), "checkout".to_string()),
        (
            "data.kernel_revision.tree".to_string(),
            with.api_tree.clone(),
        ),
        (
            "data.kernel_revision.branch".to_string(),
            kernel.branch.clone(),
        ),
        (
            "data.kernel_revision.commit".to_string(),
            kernel.sha.clone(),
        ),
    ];
    let checkout_deadline = Instant::now() + with.checkout_timeout.0;
    loop {
        if let Some(node) = api
            .nodes(&filters)
            .await
            .map_err(failed)?
            .into_iter()
            .next()
        {
            return Ok(node);
        }
        ctx.progress(format!(
            "waiting for the checkout of {} ({})",
            kernel.short(),
            kernel.tag
        ));
        let until = checkout_deadline.min(deadline);
        if Instant::now() >= until {
            return Err(failed(format!(
                "no checkout node for {} {} after {}: is the pipeline's trigger running?",
                kernel.branch,
                kernel.short(),
                age(with.checkout_timeout.0.min(ctx.limit))
            )));
        }
        pause(ctx, with.interval.0, until).await?;
    }
}

/// Wait until nothing of the checkout's tree is unfinished; a failed checkout ends it at once.
/// The checkout's result.
pub(super) async fn wait_for_tree(
    ctx: &mut StepCtx<'_>,
    api: &Api,
    with: &PipeCleanerWith,
    kernel: &TestKernel,
    checkout_id: &str,
    treeid: &str,
    deadline: Instant,
) -> Result<String, StepError> {
    let tree_filter = vec![("treeid".to_string(), treeid.to_string())];
    loop {
        let node = api.node(checkout_id).await.map_err(failed)?;
        let result = node["result"].as_str().unwrap_or("").to_string();
        if node["state"] == "done" && (result == "fail" || result == "incomplete") {
            let why = node["data"]["error_msg"]
                .as_str()
                .unwrap_or("no error message");
            return Err(failed(format!(
                "the checkout {checkout_id} of {} {} ended {result}: {why}",
                kernel.branch,
                kernel.short()
            )));
        }
        let left = api.unfinished(&tree_filter).await.map_err(failed)?;
        ctx.progress(format!("{left} node(s) of tree {treeid} not done"));
        if left == 0 && node["state"] == "done" {
            return Ok(result);
        }
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "{left} node(s) of {} {} still not done after {}",
                kernel.branch,
                kernel.tag,
                age(ctx.limit)
            )));
        }
        pause(ctx, with.interval.0, deadline).await?;
    }
}

/// Log the summary and compare it with the tree's last one (`Err` on a regression); the
/// summaries of every tree, this one's replaced.
fn compare_with_last(
    ctx: &StepCtx<'_>,
    with: &PipeCleanerWith,
    previous: &Value,
    kernel: &TestKernel,
    summary: &Value,
) -> Result<Value, StepError> {
    let TestKernel {
        tree, branch, tag, ..
    } = kernel;
    let mut summaries = previous["summaries"].clone();
    if !summaries.is_object() {
        summaries = json!({});
    }
    let mut log = ctx.log;
    let _ = std::io::Write::write_fmt(
        &mut log,
        format_args!("summary of {branch} {tag}: {summary}\n"),
    );
    if let Some(before) = summaries.get(tree.as_str()).filter(|v| v.is_object()) {
        match compare(before, summary, &with.thresholds) {
            Ok(report) => {
                let _ = std::io::Write::write_fmt(
                    &mut log,
                    format_args!("no regression against the previous {branch}:\n{report}\n"),
                );
            }
            Err(report) => {
                return Err(failed(format!(
                    "regression on {branch} ({tag}) against its previous run:\n{report}"
                )));
            }
        }
    }
    summaries[tree.as_str()] = summary.clone();
    Ok(summaries)
}

/// `kernelci_drain`.
pub struct Drain(pub KernelciDrainWith);

impl Kind for Drain {
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a> {
        Box::pin(async move { drain(ctx, &self.0).await.map(|()| None) })
    }

    fn watches_limit(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(builds: u64, build_pass: u64, test_pass: u64, test_fail: u64) -> Value {
        json!({
            "checkout": "pass",
            "kbuild": {"total": builds, "pass": build_pass, "fail": builds - build_pass, "skip": 0, "incomplete": 0, "none": 0},
            "test": {"total": test_pass + test_fail, "pass": test_pass, "fail": test_fail, "skip": 0, "incomplete": 0, "none": 0},
        })
    }

    #[test]
    fn thresholds() {
        let t = Thresholds::default();
        assert!(compare(&summary(10, 10, 95, 5), &summary(10, 10, 94, 6), &t).is_ok());
        let report = compare(&summary(10, 10, 95, 5), &summary(10, 10, 80, 20), &t).unwrap_err();
        assert!(
            report.contains("| test pass rate | 95.0% | 80.0% | -15.0 points (limit -5) ✗ |"),
            "{report}"
        );
        let report = compare(&summary(10, 10, 95, 5), &summary(8, 8, 95, 5), &t).unwrap_err();
        assert!(
            report.contains("| builds | 10 | 8 | -20.0% (limit -10%) ✗ |"),
            "{report}"
        );
        assert!(
            compare(&summary(10, 10, 95, 5), &summary(10, 9, 95, 5), &t).is_err(),
            "build pass rate -10 points"
        );
    }
}
