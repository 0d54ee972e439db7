//! `state adopt` against the real daemon (and the registry scripts/test.sh starts): services
//! built and run by hand are adopted with the image ids they run, a plan after has nothing
//! to do (and `-refresh` finds no drift), one changed file triggers only its component's
//! steps, apply goes on from the adopted outputs, and what is not there is `unknown`.

mod common;
#[path = "common/docker.rs"]
mod dockertest;

use common::*;
use dockertest::*;

const TESTS: &[(&str, Needs, fn())] = &[
    (
        "services_run_by_hand_are_adopted_with_the_images_they_run",
        Needs::Docker,
        services_run_by_hand_are_adopted_with_the_images_they_run,
    ),
    (
        "an_image_pushed_by_hand_is_adopted_with_its_registry_digest",
        Needs::Registry,
        an_image_pushed_by_hand_is_adopted_with_its_registry_digest,
    ),
];

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

/// The plan: the image from `docker/`, the container running it, docs on their own.
fn plan_text(image: &str, container: &str, extra: &str) -> String {
    format!(
        r#"version: 1
name: t
repos:
  pipe: {{ url: repos/pipe.git, pending: {{ branches: "pr/*" }} }}
components:
  image: {{ repo: pipe, paths: ["docker/**"] }}
  docs: {{ repo: pipe, paths: ["README.md"] }}
steps:
  build:
    kind: docker_build
    on: [image]
    with: {{ image: {image}, repo: pipe, context: docker, tags: [latest, staging] }}
  restart:
    kind: container_restart
    needs: [build]
    timeout: 60s
    with: {{ names: [{container}], stop_timeout: 1 }}
  docs: {{ kind: command, on: [docs], with: {{ run: ["true"] }} }}
{extra}"#
    )
}

/// `docker build` of the fixture's `docker/` directory as it is on `main`, by hand.
fn build_by_hand(tags: &[String]) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), DOCKERFILE).expect("write");
    std::fs::write(dir.path().join("busybox"), busybox()).expect("write");
    use std::os::unix::fs::PermissionsExt;
    let executable = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(dir.path().join("busybox"), executable).expect("chmod");
    std::fs::write(dir.path().join("app.txt"), "v1\n").expect("write");
    let mut args = vec!["build".to_string(), "-q".to_string()];
    for tag in tags {
        args.extend(["-t".to_string(), tag.clone()]);
    }
    args.push(dir.path().display().to_string());
    docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

fn adopt(plan: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    output(
        kcideploy()
            .args(["state", "adopt", "-auto-approve"])
            .args(extra)
            .arg("-f")
            .arg(plan),
    )
}

/// The steps `plan --json --cycle partial` would run.
fn plan_runs(plan: &std::path::Path) -> Vec<String> {
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "--json", "--cycle", "partial", "-f"])
            .arg(plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("plan JSON");
    json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["action"] == "run")
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn services_run_by_hand_are_adopted_with_the_images_they_run() {
    let image = unique("kcdtest/adopt");
    let name = unique("kcdtest-adopt");
    let _cleanup = Containers(vec![name.clone()]);
    let (fx, remote, _) = build_fixture(&image, "");
    let plan = fx.plan_file(&plan_text(&image, &name, ""));
    kcideploy::gitops::scratch::set_branch(&remote.repo, "staging.kernelci.org", remote.main)
        .expect("staging branch");
    // Built and run by hand, as staging runs today.
    build_by_hand(&[format!("{image}:latest"), format!("{image}:staging")]);
    let built = image_id(&format!("{image}:latest"));
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        &format!("{image}:latest"),
    ]);

    let (code, out, err) = adopt(&plan, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{name} runs {}", &built[7..19])),
        "{out}"
    );
    let st = state(&fx);
    let build = st.steps["build"].outputs.clone().expect("build outputs");
    assert_eq!(build["id"], built.as_str(), "{build}");
    let restart = st.steps["restart"]
        .outputs
        .clone()
        .expect("restart outputs");
    let runs = docker(&["inspect", "--format", "{{.Image}}", &name]);
    assert_eq!(runs, built, "the container runs the image built by hand");
    assert_eq!(
        restart["containers"][0]["image"],
        runs.as_str(),
        "{restart}"
    );
    assert_eq!(restart["containers"][0]["name"], name.as_str());

    // Nothing changed: nothing to do, and the live system is as recorded.
    let (code, out, err) = refreshed_plan(&plan);
    assert_eq!(code, 0, "nothing to do, no drift\n{out}{err}");
    assert!(!out.contains("unknown"), "{out}");
    // A tag of the adopted build moved by hand is drift.
    let other = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        other.path().join("Dockerfile"),
        format!("FROM {image}:latest\nLABEL org.example.hand=made\n"),
    )
    .expect("write");
    let staging = format!("{image}:staging");
    docker(&[
        "build",
        "-q",
        "-t",
        &staging,
        &other.path().display().to_string(),
    ]);
    let (code, out, err) = refreshed_plan(&plan);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains(&format!("drift: {staging} points at another image")),
        "{out}"
    );
    docker(&["tag", &format!("{image}:latest"), &staging]);

    // One file per component: only its steps.
    remote.branch("pr/1", ALICE, &[("README.md", Some("more\n"))]);
    assert_eq!(plan_runs(&plan), ["docs"]);
    kcideploy::gitops::scratch::delete_branch(&remote.repo, "pr/1").expect("drop");
    remote.branch("pr/2", ALICE, &[("docker/app.txt", Some("v2\n"))]);
    assert_eq!(plan_runs(&plan), ["build", "restart"]);

    // Apply goes on from there: a new image, the container recreated from it.
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let rebuilt = image_id(&format!("{image}:latest"));
    assert_ne!(rebuilt, built);
    assert_eq!(
        docker(&["inspect", "--format", "{{.Image}}", &name]),
        rebuilt
    );
    assert_eq!(
        docker(&["exec", &name, "/bin/busybox", "cat", "/app.txt"]),
        "v2"
    );

    // What is not there is unknown, and plan says so (of the steps it does not run).
    kcideploy::gitops::scratch::delete_branch(&remote.repo, "pr/2").expect("drop");
    docker(&["rm", "-f", &name]);
    let (code, out, err) = adopt(&plan, &["-replace-state"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 step(s) marked unknown"), "{out}");
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("  restart: no container {name}")),
        "{out}"
    );
    assert!(out.contains("-replace STEP"), "{out}");
}

fn an_image_pushed_by_hand_is_adopted_with_its_registry_digest() {
    let registry = std::env::var("KCIDEPLOY_TEST_REGISTRY").expect("checked by main");
    let image = format!("{registry}/{}", unique("kcdtest/adoptpush"));
    let (fx, remote, _) = build_fixture(&image, "");
    let plan = fx.plan_file(&format!(
        r#"version: 1
name: t
repos:
  pipe: {{ url: repos/pipe.git, pending: {{ branches: "pr/*" }} }}
components:
  image: {{ repo: pipe, paths: ["docker/**"] }}
steps:
  build: {{ kind: docker_build, on: [image], with: {{ image: {image}, repo: pipe, context: docker, tags: [latest] }} }}
  push: {{ kind: docker_push, needs: [build], with: {{ image: {image}, tags: [latest] }} }}
"#
    ));
    kcideploy::gitops::scratch::set_branch(&remote.repo, "staging.kernelci.org", remote.main)
        .expect("staging branch");
    build_by_hand(&[format!("{image}:latest")]);
    docker(&["push", "-q", &format!("{image}:latest")]);
    let pushed = docker(&[
        "image",
        "inspect",
        "--format",
        "{{index .RepoDigests 0}}",
        &format!("{image}:latest"),
    ]);
    let digest = pushed.rsplit('@').next().expect("a digest").to_string();

    let (code, out, err) = adopt(&plan, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let outputs = state(&fx).steps["push"].outputs.clone().expect("outputs");
    assert_eq!(outputs["pushed"][0]["digest"], digest.as_str(), "{outputs}");
    let (code, out, err) = refreshed_plan(&plan);
    assert_eq!(code, 0, "nothing to do, no drift\n{out}{err}");
}
