//! The real binary on temporary fixtures: exit codes, saved plans, JSON, DOT, demo, schema.

mod common;

use common::*;

const PLAN: &str = r#"
version: 1
name: cli
repos:
  pipe:
    url: repos/pipe.git
    pending: { branches: "pr/*", trusted: [alice@example.org] }
components:
  config: { repo: pipe, paths: ["config/**"] }
steps:
  restart: { kind: command, on: [config], with: { run: ["true"] } }
  kernel: { kind: command, cycle: full, always: true, needs: [restart], with: { shell: "true" } }
"#;

fn fixture_with_change() -> (Fixture, std::path::PathBuf) {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    let config = fx.config(PLAN);
    fx.deploy(&config, &[("pipe", remote.main)], Some(NOW - 3600));
    let path = config.path.clone();
    (fx, path)
}

#[test]
fn detailed_exitcode_is_2_with_changes_and_0_without() {
    let (fx, plan) = fixture_with_change();
    let (code, out, err) = output(kcideploy().args(["plan", "-f"]).arg(&plan).args([
        "-detailed-exitcode",
        "--at",
        at().as_str(),
    ]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("+ restart (command)"), "{out}");
    assert!(
        out.contains("pr/1 → config/a.yaml → config/** → config → restart"),
        "{out}"
    );
    assert!(out.contains("Plan: 1 step to run"), "{out}");
    // Without the flag, changes are still success.
    let (code, _, _) = output(
        kcideploy()
            .args(["plan", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0);
    // Nothing pending: 0.
    let remote = git2::Repository::open_bare(fx.path().join("repos/pipe.git")).expect("repo");
    kcideploy::gitops::scratch::delete_branch(&remote, "pr/1").expect("delete");
    let (code, out, _) = output(kcideploy().args(["plan", "-f"]).arg(&plan).args([
        "-detailed-exitcode",
        "--cycle",
        "partial",
        "--at",
        at().as_str(),
    ]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No steps to run"), "{out}");
}

#[test]
fn saved_plan_round_trips_and_tampering_is_detected() {
    let (fx, plan) = fixture_with_change();
    let saved = fx.path().join("out/plan.json");
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "-f"])
            .arg(&plan)
            .arg("-out")
            .arg(&saved)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("Saved the plan to {}", saved.display())),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).expect("saved")).expect("json");
    assert_eq!(json["format_version"], "1");
    assert_eq!(
        json["fingerprint"]["repos"]["pipe"]["heads"]["pr/1"]
            .as_str()
            .map(str::len),
        Some(40)
    );

    let (code, shown, _) = output(kcideploy().arg("show").arg(&saved));
    assert_eq!(code, 0);
    assert!(shown.contains("+ restart (command)"), "{shown}");

    let tampered = std::fs::read_to_string(&saved)
        .expect("read")
        .replace("\"state_serial\": 1", "\"state_serial\": 7");
    std::fs::write(&saved, tampered).expect("write");
    let (code, _, err) = output(kcideploy().arg("show").arg(&saved));
    assert_eq!(code, 1);
    assert!(
        err.contains("the fingerprint does not match its digest"),
        "{err}"
    );
}

#[test]
fn json_output_has_the_documented_shape() {
    let (_fx, plan) = fixture_with_change();
    let (code, out, _) = output(
        kcideploy()
            .args(["plan", "--json", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(json["format_version"], "1");
    assert_eq!(json["cycle"], "partial");
    let repo = &json["repos"]["pipe"];
    for key in ["base", "staging"] {
        assert_eq!(repo[key].as_str().map(str::len), Some(40), "{key}");
    }
    assert_eq!(repo["included"][0]["id"], "pr/1");
    assert_eq!(repo["changed_paths"], serde_json::json!(["config/a.yaml"]));
    assert_eq!(json["components"]["config"]["affected"], true);
    assert_eq!(
        json["components"]["config"]["because"][0],
        serde_json::json!({"change": "pr/1", "path": "config/a.yaml", "pattern": "config/**"})
    );
    assert_eq!(json["steps"][0]["name"], "restart");
    assert_eq!(json["steps"][0]["action"], "run");
    assert_eq!(json["steps"][1]["action"], "skip");
    assert_eq!(json["steps"][1]["because"][0]["reason"], "full_cycle_only");
}

#[test]
fn bad_input_exits_1_with_a_location() {
    let fx = Fixture::new();
    let plan = fx.plan_file(&PLAN.replace("on: [config]", "on: [konfig]"));
    let (code, out, err) = output(kcideploy().args(["plan", "-f"]).arg(&plan));
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    // Line 12: the fixture adds a `state:` line after `name:`.
    assert!(
        err.contains(&format!(
            "{}:12:34: step `restart` is triggered by unknown component `konfig`",
            plan.display()
        )),
        "{err}"
    );

    let (code, _, err) = output(kcideploy().args(["validate", "-f"]).arg(&plan));
    assert_eq!(code, 1);
    assert!(err.contains("did you mean `config`?"), "{err}");

    let (code, _, err) = output(
        kcideploy()
            .args(["plan", "-f"])
            .arg(fx.path().join("missing.yaml")),
    );
    assert_eq!(code, 1);
    assert!(err.contains("cannot read plan file"), "{err}");
}

#[test]
fn bad_at_and_unreachable_repo_are_clear_errors() {
    let (_fx, plan) = fixture_with_change();
    let (code, _, err) = output(
        kcideploy()
            .args(["plan", "-f"])
            .arg(&plan)
            .args(["--at", "yesterday"]),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("--at `yesterday` is not an RFC 3339 time"),
        "{err}"
    );

    let fx = Fixture::new();
    let plan = fx.plan_file(PLAN);
    let (code, _, err) = output(kcideploy().args(["plan", "-f"]).arg(&plan));
    assert_eq!(code, 1);
    assert!(err.contains("cannot fetch repo `pipe`"), "{err}");
}

#[test]
fn state_with_a_newer_format_is_refused() {
    let (fx, plan) = fixture_with_change();
    let state = fx.path().join(".kcideploy/cli.state.json");
    std::fs::write(
        &state,
        r#"{"format_version": 9, "serial": 3, "lineage": "x"}"#,
    )
    .expect("write");
    let (code, _, err) = output(kcideploy().args(["plan", "-f"]).arg(&plan));
    assert_eq!(code, 1);
    assert!(err.contains("format version 9"), "{err}");
}

#[test]
fn graph_is_dot_and_marks_planned_steps() {
    let (fx, plan) = fixture_with_change();
    let (code, dot, _) = output(kcideploy().args(["graph", "-f"]).arg(&plan));
    assert_eq!(code, 0);
    assert!(dot.starts_with("digraph kcideploy {"), "{dot}");
    assert!(dot.contains("\"restart\" -> \"kernel\";"), "{dot}");
    assert!(!dot.contains("filled"), "{dot}");
    let saved = fx.path().join("plan.json");
    kcideploy()
        .args(["plan", "-f"])
        .arg(&plan)
        .arg("-out")
        .arg(&saved)
        .args(["--at", at().as_str()])
        .assert()
        .success();
    let (_, dot, _) = output(
        kcideploy()
            .args(["graph", "-f"])
            .arg(&plan)
            .arg("--plan")
            .arg(&saved),
    );
    assert!(
        dot.contains(
            "\"restart\" [label=\"restart\\ncommand\", style=filled, fillcolor=palegreen];"
        ),
        "{dot}"
    );
    assert!(
        dot.contains("\"kernel\" [label=\"kernel\\ncommand (full)\", style=dashed];"),
        "{dot}"
    );
}

#[test]
fn committed_schema_is_fresh() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/plan.schema.json"
    ))
    .expect("schemas/plan.schema.json");
    let generated = format!("{}\n", kcideploy::config::schema::plan_schema_json());
    assert!(
        committed == generated,
        "schemas/plan.schema.json is stale: run `cargo run -- schema > schemas/plan.schema.json`"
    );
    let included = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/include.schema.json"
    ))
    .expect("schemas/include.schema.json");
    assert!(
        included == format!("{}\n", kcideploy::config::schema::include_schema_json()),
        "schemas/include.schema.json is stale: run `cargo run -- schema --included > schemas/include.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&generated).expect("json");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown fields must be rejected by editors too"
    );
}

#[test]
fn shipped_plans_validate() {
    for plan in [
        "plans/demo.yaml",
        "plans/staging.yaml",
        "plans/production.yaml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(plan);
        let (code, out, err) = output(kcideploy().args(["validate", "-f"]).arg(&path));
        assert_eq!(code, 0, "{plan}: {err}");
        assert!(out.contains("valid plan file"), "{out}");
    }
}

#[test]
fn demo_plans_the_local_repos() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = dir.path().join("demo");
    let (code, out, err) = output(kcideploy().args(["demo", "--dir"]).arg(&demo));
    assert_eq!(code, 0, "{err}");
    for line in [
        "partial cycle (auto: last full cycle 2h ago; next one due in 4h)",
        "+ pr/1 ",
        "+ pr/10 ",
        "pr/2 ",
        "untrusted: author mallory@example.net is not in pending.trusted",
        "conflict: conflicts with pr/1 merged before it in config/pipeline.yaml",
        "stale: head commit is 30d old",
        "skip_list: listed in pending.skip",
        "pr/10 → src/trigger.py → src/** → pipeline-src → build-pipeline-image",
        "~ push-test-kernel",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // The docs-only change is merged but triggers no image build or restart.
    assert!(out.contains("+ pr/4 "), "{out}");
    assert!(
        !out.contains("pr/4 → README.md → ** → pipeline-any → restart"),
        "{out}"
    );
    // The demo's plan file works with the CLI afterwards.
    let (code, _, err) = output(
        kcideploy()
            .args(["plan", "-f"])
            .arg(demo.join("demo.yaml"))
            .args(["--cycle", "full"]),
    );
    assert_eq!(code, 0, "{err}");
    // A non-empty directory is refused.
    let (code, _, err) = output(kcideploy().args(["demo", "--dir"]).arg(&demo));
    assert_eq!(code, 1);
    assert!(err.contains("is not empty"), "{err}");
}

#[test]
fn completions_and_man_page() {
    let (code, bash, _) = output(kcideploy().args(["completions", "bash"]));
    assert_eq!(code, 0);
    assert!(
        bash.contains("_kcideploy()") && bash.contains("force-unlock"),
        "{bash}"
    );
    let (code, zsh, _) = output(kcideploy().args(["completions", "zsh"]));
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef kcideploy"), "{zsh}");
    let (code, man, _) = output(kcideploy().arg("man"));
    assert_eq!(code, 0);
    assert!(
        man.contains(".TH kcideploy 1") && man.contains("apply"),
        "{man}"
    );
}

#[test]
fn readme_plan_file_reference_is_generated_from_the_schema() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let start = readme
        .find("<!-- plan-reference:start -->\n")
        .expect("start marker")
        + "<!-- plan-reference:start -->\n".len();
    let end = readme
        .find("<!-- plan-reference:end -->")
        .expect("end marker");
    assert!(
        readme[start..end] == kcideploy::config::schema::reference_markdown(),
        "README's plan file reference is stale: replace it with `kcideploy schema --reference`"
    );
}
