//! `compose` steps against stub `docker-compose` and `docker` programs on `PATH` that record
//! their arguments: the staging script's four files in order, `pull` → `down
//! --remove-orphans` → `up -d`, the API's services, the recovery command when `down` fails,
//! and the persistent checkout (untracked files kept, tracked files following the revision).
//! tests/docker.rs runs the same with Debian's docker-compose and a real daemon.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

const FILES: &str = "[docker-compose.yaml, docker-compose-kcidb.yaml, docker-compose-lava.yaml, docker-compose-production.yaml]";
const FOUR: &str = "-f docker-compose.yaml -f docker-compose-kcidb.yaml -f docker-compose-lava.yaml -f docker-compose-production.yaml";
const SETTINGS: &str = "/home/kernelci/config/staging.kernelci.org.secrets.toml";

/// Stubs in `<fixture>/bin`: each call appends `program args|cwd|KCI_SETTINGS` to
/// `<fixture>/calls`. `down` fails while `<fixture>/fail-down` exists and removes it (it
/// fails once); `docker compose version` answers only when `v2` is set.
fn stubs(fx: &Fixture, v2: bool) -> PathBuf {
    let bin = fx.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let calls = fx.path().join("calls");
    let fail = fx.path().join("fail-down");
    let body = |name: &str, version_ok: bool| {
        format!(
            "#!/bin/sh\necho \"{name} $*|$PWD|${{KCI_SETTINGS-}}\" >> '{calls}'\n\
             case \" $* \" in\n\
             *' version '*) exit {version} ;;\n\
             *' down'*) if [ -e '{fail}' ]; then rm '{fail}'; echo 'network in use' >&2; exit 1; fi ;;\n\
             esac\nexit 0\n",
            calls = calls.display(),
            fail = fail.display(),
            version = if version_ok { 0 } else { 1 },
        )
    };
    for (name, text) in [
        ("docker-compose", body("docker-compose", true)),
        ("docker", body("docker", v2)),
    ] {
        let path = bin.join(name);
        std::fs::write(&path, text).expect("stub");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    bin
}

/// The recorded calls, `version` probes left out, with the fixture's path as `<fx>`.
fn calls(fx: &Fixture) -> Vec<String> {
    let text = std::fs::read_to_string(fx.path().join("calls")).unwrap_or_default();
    let root = fx.path().canonicalize().expect("canonical");
    text.lines()
        .filter(|l| !l.contains(" version|"))
        .map(|l| l.replace(&root.display().to_string(), "<fx>"))
        .collect()
}

fn apply(fx: &Fixture, plan: &Path, bin: &Path) -> (i32, String, String) {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    output(
        kcideploy()
            .env("PATH", path)
            .current_dir(fx.path())
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(plan),
    )
}

/// A pipeline repo with the four compose files and a `.gitignore` for `.env`.
fn pipeline(fx: &Fixture) -> Remote {
    fx.repo(
        "pipe",
        &[
            ("docker-compose.yaml", Some("services: {}\n")),
            ("docker-compose-kcidb.yaml", Some("services: {}\n")),
            ("docker-compose-lava.yaml", Some("services: {}\n")),
            ("docker-compose-production.yaml", Some("services: {}\n")),
            (".gitignore", Some(".env\n")),
            ("config/pipeline.yaml", Some("v: 1\n")),
        ],
    )
}

fn plan_with(fx: &Fixture, steps: &str) -> PathBuf {
    fx.plan_file(&format!(
        "version: 1\nname: t\nrepos:\n  pipe: {{ url: repos/pipe.git }}\nsteps:\n{steps}"
    ))
}

fn deploy_step(cli: &str, extra: &str) -> String {
    format!(
        "  pipeline:\n    kind: compose\n    always: true\n    with:\n      action: deploy\n      \
         repo: pipe\n      checkout: checkouts/kernelci-pipeline\n      cli: {cli}\n      \
         files: {FILES}\n      env: {{ KCI_SETTINGS: {SETTINGS} }}\n{extra}"
    )
}

#[test]
fn deploy_pulls_then_downs_then_ups_with_the_four_files_in_order_in_the_checkout() {
    let fx = Fixture::new();
    pipeline(&fx);
    let bin = stubs(&fx, false);
    let api = "  api:\n    kind: compose\n    always: true\n    after: [pipeline]\n    with:\n      \
               action: deploy\n      repo: pipe\n      checkout: checkouts/kernelci-api\n      \
               cli: v1\n      services: [api, db, redis]\n      remove_orphans: false\n";
    let plan = plan_with(&fx, &(deploy_step("v1", "") + api));
    let (code, out, err) = apply(&fx, &plan, &bin);
    assert_eq!(code, 0, "{out}{err}");
    let cwd = "<fx>/checkouts/kernelci-pipeline";
    assert_eq!(
        calls(&fx),
        [
            format!("docker-compose {FOUR} pull|{cwd}|{SETTINGS}"),
            format!("docker-compose {FOUR} down --remove-orphans|{cwd}|{SETTINGS}"),
            format!("docker-compose {FOUR} up -d|{cwd}|{SETTINGS}"),
            "docker-compose pull api db redis|<fx>/checkouts/kernelci-api|".to_string(),
            "docker-compose down|<fx>/checkouts/kernelci-api|".to_string(),
            "docker-compose up -d api db redis|<fx>/checkouts/kernelci-api|".to_string(),
        ]
    );
}

#[test]
fn v2_is_docker_compose_and_auto_takes_it_when_it_answers() {
    for cli in ["v2", "auto"] {
        let fx = Fixture::new();
        pipeline(&fx);
        let bin = stubs(&fx, true);
        let plan = plan_with(&fx, &deploy_step(cli, "      project: kernelci\n"));
        let (code, out, err) = apply(&fx, &plan, &bin);
        assert_eq!(code, 0, "{cli}: {out}{err}");
        let subs: Vec<String> = calls(&fx)
            .iter()
            .map(|c| c.split('|').next().unwrap_or("").to_string())
            .collect();
        assert_eq!(
            subs,
            [
                format!("docker compose -p kernelci {FOUR} pull"),
                format!("docker compose -p kernelci {FOUR} down --remove-orphans"),
                format!("docker compose -p kernelci {FOUR} up -d"),
            ],
            "{cli}"
        );
    }
    // auto without a v2 plugin: docker-compose.
    let fx = Fixture::new();
    pipeline(&fx);
    let bin = stubs(&fx, false);
    let plan = plan_with(&fx, &deploy_step("auto", ""));
    let (code, out, err) = apply(&fx, &plan, &bin);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        calls(&fx)[0].starts_with("docker-compose -f"),
        "{:?}",
        calls(&fx)
    );
}

#[test]
fn a_failed_down_runs_the_recovery_command_then_down_once_more() {
    let fx = Fixture::new();
    pipeline(&fx);
    let bin = stubs(&fx, false);
    let recover = format!(
        "      down_recovery: [sh, -c, \"echo recover >> '{}'\"]\n",
        fx.path().join("calls").display()
    );
    let plan = plan_with(&fx, &deploy_step("v1", &recover));
    std::fs::write(fx.path().join("fail-down"), "").expect("marker");
    let (code, out, err) = apply(&fx, &plan, &bin);
    assert_eq!(code, 0, "{out}{err}");
    let subs: Vec<String> = calls(&fx)
        .iter()
        .map(|c| c.split('|').next().unwrap_or("").replace(FOUR, "<files>"))
        .collect();
    assert_eq!(
        subs,
        [
            "docker-compose <files> pull",
            "docker-compose <files> down --remove-orphans",
            "recover",
            "docker-compose <files> down --remove-orphans",
            "docker-compose <files> up -d",
        ]
    );

    // Without a recovery command the step fails at `down`, and nothing is started.
    let fx = Fixture::new();
    pipeline(&fx);
    let bin = stubs(&fx, false);
    let plan = plan_with(&fx, &deploy_step("v1", ""));
    std::fs::write(fx.path().join("fail-down"), "").expect("marker");
    let (code, out, err) = apply(&fx, &plan, &bin);
    assert_ne!(code, 0, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("down --remove-orphans` exited with exit status: 1"),
        "{text}"
    );
    assert!(
        calls(&fx).iter().all(|c| !c.contains(" up -d")),
        "{:?}",
        calls(&fx)
    );
}

fn head(dir: &Path) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .expect("git");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_checkout_keeps_untracked_files_and_follows_the_revision() {
    let fx = Fixture::new();
    let remote = pipeline(&fx);
    let bin = stubs(&fx, false);
    let plan = plan_with(&fx, &deploy_step("v1", ""));
    let (code, out, err) = apply(&fx, &plan, &bin);
    assert_eq!(code, 0, "{out}{err}");
    let checkout = fx.path().join("checkouts/kernelci-pipeline");
    assert_eq!(
        head(&checkout),
        remote.main.to_string(),
        "made, at the base"
    );
    // What the host adds by hand, and a stray edit of a tracked file.
    std::fs::write(checkout.join(".env"), "KCIDB_REST=secret\n").expect(".env");
    std::fs::write(checkout.join("config/local.toml"), "[local]\n").expect("settings");
    std::fs::write(checkout.join("config/pipeline.yaml"), "v: edited\n").expect("edit");

    remote.branch(
        "pr/1",
        ALICE,
        &[
            ("config/pipeline.yaml", Some("v: 2\n")),
            ("src/new.py", Some("new\n")),
        ],
    );
    let (code, out, err) = apply(&fx, &plan, &bin);
    assert_eq!(code, 0, "{out}{err}");
    let read = |p: &str| std::fs::read_to_string(checkout.join(p)).unwrap_or_default();
    assert_ne!(
        head(&checkout),
        remote.main.to_string(),
        "moved to the staging revision"
    );
    assert_eq!(read(".env"), "KCIDB_REST=secret\n", "untracked .env kept");
    assert_eq!(
        read("config/local.toml"),
        "[local]\n",
        "untracked settings kept"
    );
    assert_eq!(
        read("config/pipeline.yaml"),
        "v: 2\n",
        "tracked file follows"
    );
    assert_eq!(read("src/new.py"), "new\n");
    let log = std::fs::read_dir(fx.path().join(".kcideploy/runs/t"))
        .expect("runs")
        .flatten()
        .filter_map(|run| std::fs::read_to_string(run.path().join("pipeline.log")).ok())
        .collect::<String>();
    assert!(
        log.contains("local changes to tracked files are discarded: config/pipeline.yaml"),
        "{log}"
    );

    // A change that tracks `.env` would overwrite the host's: refused, naming it.
    remote.branch("pr/2", ALICE, &[(".env", Some("KCIDB_REST=pr\n"))]);
    let (code, out, err) = apply(&fx, &plan, &bin);
    assert_ne!(code, 0, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(text.contains("tracks .env, which the checkout"), "{text}");
    assert_eq!(read(".env"), "KCIDB_REST=secret\n", "never overwritten");
}

#[test]
fn a_directory_with_files_that_is_not_a_checkout_is_left_alone() {
    let fx = Fixture::new();
    pipeline(&fx);
    let bin = stubs(&fx, false);
    let dir = fx.path().join("checkouts/kernelci-pipeline");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("notes.txt"), "mine\n").expect("file");
    let plan = plan_with(&fx, &deploy_step("v1", ""));
    let (code, out, err) = apply(&fx, &plan, &bin);
    assert_ne!(code, 0, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("holds files but is not a git checkout"),
        "{text}"
    );
    assert!(calls(&fx).is_empty(), "compose never ran");
    assert!(!dir.join(".git").exists());
}

#[test]
fn settings_are_checked_when_the_plan_loads() {
    let fx = Fixture::new();
    pipeline(&fx);
    for (with, message) in [
        (
            "{ action: deploy, checkout: x }",
            "with.checkout needs with.repo",
        ),
        (
            "{ action: deploy, repo: pipe, down_recovery: [] }",
            "with.down_recovery is empty",
        ),
        (
            "{ action: deploy, cli: v3 }",
            "with.cli: unknown variant `v3`",
        ),
        (
            "{ action: restart }",
            "with.action: unknown variant `restart`",
        ),
    ] {
        let plan = plan_with(&fx, &format!("  c: {{ kind: compose, with: {with} }}\n"));
        let (code, out, err) = output(kcideploy().arg("validate").arg("-f").arg(&plan));
        assert_ne!(code, 0, "{with}");
        assert!(
            format!("{out}{err}").contains(message),
            "{with}: {out}{err}"
        );
    }
}
