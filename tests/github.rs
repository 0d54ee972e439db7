//! The github forge and notifications against a fake GitHub on 127.0.0.1.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use fake_github::{Fake, Pr, Shared, TOKEN, add_pr, pr};
use kcideploy::planner::{CycleRequest, ExclusionReason};

fn plan_text(api: &str, trusted_extra: &str) -> String {
    format!(
        r#"version: 1
name: t
github: {{ api_url: "{api}", token_env: KCI_TEST_TOKEN, max_wait: 30s }}
repos:
  core:
    url: repos/core.git
    forge: github
    github_repo: kernelci/core
    pending:
      trusted: [alice, bob]
      {trusted_extra}
      skip: ["carol/wip"]
      max_age: 14d
components:
  config: {{ repo: core, paths: ["config/**"] }}
steps:
  restart: {{ kind: command, on: [config], with: {{ run: ["true"] }} }}
"#
    )
}

fn setup() -> (Fixture, Remote, Shared, String) {
    let fx = Fixture::new();
    let remote = fx.repo(
        "core",
        &[("config/a.yaml", Some("a: 1\n")), ("README", Some("r\n"))],
    );
    let fake: Shared = Arc::new(Mutex::new(Fake::default()));
    let api = fake_github::start(fake.clone());
    (fx, remote, fake, api)
}

/// The token is in the test binary's environment (`.cargo/config.toml`).
fn with_token<T>(f: impl FnOnce() -> T) -> T {
    assert_eq!(
        std::env::var("KCI_TEST_TOKEN").as_deref(),
        Ok(TOKEN),
        "set by .cargo/config.toml"
    );
    f()
}

#[test]
fn every_exclusion_reason_in_pr_number_order() {
    let (fx, remote, fake, api) = setup();
    std::fs::write(fx.path().join("trusted.ini"), "# staging users\ndave\n").expect("file");
    fake.lock().expect("f").team = vec!["carol".into(), "erin".into()];
    add_pr(
        &fake,
        &remote,
        pr(1, "alice"),
        &[("config/a.yaml", Some("a: 2\n"))],
    );
    add_pr(
        &fake,
        &remote,
        pr(2, "mallory"),
        &[("config/m.yaml", Some("m\n"))],
    );
    add_pr(
        &fake,
        &remote,
        Pr {
            draft: true,
            ..pr(3, "bob")
        },
        &[("config/d.yaml", Some("d\n"))],
    );
    add_pr(
        &fake,
        &remote,
        Pr {
            labels: &["staging-skip"],
            ..pr(4, "alice")
        },
        &[("config/s.yaml", Some("s\n"))],
    );
    add_pr(
        &fake,
        &remote,
        Pr {
            branch: "wip",
            ..pr(5, "carol")
        },
        &[("config/w.yaml", Some("w\n"))],
    );
    add_pr(
        &fake,
        &remote,
        Pr {
            base: "release",
            ..pr(6, "alice")
        },
        &[("config/r.yaml", Some("r\n"))],
    );
    add_pr(
        &fake,
        &remote,
        Pr {
            base: "release",
            labels: &["staging:staging.kernelci.org"],
            ..pr(7, "alice")
        },
        &[("config/l.yaml", Some("l\n"))],
    );
    add_pr(
        &fake,
        &remote,
        Pr {
            updated_at: NOW - 54 * DAY,
            ..pr(8, "dave")
        },
        &[("config/o.yaml", Some("o\n"))],
    );
    add_pr(
        &fake,
        &remote,
        pr(9, "bob"),
        &[("config/a.yaml", Some("a: 9\n"))],
    );
    add_pr(
        &fake,
        &remote,
        pr(10, "erin"),
        &[("config/e.yaml", Some("e\n"))],
    );
    let config = fx.config(&plan_text(
        &api,
        "trusted_file: trusted.ini\n      trusted_team: kernelci/staging",
    ));
    let plan = with_token(|| fx.plan(&config, CycleRequest::Partial));
    let repo = &plan.repos["core"];
    let included: Vec<&str> = repo.included.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(included, ["#1", "#7", "#10"]);
    let excluded: Vec<(&str, ExclusionReason)> = repo
        .excluded
        .iter()
        .map(|e| (e.id.as_str(), e.reason))
        .collect();
    assert_eq!(
        excluded,
        [
            ("#2", ExclusionReason::Untrusted),
            ("#3", ExclusionReason::Draft),
            ("#4", ExclusionReason::SkipLabel),
            ("#5", ExclusionReason::SkipList),
            ("#6", ExclusionReason::OtherBase),
            ("#8", ExclusionReason::Stale),
            ("#9", ExclusionReason::Conflict),
        ]
    );
    assert_eq!(repo.included[0].author, "alice");
    assert_eq!(
        repo.included[0].paths,
        ["config/a.yaml"],
        "paths from the API's file list"
    );
    assert!(plan.components["config"].affected);
}

#[test]
fn pagination_beyond_100_prs_and_300_files_and_a_free_second_poll() {
    let (fx, remote, fake, api) = setup();
    for n in 1..=105u64 {
        let path = format!("docs/{n}.md");
        add_pr(
            &fake,
            &remote,
            pr(n, "alice"),
            &[(path.as_str(), Some("doc\n"))],
        );
    }
    let many: Vec<(String, String)> = (0..310)
        .map(|i| (format!("config/many/{i}.yaml"), format!("{i}\n")))
        .collect();
    let edits: Vec<(&str, Option<&str>)> = many
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    add_pr(&fake, &remote, pr(106, "bob"), &edits);
    let config = fx.config(&plan_text(&api, ""));
    let plan = with_token(|| fx.plan(&config, CycleRequest::Partial));
    assert_eq!(plan.repos["core"].included.len(), 106);
    let big = plan.repos["core"]
        .included
        .iter()
        .find(|c| c.id == "#106")
        .expect("#106");
    assert_eq!(big.paths.len(), 310, "all 4 pages of files");
    let first_poll = fake.lock().expect("f").charged;
    assert!(first_poll >= 2 + 105 + 4, "{first_poll}");

    // Nothing changed: every request is answered 304 and costs nothing.
    let again = with_token(|| fx.plan(&config, CycleRequest::Partial));
    let f = fake.lock().expect("f");
    assert_eq!(f.charged, first_poll, "a second poll spends no rate limit");
    assert!(f.not_modified >= 2 + 106, "{}", f.not_modified);
    drop(f);
    assert_eq!(again.repos["core"].included.len(), 106);
}

#[test]
fn rate_limit_waits_for_the_reset() {
    let (fx, remote, fake, api) = setup();
    add_pr(
        &fake,
        &remote,
        pr(1, "alice"),
        &[("config/a.yaml", Some("a: 2\n"))],
    );
    fake.lock().expect("f").rate_limit_next = 1;
    let config = fx.config(&plan_text(&api, ""));
    let start = Instant::now();
    let plan = with_token(|| fx.plan(&config, CycleRequest::Partial));
    assert!(
        start.elapsed().as_millis() >= 1000,
        "waited for X-RateLimit-Reset"
    );
    assert_eq!(fake.lock().expect("f").rate_limited, 1);
    assert_eq!(plan.repos["core"].included.len(), 1);
}

/// Every file under `dir`, as text.
fn all_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    out
}

#[test]
fn comments_are_edited_not_duplicated_and_statuses_move_and_the_token_stays_secret() {
    let (fx, remote, fake, api) = setup();
    let head1 = add_pr(
        &fake,
        &remote,
        pr(1, "alice"),
        &[("config/a.yaml", Some("a: 2\n"))],
    );
    add_pr(
        &fake,
        &remote,
        pr(2, "mallory"),
        &[("config/m.yaml", Some("m\n"))],
    );
    let plan = fx.plan_file(&plan_text(&api, ""));
    let mut all_output = String::new();
    let saved = fx.path().join("p.json");
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()])
            .arg("-out")
            .arg(&saved),
    );
    assert_eq!(code, 0, "{out}{err}");
    all_output += &(out + &err);
    let (code, out, err) = output(kcideploy().arg("apply").arg(&saved));
    assert_eq!(code, 0, "{out}{err}");
    all_output += &(out + &err);
    {
        let f = fake.lock().expect("f");
        let comments = &f.comments[&1];
        assert_eq!(comments.len(), 1);
        let body = comments[0]["body"].as_str().expect("body");
        assert!(body.contains("<!-- kcideploy:t:core -->"), "{body}");
        assert!(body.contains("**Included**"), "{body}");
        assert!(body.contains("| `restart` | ✅ success |"), "{body}");
        let left_out = f.comments[&2][0]["body"].as_str().expect("body");
        assert!(
            left_out.contains("**Left out**") && left_out.contains("`untrusted`"),
            "{left_out}"
        );
        let states: Vec<&str> = f
            .statuses
            .iter()
            .filter(|(s, _)| *s == head1)
            .map(|(_, st)| st.as_str())
            .collect();
        assert_eq!(states, ["pending", "success"]);
    }
    // Again (JSON events): the same comments are edited, none added.
    let (code, out, err) = output(
        kcideploy()
            .args([
                "apply",
                "-auto-approve",
                "--json",
                "--cycle",
                "partial",
                "-f",
            ])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0, "{out}{err}");
    all_output += &(out + &err);
    {
        let f = fake.lock().expect("f");
        assert_eq!(f.comments[&1].len(), 1, "edited, not duplicated");
        assert_eq!(f.comments[&2].len(), 1);
        assert!(f.patched >= 2);
    }
    // --no-notify posts nothing: no status, no comment, no edit (the runs above edit their
    // comments every time, so a notifying run would write here).
    let (before_requests, before_statuses, before_patched, before_comments) = {
        let f = fake.lock().expect("f");
        (
            f.requests.len(),
            f.statuses.len(),
            f.patched,
            f.comments.values().map(Vec::len).sum::<usize>(),
        )
    };
    let (code, out, err) = output(
        kcideploy()
            .args([
                "apply",
                "-auto-approve",
                "--no-notify",
                "--cycle",
                "partial",
                "-f",
            ])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0, "{out}{err}");
    all_output += &(out + &err);
    {
        let f = fake.lock().expect("f");
        let writes: Vec<&String> = f.requests[before_requests..]
            .iter()
            .filter(|r| !r.starts_with("GET "))
            .collect();
        assert!(writes.is_empty(), "--no-notify wrote to GitHub: {writes:?}");
        assert_eq!(f.statuses.len(), before_statuses);
        assert_eq!(f.patched, before_patched, "no comment edited");
        assert_eq!(
            f.comments.values().map(Vec::len).sum::<usize>(),
            before_comments,
            "no comment added"
        );
    }
    // Errors: a repo the token cannot see.
    let broken = fx.path().join("broken.yaml");
    std::fs::write(
        &broken,
        plan_text(&api, "").replace("kernelci/core", "kernelci/secret"),
    )
    .expect("w");
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "-f"])
            .arg(&broken)
            .args(["--at", at().as_str()]),
    );
    all_output += &(out + &err.clone());
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "GET /repos/kernelci/secret/pulls?state=open&per_page=100: 404 Not Found: Not Found"
        ),
        "{err}"
    );

    assert!(!all_output.contains(TOKEN), "token in output");
    assert!(
        !all_text(&fx.path().join(".kcideploy")).contains(TOKEN),
        "token in state, cache or logs"
    );
    assert!(
        !std::fs::read_to_string(&saved)
            .expect("plan")
            .contains(TOKEN),
        "token in the saved plan"
    );
}

#[test]
fn missing_or_bad_token_is_a_clear_error() {
    let (fx, remote, fake, api) = setup();
    add_pr(
        &fake,
        &remote,
        pr(1, "alice"),
        &[("config/a.yaml", Some("a: 2\n"))],
    );
    let plan = fx.plan_file(&plan_text(&api, ""));
    let (code, _, err) = output(
        kcideploy()
            .env_remove("KCI_TEST_TOKEN")
            .args(["plan", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("the GitHub token is missing: set the environment variable KCI_TEST_TOKEN"),
        "{err}"
    );
    let (code, _, err) = output(
        kcideploy()
            .env("KCI_TEST_TOKEN", "ghp_wrong")
            .args(["plan", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("401 Unauthorized: Bad credentials (the token is invalid or expired)"),
        "{err}"
    );
    assert!(!err.contains("ghp_wrong"));
}

#[test]
fn an_approval_at_the_head_overrides_untrusted_until_the_next_push() {
    let (fx, remote, fake, api) = setup();
    let head = add_pr(
        &fake,
        &remote,
        pr(2, "mallory"),
        &[("config/m.yaml", Some("m\n"))],
    );
    let config = fx.config(&plan_text(&api, ""));
    let backend = kcideploy::state::Backend::open(&config).expect("backend");
    let mut state = kcideploy::state::State::new();
    state.approvals.push(kcideploy::state::Approval {
        repo: "core".into(),
        change: "#2".into(),
        head: head.clone(),
        by: "alice".into(),
        at: now(),
    });
    backend.write(&mut state).expect("state");
    let plan = with_token(|| fx.plan(&config, CycleRequest::Partial));
    assert_eq!(
        plan.repos["core"].included.len(),
        1,
        "approved at this head"
    );
    // A new push needs a new approval.
    fake.lock().expect("f").prs.clear();
    add_pr(
        &fake,
        &remote,
        pr(2, "mallory"),
        &[("config/m.yaml", Some("m2\n"))],
    );
    let plan = with_token(|| fx.plan(&config, CycleRequest::Partial));
    assert_eq!(
        plan.repos["core"].excluded[0].reason,
        ExclusionReason::Untrusted
    );
}

#[test]
fn notify_false_posts_nothing() {
    let (fx, remote, fake, api) = setup();
    add_pr(
        &fake,
        &remote,
        pr(1, "alice"),
        &[("config/a.yaml", Some("a: 2\n"))],
    );
    let plan = fx.plan_file(&(plan_text(&api, "") + "notify: false\n"));
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0, "{out}{err}");
    // PR #1 was deployed, so there was something to post.
    assert!(out.contains("1 change(s) included"), "{out}");
    let f = fake.lock().expect("f");
    assert!(f.statuses.is_empty() && f.comments.is_empty());
}

#[test]
fn a_failed_cycle_check_is_reported_in_every_comment() {
    let (fx, remote, fake, api) = setup();
    let head = add_pr(
        &fake,
        &remote,
        pr(1, "alice"),
        &[("config/a.yaml", Some("a: 2\n"))],
    );
    let text = plan_text(&api, "")
        + "  check: { kind: command, always: true, after: [restart], with: { shell: \"echo regression >&2; exit 3\" } }\n";
    let plan = fx.plan_file(&text);
    let (code, out, _) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 1, "{out}");
    let f = fake.lock().expect("f");
    let body = f.comments[&1][0]["body"]
        .as_str()
        .expect("body")
        .to_string();
    assert!(body.contains("**partial cycle checks**"), "{body}");
    assert!(body.contains("| `check` | failed |"), "{body}");
    assert!(
        body.contains("<details><summary><code>check</code> failed</summary>"),
        "{body}"
    );
    // Where to look, never the error itself.
    assert!(
        body.contains("Why is in its log `check.log` of run"),
        "{body}"
    );
    assert!(!body.contains("exited with"), "{body}");
    // The PR's own step succeeded: its status is success.
    let last = f
        .statuses
        .iter()
        .rev()
        .find(|(s, _)| *s == head)
        .map(|(_, st)| st.as_str());
    assert_eq!(last, Some("success"));
}

/// The logins of kernelci-deploy's `data/staging.ini`, read independently of kcideploy's
/// INI reader: the indented lines after `users:`, up to the next unindented line.
fn staging_ini_logins(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .skip_while(|l| l.trim() != "users:")
        .skip(1)
        .take_while(|l| l.trim().is_empty() || l.starts_with([' ', '\t']))
        .map(|l| l.trim().to_lowercase())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_real_staging_ini_trusts_exactly_its_logins() {
    let ini_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kernelci-snapshot/kernelci-deploy/tree/data/staging.ini");
    let ini = std::fs::read_to_string(&ini_path).expect("the snapshot's staging.ini");
    let expected = staging_ini_logins(&ini);
    assert_eq!(expected.len(), 74, "74 unique logins (vigneshraman twice)");

    let (fx, remote, fake, api) = setup();
    std::fs::write(fx.path().join("staging.ini"), &ini).expect("copy");
    for (n, login) in [(1, "a-wai"), (2, "namespace"), (3, "branch"), (4, "users")] {
        add_pr(
            &fake,
            &remote,
            pr(n, login),
            &[("config/a.yaml", Some("a: 2\n"))],
        );
    }
    let text = plan_text(
        &api,
        "trusted_file: { path: staging.ini, format: ini, section: DEFAULT, key: users }",
    )
    .replace("      trusted: [alice, bob]\n", "");
    let config = fx.config(&text);
    let ws = kcideploy::workspace::Workspace::load(&config.path, Some(&fx.path().join("cache")))
        .expect("load");
    let (snapshot, plan) = with_token(|| {
        ws.fetch_and_plan(&kcideploy::workspace::PlanRequest {
            cycle: CycleRequest::Partial,
            now: Some(now()),
            ..Default::default()
        })
        .expect("plan")
    });
    let trusted: std::collections::BTreeSet<String> = snapshot.repos["core"]
        .trusted
        .clone()
        .expect("a trusted list")
        .iter()
        .map(|l| l.to_lowercase())
        .collect();
    assert_eq!(trusted, expected, "exactly the file's logins");
    let repo = &plan.repos["core"];
    let included: Vec<&str> = repo.included.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(included, ["#1"], "a-wai is in the list");
    let excluded: Vec<(&str, ExclusionReason)> = repo
        .excluded
        .iter()
        .map(|e| (e.id.as_str(), e.reason))
        .collect();
    assert_eq!(
        excluded,
        [
            ("#2", ExclusionReason::Untrusted),
            ("#3", ExclusionReason::Untrusted),
            ("#4", ExclusionReason::Untrusted),
        ],
        "the ini's other keys and the key's name are not logins"
    );
}

#[test]
fn a_trusted_file_in_the_wrong_format_is_an_error_not_a_list_of_words() {
    let (fx, remote, fake, api) = setup();
    let ini = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kernelci-snapshot/kernelci-deploy/tree/data/staging.ini");
    std::fs::copy(ini, fx.path().join("staging.ini")).expect("copy");
    add_pr(
        &fake,
        &remote,
        pr(1, "alice"),
        &[("config/a.yaml", Some("a: 2\n"))],
    );
    let config = fx.config(&plan_text(&api, "trusted_file: staging.ini"));
    let ws = kcideploy::workspace::Workspace::load(&config.path, Some(&fx.path().join("cache")))
        .expect("load");
    let err = with_token(|| ws.fetch()).expect_err("not a list of logins");
    let text = err.to_string();
    assert!(
        text.contains("staging.ini:1: \"[DEFAULT]\" is not a GitHub login"),
        "{text}"
    );
}
