//! Blame with real repos and a `command` step running a script from the repo: one bad change
//! among 8, a pair that fails only together, a flake, a failure on the base alone.

mod common;

use common::*;
use kcideploy::state::State;

const CHECK: &str = "#!/bin/sh\n# Fails on a BROKEN change, or when PAIR-A and PAIR-B are both merged.\nif grep -rqs BROKEN changes; then echo 'found a BROKEN change' >&2; exit 1; fi\nif grep -rqs PAIR-A changes && grep -rqs PAIR-B changes; then echo 'PAIR-A with PAIR-B' >&2; exit 1; fi\necho ok\n";

fn plan(verify: &str) -> String {
    format!(
        r#"version: 1
name: t
repos:
  pipe: {{ url: repos/pipe.git, pending: {{ branches: "pr/*" }} }}
components:
  changes: {{ repo: pipe, paths: ["changes/**"] }}
steps:
  push: {{ kind: git_push, on: [changes], with: {{ repo: pipe }} }}
  verify: {{ kind: command, on: [changes], after: [push], with: {{ repo: pipe, pass_env: [OUT], shell: "{verify}" }} }}
blame: {{ enabled: true, max_rounds: 10 }}
"#
    )
}

/// 8 pending changes `pr/1`..`pr/8`, each adding `changes/N.txt` with `contents(N)`.
fn fixture(
    contents: impl Fn(usize) -> &'static str,
    verify: &str,
) -> (Fixture, Remote, std::path::PathBuf) {
    let fx = Fixture::new();
    let remote = fx.repo(
        "pipe",
        &[
            ("check.sh", Some(CHECK)),
            ("changes/README", Some("changes\n")),
        ],
    );
    for n in 1..=8 {
        let path = format!("changes/{n}.txt");
        remote.branch(
            &format!("pr/{n}"),
            ALICE,
            &[(path.as_str(), Some(contents(n)))],
        );
    }
    let config = fx.config(&plan(verify));
    fx.deploy(&config, &[("pipe", remote.main)], Some(NOW));
    (fx, remote, config.path.clone())
}

fn apply(plan: &std::path::Path) -> (i32, String, String) {
    output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(plan),
    )
}

fn state(fx: &Fixture) -> State {
    fx.backend("t").read().expect("parses").expect("exists")
}

#[test]
fn one_bad_change_among_eight_is_found_left_out_and_readmitted() {
    let (fx, remote, plan) = fixture(
        |n| if n == 5 { "BROKEN\n" } else { "fine\n" },
        "sh check.sh",
    );
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "the other 7 are deployed: {out}{err}");
    assert!(out.contains("Blame: pipe pr/5 breaks `verify`."), "{out}");
    assert!(
        out.contains("Left out pipe pr/5; deploying the rest."),
        "{out}"
    );

    let st = state(&fx);
    let record = st.blames.last().expect("bisection recorded");
    assert_eq!(record.verdict, "blamed");
    assert_eq!(record.culprits, ["pipe pr/5"]);
    let bisection_rounds = record.rounds.iter().filter(|r| r.n > 0).count();
    assert!(
        bisection_rounds <= 4,
        "{bisection_rounds} rounds > ceil(log2 8) + 1"
    );
    assert_eq!(
        record.rounds[0].result, "fail",
        "round 0 reruns the same inputs"
    );

    let exclusion = st.exclusions.first().expect("exclusion");
    assert_eq!(
        (exclusion.change.as_str(), exclusion.step.as_str()),
        ("pr/5", "verify")
    );
    let pr5 = remote.repo.refname_to_id("refs/heads/pr/5").expect("pr/5");
    assert_eq!(exclusion.head, pr5.to_string());
    assert!(
        exclusion
            .log_tail
            .as_deref()
            .unwrap_or("")
            .contains("found a BROKEN change"),
        "{exclusion:?}"
    );

    // The other 7 are deployed.
    let deployed: Vec<&str> = st.repos["pipe"]
        .included
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(
        deployed,
        ["pr/1", "pr/2", "pr/3", "pr/4", "pr/6", "pr/7", "pr/8"]
    );
    let pushed = remote
        .repo
        .refname_to_id("refs/heads/staging.kernelci.org")
        .expect("pushed");
    assert_eq!(pushed.to_string(), st.repos["pipe"].deployed);

    // The plan says why pr/5 is out; `blame --last` and `exclusions` explain it.
    let (_, out, _) = output(
        kcideploy()
            .args(["plan", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert!(
        out.contains("pr/5") && out.contains("blamed: broke step `verify`"),
        "{out}"
    );
    let (_, out, _) = output(kcideploy().args(["blame", "--last", "-f"]).arg(&plan));
    assert!(
        out.contains("Verdict: blamed: pipe pr/5 breaks `verify`"),
        "{out}"
    );
    assert!(
        out.contains("round 1: pipe pr/1, pipe pr/2, pipe pr/3, pipe pr/4 → pass"),
        "{out}"
    );
    let (_, out, _) = output(kcideploy().args(["exclusions", "-f"]).arg(&plan));
    assert!(
        out.contains(&exclusion.id) && out.contains("pipe pr/5"),
        "{out}"
    );

    // A new push of pr/5 re-admits it.
    remote.branch("pr/5", ALICE, &[("changes/5.txt", Some("fixed\n"))]);
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let st = state(&fx);
    assert!(
        st.exclusions.is_empty(),
        "the exclusion went with the old head"
    );
    assert!(st.repos["pipe"].included.iter().any(|c| c.id == "pr/5"));
}

#[test]
fn a_pair_that_fails_only_together() {
    let (fx, _remote, plan) = fixture(
        |n| match n {
            2 => "PAIR-A\n",
            6 => "PAIR-B\n",
            _ => "fine\n",
        },
        "sh check.sh",
    );
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let st = state(&fx);
    let record = st.blames.last().expect("record");
    assert_eq!(record.verdict, "pair");
    assert_eq!(record.culprits, ["pipe pr/2", "pipe pr/6"]);
    assert!(
        record.summary.contains("only together"),
        "{}",
        record.summary
    );
    let deployed: Vec<&str> = st.repos["pipe"]
        .included
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert!(
        deployed.contains(&"pr/2") && !deployed.contains(&"pr/6"),
        "{deployed:?}"
    );

    // `exclusions clear` re-admits it (and the next plan merges it again).
    let id = st.exclusions[0].id.clone();
    let (code, out, err) = output(
        kcideploy()
            .args(["exclusions", "-f"])
            .arg(&plan)
            .args(["clear", &id]),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(state(&fx).exclusions.is_empty());
    let (code, _, err) = output(
        kcideploy()
            .args(["exclusions", "-f"])
            .arg(&plan)
            .args(["clear", &id]),
    );
    assert_eq!(code, 1);
    assert!(err.contains(&format!("no exclusion with ID {id}")), "{err}");
    let (_, out, _) = output(
        kcideploy()
            .args(["plan", "--json", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    let included: Vec<&str> = json["repos"]["pipe"]["included"]
        .as_array()
        .expect("included")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert!(included.contains(&"pr/6"), "{included:?}");
}

#[test]
fn a_flaky_step_that_passes_on_rerun_blames_nobody() {
    let (fx, _remote, plan) = fixture(
        |_| "fine\n",
        r#"test -f \"$OUT/flaked\" || { touch \"$OUT/flaked\"; exit 1; }"#,
    );
    let (code, out, _) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan)
            .env("OUT", fx.path()),
    );
    assert_eq!(code, 1, "{out}");
    let st = state(&fx);
    let record = st.blames.last().expect("record");
    assert_eq!(record.verdict, "flake");
    assert_eq!(record.rounds.len(), 1);
    assert!(st.exclusions.is_empty());
    assert!(out.contains("a flake, nobody blamed"), "{out}");
}

#[test]
fn a_failure_on_the_base_alone_blames_nobody() {
    let (fx, _remote, plan) = fixture(|_| "fine\n", "echo broken infrastructure >&2; exit 1");
    let (code, out, _) = apply(&plan);
    assert_eq!(code, 1, "{out}");
    let st = state(&fx);
    let record = st.blames.last().expect("record");
    assert_eq!(record.verdict, "infrastructure");
    assert!(
        record
            .summary
            .contains("fails without any of the candidate changes"),
        "{}",
        record.summary
    );
    assert!(st.exclusions.is_empty());
    assert!(st.repos["pipe"].included.is_empty(), "nothing deployed");
}

#[test]
fn blame_is_off_unless_enabled() {
    let (fx, _remote, plan) = fixture(
        |n| if n == 3 { "BROKEN\n" } else { "fine\n" },
        "sh check.sh",
    );
    let text = std::fs::read_to_string(&plan)
        .expect("plan")
        .replace("enabled: true", "enabled: false");
    std::fs::write(&plan, text).expect("write");
    let (code, out, _) = apply(&plan);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("Blame:"), "{out}");
    assert!(state(&fx).blames.is_empty());
}

#[test]
fn blame_works_with_nothing_deployed_yet() {
    let fx = Fixture::new();
    let remote = fx.repo(
        "pipe",
        &[
            ("check.sh", Some(CHECK)),
            ("changes/README", Some("changes\n")),
        ],
    );
    for n in 1..=3 {
        let path = format!("changes/{n}.txt");
        remote.branch(
            &format!("pr/{n}"),
            ALICE,
            &[(
                path.as_str(),
                Some(if n == 2 { "BROKEN\n" } else { "fine\n" }),
            )],
        );
    }
    let plan = fx.plan_file(&plan("sh check.sh"));
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Blame: pipe pr/2 breaks `verify`."), "{out}");
}
