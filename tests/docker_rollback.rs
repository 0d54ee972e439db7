//! `rollback` against the real daemon: after a deploy of a new image, a rollback to the run
//! before it puts the previous image id back in the running container, without building (the
//! earlier revision's content tag still names that image).

mod common;
#[path = "common/docker.rs"]
mod dockertest;

use common::*;
use dockertest::*;

const TESTS: &[(&str, Needs, fn())] = &[(
    "rollback_restores_the_previous_image_in_the_running_container",
    Needs::Docker,
    rollback_restores_the_previous_image_in_the_running_container,
)];

fn main() -> std::process::ExitCode {
    run_trials(TESTS)
}

/// Removes the containers a test started, whatever happens.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v", name])
                .output();
        }
    }
}

fn rollback_restores_the_previous_image_in_the_running_container() {
    let image = unique("kcdtest/rollback");
    let name = unique("kcdtest-rollback");
    let _cleanup = Containers(vec![name.clone()]);
    let restart = format!(
        "  restart:\n    kind: container_restart\n    needs: [build]\n    timeout: 60s\n    with: {{ names: [{name}], stop_timeout: 1 }}\n"
    );
    let (fx, remote, plan) = build_fixture(&image, &restart);
    let (code, out, _) = apply(&plan);
    assert_eq!(code, 1, "no container yet: {out}");
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        &format!("{image}:latest"),
        "/bin/busybox",
        "sleep",
        "1001",
    ]);
    // The same inputs again: the run is resumed and succeeds.
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let old_image = image_id(&format!("{image}:latest"));
    let first = state(&fx).history.last().expect("run 1").clone();
    assert_eq!(
        first.images.get("build"),
        Some(&old_image),
        "the run records its image"
    );

    // A new commit in the build context: a new image runs.
    remote.branch("pr/1", ALICE, &[("docker/app.txt", Some("v2\n"))]);
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let new_image = image_id(&format!("{image}:latest"));
    assert_ne!(new_image, old_image, "rebuilt");
    assert_eq!(inspect(&name), new_image);

    let (code, out, err) = output(
        kcideploy()
            .args(["rollback", "-auto-approve", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("Images run {} recorded:", first.id)),
        "{out}"
    );
    assert_eq!(
        inspect(&name),
        old_image,
        "the container runs the previous image again"
    );
    assert_eq!(image_id(&format!("{image}:latest")), old_image);
    assert_eq!(
        docker(&["exec", &name, "/bin/busybox", "cat", "/app.txt"]),
        "v1"
    );
    let after = state(&fx);
    let run = after.history.last().expect("the rollback");
    assert_eq!(run.scope.rollback_of.as_deref(), Some(first.id.as_str()));
    assert_eq!(run.images.get("build"), Some(&old_image));
    let build_log = std::fs::read_to_string(
        fx.path()
            .join(".kcideploy/runs/t")
            .join(&run.id)
            .join("build.log"),
    )
    .expect("build log");
    assert!(build_log.contains("nothing to build"), "{build_log}");
}

/// The image a container runs.
fn inspect(name: &str) -> String {
    docker(&["inspect", "--format", "{{.Image}}", name])
}
