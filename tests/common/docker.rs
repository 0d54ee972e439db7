//! What the Docker test binaries share (tests/docker.rs, tests/docker_refresh.rs): a
//! libtest-compatible harness that reports tests without a daemon as ignored (or fails them
//! under CI), the docker CLI, a static busybox to build `FROM scratch` images with, and a
//! repo whose build step makes such an image.
#![allow(dead_code)]

use std::process::Command as StdCommand;

use crate::common::*;
use kcideploy::state::{LocalState, State};

#[derive(Clone, Copy)]
pub enum Needs {
    Docker,
    /// A daemon and a registry (`KCIDEPLOY_TEST_REGISTRY`, host:port).
    Registry,
    /// A daemon and these programs on `PATH` (the test starts what it needs itself).
    Tools(&'static [&'static str]),
}

/// The first of `tools` not on `PATH`, as a reason to skip.
pub fn tool_missing(tools: &[&str]) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    tools
        .iter()
        .find(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .map(|t| format!("no {t} on PATH (scripts/test.sh installs it)"))
}

/// A libtest-compatible harness (`harness = false`): without a daemon (or a registry) a
/// test is reported as ignored, with the reason, so that the closing line counts it as
/// such rather than as passed; with `CI` or `KCIDEPLOY_REQUIRE_DOCKER` set it fails instead.
pub fn run_trials(tests: &[(&'static str, Needs, fn())]) -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let required =
        std::env::var_os("KCIDEPLOY_REQUIRE_DOCKER").is_some() || std::env::var_os("CI").is_some();
    let daemon = daemon_missing();
    let registry = std::env::var("KCIDEPLOY_TEST_REGISTRY").is_err().then(|| {
        "no registry: KCIDEPLOY_TEST_REGISTRY is not set (scripts/test.sh starts one)".to_string()
    });
    let trials = tests
        .iter()
        .map(|&(name, needs, test)| {
            let missing = daemon.clone().or_else(|| match needs {
                Needs::Docker => None,
                Needs::Registry => registry.clone(),
                Needs::Tools(tools) => tool_missing(tools),
            });
            libtest_mimic::Trial::ignorable_test(name, move || match missing {
                None => {
                    test();
                    Ok(libtest_mimic::Completion::Completed)
                }
                Some(reason) if required => Err(format!(
                    "{reason}; required, since CI or KCIDEPLOY_REQUIRE_DOCKER is set"
                )
                .into()),
                Some(reason) => Ok(libtest_mimic::Completion::ignored_with(format!(
                    "SKIPPED: {reason}; run the suite with scripts/test.sh"
                ))),
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// Why no Docker daemon can be used, or `None` when one answers.
pub fn daemon_missing() -> Option<String> {
    match StdCommand::new("docker").args(["info"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "no Docker daemon answers (DOCKER_HOST={}): {}",
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unset".into()),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
        )),
        Err(e) => Some(format!("no docker CLI: {e}")),
    }
}

pub fn docker(args: &[&str]) -> String {
    let out = StdCommand::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn docker_ok(args: &[&str]) -> bool {
    StdCommand::new("docker")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &kcideploy::support::random_id()[..8])
}

pub fn busybox() -> Vec<u8> {
    let path = std::env::var("KCIDEPLOY_TEST_BUSYBOX").unwrap_or_else(|_| "/bin/busybox".into());
    std::fs::read(&path).unwrap_or_else(|e| panic!("a static busybox at {path}: {e}"))
}

pub fn apply(plan: &std::path::Path) -> (i32, String, String) {
    output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(plan),
    )
}

pub fn state(fx: &Fixture) -> State {
    LocalState::new(fx.path().join(".kcideploy/t.state.json"))
        .read()
        .expect("parses")
        .expect("exists")
}

pub const DOCKERFILE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"ln\", \"-s\", \"/bin/busybox\", \"/bin/sh\"]\nARG REV=none\nLABEL org.example.rev=$REV\nCOPY app.txt /app.txt\nCMD [\"/bin/busybox\", \"sleep\", \"1000\"]\n";

/// A repo with docker/{Dockerfile,busybox,app.txt}; the plan's build step uses it as context.
pub fn build_fixture(image: &str, extra_steps: &str) -> (Fixture, Remote, std::path::PathBuf) {
    let fx = Fixture::new();
    let bb = busybox();
    let remote = {
        let path = fx.path().join("repos/pipe.git");
        let repo = git2::Repository::init_bare(&path).expect("init");
        let files: Vec<(&str, Option<&[u8]>)> = vec![
            ("docker/Dockerfile", Some(DOCKERFILE.as_bytes())),
            ("docker/busybox", Some(&bb)),
            ("docker/app.txt", Some(b"v1\n")),
            ("README.md", Some(b"readme\n")),
        ];
        let main = kcideploy::gitops::scratch::commit(
            &repo,
            None,
            &files,
            ALICE,
            NOW - 10 * DAY,
            "initial",
        )
        .expect("commit");
        kcideploy::gitops::scratch::set_branch(&repo, "main", main).expect("branch");
        Remote { repo, path, main }
    };
    let plan = fx.plan_file(&format!(
        r#"version: 1
name: t
repos:
  pipe: {{ url: repos/pipe.git }}
components:
  image: {{ repo: pipe, paths: ["docker/**"] }}
steps:
  build:
    kind: docker_build
    on: [image]
    always: true
    with:
      image: {image}
      repo: pipe
      context: docker
      tags: [latest]
      args: {{ REV: "${{repos.pipe.sha}}" }}
{extra_steps}"#
    ));
    (fx, remote, plan)
}

pub fn image_id(reference: &str) -> String {
    docker(&["image", "inspect", "--format", "{{.Id}}", reference])
}
