//! Containers follow their image, and `-refresh` sees every Docker outcome, against the real
//! daemon (and the registry scripts/test.sh starts): a restart after a rebuild under the same
//! tag recreates the container (keeping its settings), a container run by hand from another
//! image is drift that apply repairs, and a tag pushed over in the registry is drift.

mod common;
#[path = "common/docker.rs"]
mod dockertest;

use common::*;
use dockertest::*;

const TESTS: &[(&str, Needs, fn())] = &[
    (
        "restart_recreates_a_container_whose_tag_moved_keeping_its_settings",
        Needs::Docker,
        restart_recreates_a_container_whose_tag_moved_keeping_its_settings,
    ),
    (
        "a_container_run_by_hand_from_another_image_is_drift_and_apply_refresh_repairs_it",
        Needs::Docker,
        a_container_run_by_hand_from_another_image_is_drift_and_apply_refresh_repairs_it,
    ),
    (
        "a_tag_pushed_over_in_the_registry_is_drift",
        Needs::Registry,
        a_tag_pushed_over_in_the_registry_is_drift,
    ),
];

fn main() -> std::process::ExitCode {
    run_trials(TESTS)
}

/// `docker inspect --format FORMAT name`.
fn inspect(name: &str, format: &str) -> String {
    docker(&["inspect", "--format", format, name])
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

fn restart_step(name: &str, extra: &str) -> String {
    format!(
        "  restart:\n    kind: container_restart\n    needs: [build]\n    timeout: 60s\n    with: {{ names: [{name}], stop_timeout: 1{extra} }}\n"
    )
}

fn restart_recreates_a_container_whose_tag_moved_keeping_its_settings() {
    let image = unique("kcdtest/recreate");
    let name = unique("kcdtest-recreate");
    let _cleanup = Containers(vec![name.clone()]);
    let (fx, remote, plan) = build_fixture(&image, &restart_step(&name, ""));
    let (code, out, _) = apply(&plan);
    assert_eq!(code, 1, "no container yet: {out}");
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "--hostname",
        "svc",
        "-e",
        "FOO=bar",
        "--label",
        "org.example.own=yes",
        "-v",
        "/data",
        &format!("{image}:latest"),
        "/bin/busybox",
        "sleep",
        "1001",
    ]);
    docker(&[
        "exec",
        &name,
        "/bin/busybox",
        "sh",
        "-c",
        "echo kept > /data/x",
    ]);
    let old_image = image_id(&format!("{image}:latest"));
    let old_container = inspect(&name, "{{.Id}}");

    // A new commit in the build context: the build makes a new image and moves `latest`.
    remote.branch("pr/1", ALICE, &[("docker/app.txt", Some("v2\n"))]);
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let new_image = image_id(&format!("{image}:latest"));
    assert_ne!(new_image, old_image, "rebuilt");
    assert_eq!(
        inspect(&name, "{{.Image}}"),
        new_image,
        "the container runs the new image"
    );
    assert_ne!(inspect(&name, "{{.Id}}"), old_container, "recreated");
    assert_eq!(
        docker(&["exec", &name, "/bin/busybox", "cat", "/app.txt"]),
        "v2"
    );
    // Its settings are kept: environment, label, hostname, network, command, volume data.
    let env = inspect(&name, "{{json .Config.Env}}");
    assert!(env.contains("\"FOO=bar\""), "{env}");
    assert_eq!(
        inspect(&name, "{{index .Config.Labels \"org.example.own\"}}"),
        "yes"
    );
    assert_eq!(inspect(&name, "{{.Config.Hostname}}"), "svc");
    assert_eq!(inspect(&name, "{{.HostConfig.NetworkMode}}"), "none");
    assert_eq!(
        inspect(&name, "{{json .Config.Cmd}}"),
        r#"["/bin/busybox","sleep","1001"]"#
    );
    assert_eq!(
        docker(&["exec", &name, "/bin/busybox", "cat", "/data/x"]),
        "kept"
    );
    // The old container is gone, not left renamed aside.
    let left = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={name}-kcideploy-replaced"),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(left, "", "{left}");
    // State records the image that runs.
    let outputs = state(&fx).steps["restart"]
        .outputs
        .clone()
        .expect("outputs");
    assert_eq!(outputs["containers"][0]["image"], new_image.as_str());
    assert_eq!(
        outputs["containers"][0]["id"],
        inspect(&name, "{{.Id}}").as_str()
    );
    let logs = std::fs::read_dir(fx.path().join(".kcideploy/runs/t"))
        .expect("runs")
        .flatten()
        .filter_map(|run| std::fs::read_to_string(run.path().join("restart.log")).ok())
        .collect::<String>();
    assert!(logs.contains(&format!("recreate {name}")), "{logs}");
}

fn a_container_run_by_hand_from_another_image_is_drift_and_apply_refresh_repairs_it() {
    let image = unique("kcdtest/handrun");
    let name = unique("kcdtest-handrun");
    let _cleanup = Containers(vec![name.clone()]);
    let (fx, _remote, plan) = build_fixture(
        &image,
        &restart_step(&name, &format!(", image: \"{image}:latest\"")),
    );
    // The build runs when its inputs change only, so that drift alone decides below.
    let text = std::fs::read_to_string(&plan)
        .expect("plan")
        .replacen("    always: true\n", "", 1);
    std::fs::write(&plan, text).expect("write");
    let (code, _, _) = apply(&plan);
    assert_eq!(code, 1, "no container yet");
    let run = |reference: &str| {
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            reference,
            "/bin/busybox",
            "sleep",
            "1000",
        ])
    };
    run(&format!("{image}:latest"));
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let built = image_id(&format!("{image}:latest"));
    let refreshed = || {
        output(
            kcideploy()
                .args([
                    "plan",
                    "-refresh",
                    "-detailed-exitcode",
                    "--cycle",
                    "partial",
                    "-f",
                ])
                .arg(&plan),
        )
    };
    let (code, out, err) = refreshed();
    assert_eq!(code, 0, "as recorded\n{out}{err}");

    // Somebody replaces the service by hand with another image under the same name.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {image}:latest\nLABEL org.example.hand=made\n"),
    )
    .expect("write");
    let other = format!("{image}-hand:1");
    docker(&[
        "build",
        "-q",
        "-t",
        &other,
        &dir.path().display().to_string(),
    ]);
    let other_id = image_id(&other);
    docker(&["rm", "-f", &name]);
    run(&other);
    let (code, out, err) = refreshed();
    assert_eq!(code, 2, "{out}{err}");
    let short = |id: &str| id.trim_start_matches("sha256:")[..12].to_string();
    let expected = format!(
        "drift: container {name} runs image {} instead of {}",
        short(&other_id),
        short(&built)
    );
    assert!(out.contains(&expected), "{expected}\n{out}");

    // apply -refresh plans the same repair and recreates the container from the image the
    // step names.
    let (code, out, err) = output(
        kcideploy()
            .args([
                "apply",
                "-refresh",
                "-auto-approve",
                "--cycle",
                "partial",
                "-f",
            ])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&expected), "apply planned the repair: {out}");
    assert_eq!(inspect(&name, "{{.Image}}"), built);
    let outputs = state(&fx).steps["restart"]
        .outputs
        .clone()
        .expect("outputs");
    assert_eq!(outputs["containers"][0]["image"], built.as_str());
    let (code, out, err) = refreshed();
    assert_eq!(code, 0, "repaired\n{out}{err}");
    let _ = std::process::Command::new("docker")
        .args(["image", "rm", "-f", &other])
        .output();
}

fn a_tag_pushed_over_in_the_registry_is_drift() {
    let registry = std::env::var("KCIDEPLOY_TEST_REGISTRY").expect("checked by main");
    let image = format!("{registry}/{}", unique("kcdtest/pushdrift"));
    let (fx, _remote, plan) = build_fixture(
        &image,
        &format!(
            "  push:\n    kind: docker_push\n    needs: [build]\n    with: {{ image: {image}, tags: [latest] }}\n"
        ),
    );
    let text = std::fs::read_to_string(&plan)
        .expect("plan")
        .replacen("    always: true\n", "", 1);
    std::fs::write(&plan, text).expect("write");
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let outputs = state(&fx).steps["push"].outputs.clone().expect("outputs");
    let digest = outputs["pushed"][0]["digest"]
        .as_str()
        .expect("the pushed manifest digest")
        .to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let refreshed = || {
        output(
            kcideploy()
                .args([
                    "plan",
                    "-refresh",
                    "-detailed-exitcode",
                    "--cycle",
                    "partial",
                    "-f",
                ])
                .arg(&plan),
        )
    };
    let (code, out, err) = refreshed();
    assert_eq!(code, 0, "as pushed\n{out}{err}");

    // Another image pushed over the same tag.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {image}:latest\nLABEL org.example.other=1\n"),
    )
    .expect("write");
    docker(&[
        "build",
        "-q",
        "-t",
        &format!("{image}:latest"),
        &dir.path().display().to_string(),
    ]);
    docker(&["push", "-q", &format!("{image}:latest")]);
    let (code, out, err) = refreshed();
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains(&format!("drift: {image}:latest names manifest"))
            && out.contains(&format!("instead of the pushed {}", &digest[7..19])),
        "{out}"
    );
}
