//! A docker_build past its step's `timeout` fails, naming the daemon and what it last said,
//! against a real daemon (started by scripts/test.sh when none answers).

mod common;

use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use common::*;

/// Whether a daemon answers; without one, fail when the suite requires Docker, else skip.
fn docker_ready() -> bool {
    let ok = StdCommand::new("docker")
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

#[test]
fn a_build_past_its_timeout_names_the_daemon() {
    if !docker_ready() {
        return;
    }
    let dockerfile =
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"60\"]\n";
    let fx = Fixture::new();
    busybox_context(&fx, dockerfile);
    let image = format!("kcdtest/slow-{}", &kcideploy::support::random_id()[..8]);
    let plan = fx.plan_file(&format!(
        "version: 1\nname: t\nrepos:\n  pipe: {{ url: repos/pipe.git }}\nsteps:\n  build:\n    kind: docker_build\n    always: true\n    timeout: 5s\n    with: {{ image: {image}, repo: pipe, context: docker }}\n"
    ));
    let start = Instant::now();
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        start.elapsed() < Duration::from_secs(50),
        "a 5 s limit on a 60 s build took {:?}",
        start.elapsed()
    );
    let daemon =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    assert!(
        out.contains(&format!(
            "docker build of {image} timed out after 5s on the Docker daemon at {daemon}: "
        )),
        "{out}"
    );
}
