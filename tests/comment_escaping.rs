//! What PRs bring (file names, branch names) reaches PR comments as text: no HTML, no
//! Markdown rendering, no @mention that notifies a team.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;

use std::sync::{Arc, Mutex};

use common::*;
use fake_github::{Fake, Shared, add_pr, pr};

#[test]
fn a_conflicting_path_with_markup_and_a_mention_is_shown_escaped() {
    let fx = Fixture::new();
    let evil = "config/<img src=x onerror=alert(1)>@kernelci|all*.yaml";
    let remote = fx.repo("core", &[(evil, Some("a: 1\n"))]);
    let fake: Shared = Arc::new(Mutex::new(Fake::default()));
    let api = fake_github::start(fake.clone());
    add_pr(&fake, &remote, pr(1, "alice"), &[(evil, Some("a: 2\n"))]);
    add_pr(&fake, &remote, pr(2, "alice"), &[(evil, Some("a: 3\n"))]);
    let plan = fx.plan_file(&format!(
        r#"version: 1
name: t
github: {{ api_url: "{api}", token_env: KCI_TEST_TOKEN }}
repos:
  core:
    url: repos/core.git
    forge: github
    github_repo: kernelci/core
    pending: {{ trusted: [alice] }}
components:
  config: {{ repo: core, paths: ["config/**"] }}
steps:
  restart: {{ kind: command, on: [config], with: {{ run: ["true"] }} }}
"#
    ));
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0, "{out}{err}");
    let f = fake.lock().expect("fake");
    let body = f.comments[&2][0]["body"]
        .as_str()
        .expect("body")
        .to_string();
    assert!(
        body.contains("**Left out**") && body.contains("`conflict`"),
        "{body}"
    );
    assert!(
        body.contains("&lt;img src=x onerror=alert\\(1\\)&gt;"),
        "{body}"
    );
    assert!(!body.contains("<img"), "HTML rendered: {body}");
    assert!(
        !body.contains("@kernelci"),
        "a mention that notifies: {body}"
    );
    assert!(
        body.contains("\\|all\\*"),
        "table and emphasis characters escaped: {body}"
    );
}
