//! kill -9 an apply while its docker_build runs, against a real daemon (started by
//! scripts/test.sh when none answers): a build is a request on the daemon's API, and the
//! daemon cancels it when kcideploy's connection closes. No build container is left running
//! and nothing is tagged, so the next apply builds the image again (README "Killed applies").

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Whether a daemon answers; without one, fail when the suite requires Docker, else skip.
fn docker_ready() -> bool {
    let ok = Command::new("docker")
        .args(["info"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let required = std::env::var_os("KCIDEPLOY_REQUIRE_DOCKER").is_some()
            || std::env::var_os("CI").is_some();
        assert!(!required, "no Docker daemon answers");
        eprintln!("SKIPPED: no Docker daemon; run the suite with scripts/test.sh");
    }
    ok
}

/// Ids of the running containers whose command holds `marker`.
fn containers_running(marker: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "--no-trunc", "--format", "{{.ID}} {{.Command}}"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn image_exists(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_daemon_cancels_the_build_of_a_killed_apply() {
    if !docker_ready() {
        return;
    }
    // A sleep no other test runs, to find the build's container by.
    let marker = "sleep 347";
    let dockerfile =
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"347\"]\n";
    let fx = Fixture::new();
    busybox_context(&fx, dockerfile);
    let image = format!("kcdtest/killed-{}", &kcideploy::support::random_id()[..8]);
    let plan = fx.plan_file(&format!(
        "version: 1\nname: t\nrepos:\n  pipe: {{ url: repos/pipe.git }}\nsteps:\n  build:\n    kind: docker_build\n    always: true\n    with: {{ image: {image}, repo: pipe, context: docker, tags: [latest] }}\n"
    ));
    let mut apply = Command::new(assert_cmd::cargo::cargo_bin("kcideploy"))
        .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
        .arg(&plan)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("apply");
    let start = Instant::now();
    while containers_running(marker).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the build never reached its RUN instruction"
        );
        assert!(apply.try_wait().expect("apply").is_none(), "apply ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    apply.kill().expect("kill -9");
    apply.wait().expect("wait");
    let killed = Instant::now();
    while !containers_running(marker).is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the build's container still runs a minute after the kill"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cancelled_in = killed.elapsed();
    println!("the daemon stopped the build {cancelled_in:?} after the kill");
    assert!(
        !image_exists(&format!("{image}:latest")),
        "a cancelled build is not tagged"
    );
}
