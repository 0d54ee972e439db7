//! What a step's processes see of kcideploy's environment (issue #15 item 2): steps run code
//! from pull requests, so they start from a clean environment. The real binary applies plan
//! files whose steps dump their environment (`env > file`); kcideploy runs with canary
//! secrets in its own environment.

mod common;

use std::path::Path;

use common::{Fixture, at, kcideploy, output};

const TOKEN: &str = "canary-github-token-5f1e";
const SECRET: &str = "canary-webhook-secret-9b07";
const REGISTRY: &str = "canary-registry-password-77ad";

fn plan(steps: &str) -> String {
    format!(
        r#"version: 1
name: t
repos:
  pipe: {{ url: repos/pipe.git, pending: {{ branches: "pr/*" }} }}
components:
  config: {{ repo: pipe, paths: ["config/**"] }}
steps:
{steps}"#
    )
}

/// `kcideploy apply -auto-approve` with the canaries (and a few harmless variables) set.
fn apply(plan: &Path) -> (i32, String, String) {
    let mut cmd = kcideploy();
    cmd.args(["apply", "-auto-approve", "--at", &at(), "-f"])
        .arg(plan)
        .env("GITHUB_TOKEN", TOKEN)
        .env("KCIDEPLOY_WEBHOOK_SECRET", SECRET)
        .env("KCIDEPLOY_REGISTRY_PASSWORD", REGISTRY)
        .env("UNRELATED_SETTING", "not-for-steps")
        .env("LC_ALL", "C")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    output(&mut cmd)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `NAME=` lines of an `env` dump.
fn names(dump: &str) -> Vec<&str> {
    dump.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn a_step_starts_from_a_clean_environment() {
    let fx = Fixture::new();
    fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let out = fx.path().display().to_string();
    let plan = fx.plan_file(&plan(&format!(
        "  plain: {{ kind: command, on: [config], with: {{ repo: pipe, shell: \"env > {out}/plain.env\" }} }}\n"
    )));
    let (code, stdout, stderr) = apply(&plan);
    assert_eq!(code, 0, "{stdout}{stderr}");

    let plain = read(&fx.path().join("plain.env"));
    for canary in [TOKEN, SECRET, REGISTRY, "not-for-steps"] {
        assert!(
            !plain.contains(canary),
            "{canary} reached the step:\n{plain}"
        );
    }
    let kept = names(&plain);
    for expected in [
        "PATH",
        "LC_ALL",
        "DOCKER_HOST",
        "KCIDEPLOY_PLAN",
        "KCIDEPLOY_STEP",
        "KCIDEPLOY_RUN_ID",
        "KCIDEPLOY_CHECKOUT",
        "KCIDEPLOY_REPO_PIPE_SHA",
    ] {
        assert!(kept.contains(&expected), "{expected} missing:\n{plain}");
    }
}

#[test]
fn a_step_that_names_the_token_in_pass_env_gets_it_and_nothing_else() {
    let fx = Fixture::new();
    fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let out = fx.path().display().to_string();
    let plan = fx.plan_file(&plan(&format!(
        r#"  named:
    kind: command
    on: [config]
    with: {{ shell: "env > {out}/named.env", pass_env: [GITHUB_TOKEN, NOT_SET_ANYWHERE], env: {{ MINE: "1" }} }}
"#
    )));
    let (code, stdout, stderr) = apply(&plan);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let named = read(&fx.path().join("named.env"));
    assert!(
        named.lines().any(|l| l == format!("GITHUB_TOKEN={TOKEN}")),
        "the named token is passed:\n{named}"
    );
    assert!(named.lines().any(|l| l == "MINE=1"), "{named}");
    assert!(!named.contains(SECRET), "{named}");
    assert!(!named.contains(REGISTRY), "{named}");
    assert!(!named.contains("NOT_SET_ANYWHERE"), "{named}");
}

#[test]
fn git_push_keeps_git_settings_and_drops_the_secrets() {
    let fx = Fixture::new();
    fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    // The push URL is a program (git's `ext::` transport): it dumps git's environment.
    let dump = fx.path().join("git.env");
    let script = fx.path().join("remote.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nenv > {}\nexit 1\n", dump.display()),
    )
    .expect("write script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let plan = fx.plan_file(&plan(&format!(
        "  push: {{ kind: git_push, on: [config], with: {{ repo: pipe, url: \"ext::{}\" }} }}\n",
        script.display()
    )));
    let mut cmd = kcideploy();
    cmd.args(["apply", "-auto-approve", "--at", &at(), "-f"])
        .arg(&plan)
        .env("GITHUB_TOKEN", TOKEN)
        .env("KCIDEPLOY_WEBHOOK_SECRET", SECRET)
        .env("SSH_AUTH_SOCK", "/nonexistent/agent.sock")
        // `ext::` is off unless configured: through GIT_CONFIG_*, which git must keep.
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "protocol.ext.allow")
        .env("GIT_CONFIG_VALUE_0", "always");
    let (code, stdout, stderr) = output(&mut cmd);
    assert_eq!(code, 1, "the fake remote fails the push: {stdout}{stderr}");
    let env = read(&dump);
    assert!(!env.contains(TOKEN), "{env}");
    assert!(!env.contains(SECRET), "{env}");
    assert!(
        env.lines()
            .any(|l| l == "SSH_AUTH_SOCK=/nonexistent/agent.sock"),
        "{env}"
    );
}

#[test]
fn validate_warns_when_a_step_running_pr_code_names_a_secret() {
    let fx = Fixture::new();
    fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let text = format!(
        "github: {{ token_env: KCI_GH }}\n{}",
        plan(
            r#"  build: { kind: command, on: [config], with: { repo: pipe, run: ["make"], pass_env: [KCI_GH, HTTP_PROXY] } }
  up: { kind: compose, on: [config], with: { action: up, repo: pipe, pass_env: [KCIDEPLOY_WEBHOOK_SECRET] } }
  notify: { kind: command, on: [config], with: { run: ["true"], pass_env: [KCI_GH] } }
"#
        )
    );
    let plan = fx.plan_file(&text);
    let mut cmd = kcideploy();
    cmd.args(["validate", "-f"]).arg(&plan);
    let (code, stdout, stderr) = output(&mut cmd);
    assert_eq!(code, 0, "a warning, not an error: {stdout}{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].contains("`build`") && warnings[0].contains("KCI_GH (github.token_env)"),
        "{stderr}"
    );
    assert!(
        warnings[1].contains("`up`")
            && warnings[1].contains("KCIDEPLOY_WEBHOOK_SECRET (server.secret_env)"),
        "{stderr}"
    );
}

#[test]
fn pass_env_takes_variable_names() {
    let fx = Fixture::new();
    fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let plan = fx.plan_file(&plan(
        "  build: { kind: command, with: { run: [\"true\"], pass_env: [\"A=1\"] } }\n",
    ));
    let mut cmd = kcideploy();
    cmd.args(["validate", "-f"]).arg(&plan);
    let (code, stdout, stderr) = output(&mut cmd);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("with.pass_env[0]") && stderr.contains("not an environment variable name"),
        "{stderr}"
    );
}

#[test]
fn an_output_in_a_shell_script_is_a_value_never_shell_code() {
    // A step that ran a PR's code publishes an output meant to run a command in the next
    // step, which is given the token.
    let fx = Fixture::new();
    fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let out = fx.path().display().to_string();
    let plan = fx.plan_file(&plan(&format!(
        r#"  build:
    kind: command
    on: [config]
    with: {{ shell: "echo 'url=https://x/a; touch {out}/pwned; echo $(id)' > \"$KCIDEPLOY_OUTPUT\"" }}
  use:
    kind: command
    on: [config]
    needs: [build]
    with: {{ shell: "echo got ${{steps.build.outputs.url}} > {out}/got; echo \"quoted ${{steps.build.outputs.url}}\" >> {out}/got", pass_env: [GITHUB_TOKEN] }}
"#
    )));
    let (code, stdout, stderr) = apply(&plan);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        !fx.path().join("pwned").exists(),
        "the output ran as shell code"
    );
    assert_eq!(
        read(&fx.path().join("got")),
        "got https://x/a; touch {out}/pwned; echo $(id)\nquoted https://x/a; touch {out}/pwned; echo $(id)\n"
            .replace("{out}", &out)
    );
}
