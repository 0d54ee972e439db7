//! Which rootfs builds passed on staging, from staging's state. A config passes when its
//! last build succeeded and published a `url`, then `rootfs.stage` succeeded (staging was
//! pointed at it), then `<rootfs.tests>[<config>]` and every step of `rootfs.checks`
//! succeeded, each in its last run. Anything else leaves it out, with the reason.

use jiff::Timestamp;

use crate::apply::events::StepResult;
use crate::config::Config;
use crate::config::rootfs::RootfsConfig;
use crate::state::{State, StepRecord};

/// One step's success, as evidence.
#[derive(Debug, Clone)]
pub struct Success {
    pub step: String,
    pub run: String,
    pub at: Timestamp,
}

/// A config that passed: what its build published and what passed after it.
#[derive(Debug, Clone)]
pub struct Passed {
    pub config: String,
    pub url: String,
    pub build: Success,
    /// `stage`, the config's test, the checks: in that order.
    pub after: Vec<Success>,
}

/// A config left out, and why.
#[derive(Debug, Clone)]
pub struct LeftOut {
    pub config: String,
    pub reason: String,
}

/// What state says of every config `rootfs.build` builds.
pub fn judge(rootfs: &RootfsConfig, config: &Config, state: &State) -> (Vec<Passed>, Vec<LeftOut>) {
    let mut passed = Vec::new();
    let mut left_out = Vec::new();
    for (key, build) in rootfs.builds(config) {
        match one(rootfs, state, key, build) {
            Ok(p) => passed.push(p),
            Err(reason) => left_out.push(LeftOut {
                config: key.to_string(),
                reason,
            }),
        }
    }
    (passed, left_out)
}

fn when(at: Option<Timestamp>) -> String {
    at.map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "at an unknown time".into())
}

/// `step` succeeded, last, after `since`.
fn succeeded_after(
    state: &State,
    step: &str,
    since: Timestamp,
    what: &str,
) -> Result<Success, String> {
    let Some(r) = state.steps.get(step) else {
        return Err(format!("`{step}` has never run since the build"));
    };
    let StepRecord {
        result,
        run_id,
        finished_at,
        ..
    } = r;
    let at = finished_at.unwrap_or(Timestamp::MIN);
    if at <= since {
        return Err(format!(
            "`{step}` has not run since {what} (its last run: {} in run {run_id})",
            when(*finished_at)
        ));
    }
    if *result != StepResult::Success {
        return Err(format!(
            "`{step}` {} in run {run_id} ({})",
            result.as_str(),
            when(*finished_at)
        ));
    }
    Ok(Success {
        step: step.to_string(),
        run: run_id.clone(),
        at,
    })
}

fn one(rootfs: &RootfsConfig, state: &State, key: &str, build: &str) -> Result<Passed, String> {
    let record = state
        .steps
        .get(build)
        .ok_or_else(|| format!("not built yet (`{build}` has never run)"))?;
    if record.result != StepResult::Success {
        return Err(format!(
            "its last build failed: `{build}` {} in run {} ({})",
            record.result.as_str(),
            record.run_id,
            when(record.finished_at)
        ));
    }
    let url = record
        .outputs
        .as_ref()
        .and_then(|o| o.get("outputs")?.get("url")?.as_str())
        .ok_or_else(|| {
            format!("`{build}` published no `url` (a line `url=...` in $KCIDEPLOY_OUTPUT)")
        })?;
    super::rewrite::published(url)?;
    let build = Success {
        step: build.to_string(),
        run: record.run_id.clone(),
        at: record.finished_at.unwrap_or(Timestamp::MIN),
    };
    let mut after = Vec::new();
    let mut since = (build.at, "the build".to_string());
    if let Some(stage) = &rootfs.stage {
        let s = succeeded_after(state, &stage.value, since.0, &since.1)?;
        since = (s.at, format!("`{}` staged it", stage.value));
        after.push(s);
    }
    let mut then: Vec<String> = rootfs
        .tests
        .iter()
        .map(|t| format!("{}[{key}]", t.value))
        .collect();
    then.extend(rootfs.checks.iter().map(|c| c.value.clone()));
    for step in then {
        after.push(succeeded_after(state, &step, since.0, &since.1)?);
    }
    Ok(Passed {
        config: key.to_string(),
        url: url.to_string(),
        build,
        after,
    })
}

/// The promotion PR's text: each promoted config with its evidence, then those left out.
pub fn body(
    plan: &str,
    file: &str,
    promoted: &[(&Passed, String)],
    left_out: &[LeftOut],
) -> String {
    let mut text = format!(
        "Rootfs images built ahead and tested on staging (plan `{plan}`), promoted into `{file}` by `kcideploy promote-rootfs`.\n\n\
         | rootfs | URL | was | built | passed on staging |\n|---|---|---|---|---|\n"
    );
    for (p, was) in promoted {
        let after: Vec<String> = p
            .after
            .iter()
            .map(|s| format!("`{}` ✓ run `{}` ({})", s.step, s.run, when(Some(s.at))))
            .collect();
        text.push_str(&format!(
            "| `{}` | {} | {was} | `{}` run `{}` ({}) | {} |\n",
            p.config,
            p.url,
            p.build.step,
            p.build.run,
            when(Some(p.build.at)),
            after.join("<br>")
        ));
    }
    if !left_out.is_empty() {
        text.push_str("\nLeft out (not promoted):\n\n");
        for l in left_out {
            text.push_str(&format!("- `{}`: {}\n", l.config, l.reason));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::unspanned;

    fn rootfs() -> RootfsConfig {
        RootfsConfig {
            build: unspanned("build".into()),
            stage: Some(unspanned("stage".into())),
            checks: vec![unspanned("check".into())],
            tests: Some(unspanned("test".into())),
            repo: unspanned("config".into()),
            file: "rootfs.yaml".into(),
        }
    }

    fn record(result: StepResult, at: i64, outputs: Option<serde_json::Value>) -> StepRecord {
        StepRecord {
            digest: String::new(),
            result,
            run_id: format!("run-{at}"),
            finished_at: Some(Timestamp::from_second(at).expect("time")),
            duration_ms: 0,
            outputs,
            params: None,
            params_run: None,
        }
    }

    /// build at 10, stage at `stage`, test at `test`, check at 40, all successes.
    fn state(stage: i64, test: (StepResult, i64)) -> State {
        let url =
            serde_json::json!({"outputs": {"url": "https://s.example/r/debian/a/20261130.0"}});
        let mut s = State::new();
        s.steps.insert(
            "build[a]".into(),
            record(StepResult::Success, 10, Some(url)),
        );
        s.steps
            .insert("stage".into(), record(StepResult::Success, stage, None));
        s.steps
            .insert("test[a]".into(), record(test.0, test.1, None));
        s.steps
            .insert("check".into(), record(StepResult::Success, 40, None));
        s
    }

    #[test]
    fn a_config_passes_only_in_the_order_build_stage_tests_checks() {
        let r = rootfs();
        let passed =
            one(&r, &state(20, (StepResult::Success, 30)), "a", "build[a]").expect("passed");
        let steps: Vec<&str> = passed.after.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(steps, ["stage", "test[a]", "check"]);
        assert_eq!(passed.build.run, "run-10");
        // Staged before it was built (a resumed run rebuilt it): not tested yet.
        let err = one(&r, &state(5, (StepResult::Success, 30)), "a", "build[a]").unwrap_err();
        assert!(err.contains("`stage` has not run since the build"), "{err}");
        // Its test ran before it was staged, or failed.
        let err = one(&r, &state(20, (StepResult::Success, 15)), "a", "build[a]").unwrap_err();
        assert!(
            err.contains("`test[a]` has not run since `stage` staged it"),
            "{err}"
        );
        let err = one(&r, &state(20, (StepResult::Failed, 30)), "a", "build[a]").unwrap_err();
        assert_eq!(err, "`test[a]` failed in run run-30 (1970-01-01 00:00:30Z)");
        // A build that published no URL, or never ran.
        let mut s = state(20, (StepResult::Success, 30));
        s.steps.get_mut("build[a]").expect("build").outputs = None;
        assert!(
            one(&r, &s, "a", "build[a]")
                .unwrap_err()
                .contains("published no `url`")
        );
        assert!(
            one(&r, &s, "b", "build[b]")
                .unwrap_err()
                .contains("not built yet")
        );
    }
}
