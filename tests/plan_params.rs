//! Plans show what each step will do (its settings resolved, secrets masked) and, once a step
//! succeeded, what changed since: `~ key: old -> new`, unified diffs for multi-line values,
//! word diffs for long lines, new settings `+`, gone ones `-`, steps no longer in the file.

mod common;

use common::*;

const SCRIPT_V1: &str = "set -e\\necho one\\necho two\\necho three\\n";
const SCRIPT_V2: &str = "set -e\\necho one\\necho TWO\\necho three\\n";

fn plan_text(image: &str, script: &str, long_arg: &str, extra_step: bool) -> String {
    let mut text = format!(
        r#"version: 1
name: t
repos:
  pipe: {{ url: repos/pipe.git, pending: {{ branches: "pr/*" }} }}
components:
  config: {{ repo: pipe, paths: ["config/**"] }}
steps:
  build:
    kind: command
    always: true
    with:
      run: [echo, kci, docker, build, kernelci, api, --prefix, "ghcr.io/kernelci/staging-", --build-arg, "core_rev=${{repos.pipe.sha}}", "{long_arg}"]
      env: {{ IMAGE: "{image}", GITHUB_TOKEN: "s3cr3t-canary", KCI_SETTINGS: /home/kernelci/config/kernelci.toml }}
  script:
    kind: command
    always: true
    with: {{ shell: "{script}" }}
"#
    );
    if extra_step {
        text.push_str("  old-step: { kind: command, always: true, with: { run: [\"true\"] } }\n");
    }
    text
}

fn plan(path: &std::path::Path, json: bool) -> String {
    let mut cmd = kcideploy();
    cmd.args(["plan", "--cycle", "partial", "-f"]).arg(path);
    if json {
        cmd.arg("--json");
    }
    let (code, out, err) = output(&mut cmd);
    assert_eq!(code, 0, "{out}{err}");
    out
}

#[test]
fn a_plan_shows_resolved_settings_then_what_changed_since_the_last_success() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let long_v1 = "--label=org.kernelci.description=the kernelci api image built from the staging branch of today";
    let path = fx.plan_file(&plan_text(
        "kernelci/staging-kernelci:api",
        SCRIPT_V1,
        long_v1,
        true,
    ));

    // Nothing ran yet: every setting, resolved.
    let text = plan(&path, false);
    let sha = remote.main.to_string();
    assert!(
        text.contains(&format!(
            "with.run: echo kci docker build kernelci api --prefix ghcr.io/kernelci/staging- --build-arg core_rev={sha} '{long_v1}'"
        )),
        "{text}"
    );
    assert!(
        text.contains("with.env.IMAGE: kernelci/staging-kernelci:api"),
        "{text}"
    );
    assert!(text.contains("with.env.GITHUB_TOKEN: (masked)"), "{text}");
    assert!(
        text.contains("with.shell:\n          set -e\n          echo one"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "no colours off a terminal");
    let json = plan(&path, true);
    assert!(
        !text.contains("s3cr3t") && !json.contains("s3cr3t"),
        "{json}"
    );
    let doc: serde_json::Value = serde_json::from_str(&json).expect("json");
    let build = doc["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == "build")
        .expect("build")
        .clone();
    assert_eq!(
        build["params"]["env.IMAGE"],
        "kernelci/staging-kernelci:api"
    );
    assert_eq!(build["params"]["env.GITHUB_TOKEN"], "(masked)");

    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&path),
    );
    assert_eq!(code, 0, "{out}{err}");
    let state = std::fs::read_to_string(fx.path().join(".kcideploy/t.state.json")).expect("state");
    assert!(!state.contains("s3cr3t"), "no secret in state");

    // The image tag, the script and the long argument change; old-step goes.
    let long_v2 = long_v1.replace("of today", "of tomorrow");
    std::fs::write(
        &path,
        with_local_state(&plan_text(
            "kernelci/staging-kernelci:api2",
            SCRIPT_V2,
            &long_v2,
            false,
        )),
    )
    .expect("write");
    let text = plan(&path, false);
    assert!(
        text.contains(
            "~ with.env.IMAGE: kernelci/staging-kernelci:api -> kernelci/staging-kernelci:api2"
        ),
        "{text}"
    );
    // The multi-line script as a unified diff of the changed line only.
    assert!(text.contains("~ with.shell:"), "{text}");
    assert!(
        text.contains("    -echo two") && text.contains("    +echo TWO"),
        "{text}"
    );
    assert!(
        !text.contains("    -echo one"),
        "unchanged lines are context: {text}"
    );
    // The long command line as a word diff.
    assert!(text.contains("~ with.run:"), "{text}");
    assert!(
        text.contains("[-today'-]") || text.contains("[-today-]"),
        "{text}"
    );
    assert!(
        text.contains("{+tomorrow'+}") || text.contains("{+tomorrow+}"),
        "{text}"
    );
    // Unchanged settings are folded.
    assert!(
        text.contains("(2 setting(s) as in its last successful run)"),
        "{text}"
    );
    assert!(!text.contains("with.env.KCI_SETTINGS"), "folded: {text}");
    assert!(
        text.contains(
            "Steps no longer in the plan file (their records stay in state):\n  - old-step"
        ),
        "{text}"
    );
    let json = plan(&path, true);
    let doc: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(doc["removed_steps"][0], "old-step");
    let build = doc["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == "build")
        .expect("build")
        .clone();
    let image = build["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["key"] == "env.IMAGE")
        .expect("image change")
        .clone();
    assert_eq!(image["old"], "kernelci/staging-kernelci:api");
    assert_eq!(image["new"], "kernelci/staging-kernelci:api2");
    assert!(
        build["compared_with"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
}
