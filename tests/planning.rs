//! Planning against real git repos: exclusions, merges, attribution, components, steps, cycles.

mod common;

use common::*;
use kcideploy::planner::{Action, CycleRequest, DiffBasis, ExclusionReason, StepReason};

const PLAN: &str = r#"
version: 1
name: t
repos:
  pipe:
    url: repos/pipe.git
    pending:
      branches: "pr/*"
      trusted: [alice@example.org, bob@example.org]
      skip: ["pr/skip-*"]
      max_age: 14d
components:
  config: { repo: pipe, paths: ["config/**"], exclude: ["**/*.md"] }
  src: { repo: pipe, paths: ["src/*.py"] }
steps:
  push: { kind: git_push, on: [config, src], with: { repo: pipe } }
  build: { kind: command, on: [src], after: [push], with: { run: ["true"] } }
  restart: { kind: command, on: [config], needs: [build], with: { run: ["true"] } }
  kernel: { kind: command, cycle: full, always: true, needs: [restart], with: { run: ["true"] } }
  check: { kind: command, cycle: full, needs: [kernel], with: { run: ["true"] } }
"#;

const TEN_LINES: &str = "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n";

fn base_files() -> Vec<(&'static str, Option<&'static str>)> {
    vec![
        ("config/a.yaml", Some("a: 1\n")),
        ("config/README.md", Some("about config\n")),
        ("config/long.yaml", Some(TEN_LINES)),
        ("src/main.py", Some("print(1)\n")),
        ("src/sub/deep.py", Some("pass\n")),
        ("doc/index.md", Some("docs\n")),
    ]
}

/// pr/1 ok, pr/2 untrusted, pr/3 conflicts with pr/1, pr/4 stale, pr/5 empty, pr/skip-me
/// skipped, pr/6 and pr/10 ok after the conflict.
fn exclusion_fixture() -> (Fixture, Remote) {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &base_files());
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    remote.branch("pr/2", EVE, &[("src/main.py", Some("print('eve')\n"))]);
    remote.branch("pr/3", BOB, &[("config/a.yaml", Some("a: 3\n"))]);
    remote.branch_at(
        "pr/4",
        ALICE,
        NOW - 20 * DAY,
        &[("doc/old.md", Some("old\n"))],
    );
    kcideploy::gitops::scratch::set_branch(&remote.repo, "pr/5", remote.main).expect("branch");
    remote.branch("pr/skip-me", ALICE, &[("doc/skip.md", Some("skip\n"))]);
    remote.branch("pr/6", BOB, &[("src/main.py", Some("print(6)\n"))]);
    remote.branch("pr/10", ALICE, &[("doc/ten.md", Some("ten\n"))]);
    (fx, remote)
}

#[test]
fn every_exclusion_reason_and_natural_order() {
    let (fx, remote) = exclusion_fixture();
    let config = fx.config(PLAN);
    fx.deploy(&config, &[("pipe", remote.main)], Some(NOW - 3600));
    let plan = fx.plan(&config, CycleRequest::Auto);
    let repo = &plan.repos["pipe"];
    let included: Vec<&str> = repo.included.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(included, ["pr/1", "pr/6", "pr/10"]);
    let excluded: Vec<(&str, ExclusionReason)> = repo
        .excluded
        .iter()
        .map(|e| (e.id.as_str(), e.reason))
        .collect();
    assert_eq!(
        excluded,
        [
            ("pr/2", ExclusionReason::Untrusted),
            ("pr/3", ExclusionReason::Conflict),
            ("pr/4", ExclusionReason::Stale),
            ("pr/5", ExclusionReason::Empty),
            ("pr/skip-me", ExclusionReason::SkipList),
        ]
    );
    let conflict = &repo.excluded[1];
    assert_eq!(conflict.paths, ["config/a.yaml"]);
    assert!(
        conflict.detail.contains("with pr/1 merged before it"),
        "{}",
        conflict.detail
    );
    assert_eq!(plan.summary.included, 3);
    assert_eq!(plan.summary.excluded, 5);
}

#[test]
fn conflict_leaves_earlier_merges_intact() {
    let (fx, _remote) = exclusion_fixture();
    let config = fx.config(PLAN);
    let plan = fx.plan(&config, CycleRequest::Partial);
    let staging = &plan.repos["pipe"].staging;
    let cache = fx.path().join("cache/pipe.git");
    assert_eq!(
        Remote::file_at(&cache, staging, "config/a.yaml").as_deref(),
        Some("a: 2\n")
    );
    assert_eq!(
        Remote::file_at(&cache, staging, "src/main.py").as_deref(),
        Some("print(6)\n")
    );
    assert_eq!(
        Remote::file_at(&cache, staging, "doc/ten.md").as_deref(),
        Some("ten\n")
    );
    assert_eq!(
        Remote::file_at(&cache, staging, "doc/old.md"),
        None,
        "stale change merged"
    );
    assert_eq!(
        Remote::file_at(&cache, staging, "doc/skip.md"),
        None,
        "skipped change merged"
    );
    // The staging revision is a chain of merge commits on the base.
    let repo = git2::Repository::open_bare(&cache).expect("cache");
    let tip = repo
        .find_commit(git2::Oid::from_str(staging).expect("oid"))
        .expect("commit");
    assert_eq!(tip.parent_count(), 2);
    assert!(String::from_utf8_lossy(tip.message_bytes()).starts_with("kcideploy: merge pr/10 "));
}

#[test]
fn staging_revision_is_deterministic_across_caches() {
    let (fx, _remote) = exclusion_fixture();
    let config = fx.config(PLAN);
    let first = fx.plan(&config, CycleRequest::Partial);
    std::fs::remove_dir_all(fx.path().join("cache")).expect("rm cache");
    let second = fx.plan(&config, CycleRequest::Partial);
    assert_eq!(first, second);
}

#[test]
fn attribution_of_paths_to_changes_base_and_removed() {
    let fx = Fixture::new();
    let mut remote = fx.repo("pipe", &base_files());
    remote.branch(
        "pr/a",
        ALICE,
        &[(
            "config/long.yaml",
            Some("one\n2\n3\n4\n5\n6\n7\n8\n9\n10\n"),
        )],
    );
    remote.branch(
        "pr/b",
        BOB,
        &[
            ("config/long.yaml", Some("1\n2\n3\n4\n5\n6\n7\n8\n9\nten\n")),
            ("src/main.py", Some("b\n")),
        ],
    );
    remote.branch("pr/gone", BOB, &[("src/gone.py", Some("gone\n"))]);
    let config = fx.config(PLAN);
    // Deploy main + pr/gone, then drop pr/gone and move main.
    let first = fx.plan(&config, CycleRequest::Partial);
    let gone = kcideploy::gitops::scratch::commit(
        &git2::Repository::open_bare(fx.path().join("cache/pipe.git")).expect("cache"),
        Some(remote.main),
        &[("src/gone.py", Some("gone\n"))],
        BOB,
        NOW - DAY,
        "deployed before",
    )
    .expect("commit");
    assert_ne!(first.repos["pipe"].staging, gone.to_string());
    fx.deploy(&config, &[("pipe", gone)], Some(NOW - 3600));
    kcideploy::gitops::scratch::delete_branch(&remote.repo, "pr/gone").expect("delete");
    remote.advance_main(&[("doc/index.md", Some("new docs\n"))]);

    let plan = fx.plan(&config, CycleRequest::Partial);
    let repo = &plan.repos["pipe"];
    assert_eq!(repo.diff_basis, DiffBasis::Deployed);
    let attribution: Vec<(&str, Vec<&str>)> = repo
        .attribution
        .iter()
        .map(|c| {
            (
                c.path.as_str(),
                c.changes.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        attribution,
        [
            ("config/long.yaml", vec!["pr/a", "pr/b"]),
            ("doc/index.md", vec!["base"]),
            ("src/gone.py", vec!["removed"]),
            ("src/main.py", vec!["pr/b"]),
        ]
    );
    // Components carry the chain change → path → pattern.
    let config_component = &plan.components["config"];
    assert!(config_component.affected);
    let chains: Vec<(&str, &str, &str)> = config_component
        .because
        .iter()
        .map(|r| (r.change.as_str(), r.path.as_str(), r.pattern.as_str()))
        .collect();
    assert_eq!(
        chains,
        [
            ("pr/a", "config/long.yaml", "config/**"),
            ("pr/b", "config/long.yaml", "config/**")
        ]
    );
}

#[test]
fn globs_with_excludes_and_single_directory_star() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &base_files());
    remote.branch(
        "pr/1",
        ALICE,
        &[
            ("config/README.md", Some("more about config\n")),
            ("src/sub/deep.py", Some("deeper\n")),
        ],
    );
    let config = fx.config(PLAN);
    fx.deploy(&config, &[("pipe", remote.main)], Some(NOW - 3600));
    let plan = fx.plan(&config, CycleRequest::Partial);
    assert_eq!(
        plan.repos["pipe"].changed_paths,
        ["config/README.md", "src/sub/deep.py"]
    );
    assert!(
        !plan.components["config"].affected,
        "config/**/*.md is excluded"
    );
    assert!(
        !plan.components["src"].affected,
        "src/*.py must not cross directories"
    );
    assert_eq!(runs(&plan), Vec::<&str>::new());
    assert!(!plan.has_changes());
}

#[test]
fn needs_propagates_and_after_does_not() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &base_files());
    remote.branch("pr/1", ALICE, &[("src/main.py", Some("print(2)\n"))]);
    let config = fx.config(PLAN);
    fx.deploy(&config, &[("pipe", remote.main)], Some(NOW - 3600));
    let plan = fx.plan(&config, CycleRequest::Partial);
    // src → build; restart needs build; push is triggered by src too.
    assert_eq!(runs(&plan), ["push", "build", "restart"]);
    let restart = plan
        .steps
        .iter()
        .find(|s| s.name == "restart")
        .expect("restart");
    assert_eq!(
        restart.because,
        [StepReason::Needs {
            step: "build".into()
        }]
    );
    let kernel = plan
        .steps
        .iter()
        .find(|s| s.name == "kernel")
        .expect("kernel");
    assert_eq!(kernel.action, Action::Skip);
    assert_eq!(kernel.because[0], StepReason::FullCycleOnly);
    assert_eq!(plan.summary.held_for_full, 2);

    // A config-only change: push (on config) and restart run; build only orders after push.
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &base_files());
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 9\n"))]);
    let config = fx.config(PLAN);
    fx.deploy(&config, &[("pipe", remote.main)], Some(NOW - 3600));
    let plan = fx.plan(&config, CycleRequest::Partial);
    assert_eq!(runs(&plan), ["push", "restart"]);
    let build = plan
        .steps
        .iter()
        .find(|s| s.name == "build")
        .expect("build");
    assert_eq!(build.because, [StepReason::NotTriggered]);
}

#[test]
fn full_only_steps_run_in_full_cycles_only() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &base_files());
    let config = fx.config(PLAN);
    fx.deploy(&config, &[("pipe", remote.main)], Some(NOW - 3600));
    // Nothing changed: a partial cycle has nothing to do ...
    let partial = fx.plan(&config, CycleRequest::Partial);
    assert_eq!(runs(&partial), Vec::<&str>::new());
    assert_eq!(partial.summary.held_for_full, 0);
    // ... a full cycle still runs the test kernel (always) and its check (needs it).
    let full = fx.plan(&config, CycleRequest::Full);
    assert_eq!(runs(&full), ["kernel", "check"]);
    let kernel = full
        .steps
        .iter()
        .find(|s| s.name == "kernel")
        .expect("kernel");
    assert_eq!(
        kernel.because,
        [StepReason::Always {
            cycle: kcideploy::config::Cycle::Full
        }]
    );
}

#[test]
fn auto_cycle_follows_the_last_full_cycle() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &base_files());
    let config = fx.config(PLAN);
    let at = |s: i64| jiff::Timestamp::from_second(s).expect("ts");
    // Never a full cycle: full.
    let plan = fx.plan(&config, CycleRequest::Auto);
    assert_eq!(plan.cycle_decision.reason, "no full cycle recorded yet");
    assert_eq!(plan.cycle, kcideploy::config::Cycle::Full);
    // Full cycle 5h ago: partial now, full 1h later.
    fx.deploy(&config, &[("pipe", remote.main)], Some(NOW - 5 * 3600));
    let plan = fx.plan_at(&config, CycleRequest::Auto, at(NOW));
    assert_eq!(plan.cycle, kcideploy::config::Cycle::Partial);
    assert_eq!(
        plan.cycle_decision.reason,
        "last full cycle 5h ago; next one due in 1h"
    );
    let plan = fx.plan_at(&config, CycleRequest::Auto, at(NOW + 3600));
    assert_eq!(plan.cycle, kcideploy::config::Cycle::Full);
    assert_eq!(
        plan.cycle_decision.reason,
        "last full cycle 6h ago, full_cycle_interval is 6h"
    );
    // --cycle partial overrides the policy.
    let plan = fx.plan_at(&config, CycleRequest::Partial, at(NOW + 3600));
    assert_eq!(plan.cycle, kcideploy::config::Cycle::Partial);
}

#[test]
fn nothing_deployed_means_every_component_is_affected() {
    let fx = Fixture::new();
    fx.repo("pipe", &base_files());
    let config = fx.config(PLAN);
    let plan = fx.plan(&config, CycleRequest::Partial);
    assert_eq!(plan.repos["pipe"].diff_basis, DiffBasis::Initial);
    assert!(plan.components.values().all(|c| c.affected && c.initial));
    assert_eq!(runs(&plan), ["push", "build", "restart"]);
    let push = &plan.steps[0];
    assert_eq!(
        push.because,
        [
            StepReason::Initial {
                component: "config".into()
            },
            StepReason::Initial {
                component: "src".into()
            }
        ]
    );
}

#[test]
fn deployed_revision_missing_from_cache_counts_as_everything_changed() {
    let fx = Fixture::new();
    fx.repo("pipe", &base_files());
    let config = fx.config(PLAN);
    let unknown = git2::Oid::from_str("1234567890123456789012345678901234567890").expect("oid");
    fx.deploy(&config, &[("pipe", unknown)], Some(NOW - 3600));
    let plan = fx.plan(&config, CycleRequest::Partial);
    assert_eq!(plan.repos["pipe"].diff_basis, DiffBasis::UnknownDeployed);
    assert!(plan.components["src"].affected);
}

#[test]
fn fingerprint_covers_every_head_and_the_state_serial() {
    let (fx, remote) = exclusion_fixture();
    let config = fx.config(PLAN);
    let plan = fx.plan(&config, CycleRequest::Partial);
    let fp = &plan.fingerprint;
    assert_eq!(fp.state_serial, 0);
    assert_eq!(
        fp.repos["pipe"].heads.len(),
        8,
        "excluded changes are inputs too"
    );
    assert_eq!(fp.repos["pipe"].base, remote.main.to_string());
    // The digest, computed independently: SHA-256 (coreutils' sha256sum) of the fingerprint
    // as compact JSON in field order with the digest itself empty, and the plan file's own
    // SHA-256. A digest that left out a field, or hashed something else, differs.
    assert_eq!(
        fp.plan_file,
        sha256sum(&std::fs::read(fx.path().join("plan.yaml")).expect("plan"))
    );
    let heads: Vec<String> = fp.repos["pipe"]
        .heads
        .iter()
        .map(|(id, sha)| format!("{}:{}", json(id), json(sha)))
        .collect();
    let canonical = format!(
        r#"{{"plan_file":{},"state_serial":{},"state_lineage":{},"repos":{{"pipe":{{"base":{},"heads":{{{}}},"staging":{}}}}},"digest":""}}"#,
        json(&fp.plan_file),
        fp.state_serial,
        fp.state_lineage.as_deref().map_or("null".to_string(), json),
        json(&fp.repos["pipe"].base),
        heads.join(","),
        json(&fp.repos["pipe"].staging),
    );
    assert_eq!(fp.repos.len(), 1);
    assert_eq!(fp.digest, sha256sum(canonical.as_bytes()), "{canonical}");
    // Any input moving changes the digest.
    remote.branch(
        "pr/2",
        EVE,
        &[("src/main.py", Some("print('eve again')\n"))],
    );
    let moved = fx.plan(&config, CycleRequest::Partial);
    assert_ne!(moved.fingerprint.digest, fp.digest);
    fx.deploy(&config, &[], None);
    let serial = fx.plan(&config, CycleRequest::Partial);
    assert_eq!(serial.fingerprint.state_serial, 1);
    assert_ne!(serial.fingerprint.digest, moved.fingerprint.digest);
}

#[test]
fn output_is_deterministic_snapshot() {
    let (fx, remote) = exclusion_fixture();
    let config = fx.config(PLAN);
    fx.deploy(&config, &[("pipe", remote.main)], Some(NOW - 3600));
    let plan = fx.plan(&config, CycleRequest::Auto);
    let again = fx.plan(&config, CycleRequest::Auto);
    assert_eq!(plan, again);
    insta::assert_snapshot!("plan_text", kcideploy::planner::render::text(&plan, false));
    let mut json = serde_json::to_value(&plan).expect("json");
    // The lineage is random per state; everything else is fixed by the inputs.
    json["fingerprint"]["state_lineage"] = serde_json::json!("<lineage>");
    json["fingerprint"]["digest"] = serde_json::json!("<digest>");
    json["plan_file"] = serde_json::json!("<tmp>/plan.yaml");
    json["cache_dir"] = serde_json::json!("<tmp>/cache");
    insta::assert_json_snapshot!("plan_json", json);
}

/// A JSON string literal.
fn json(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// SHA-256 by coreutils' `sha256sum`, as lowercase hex.
fn sha256sum(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}
