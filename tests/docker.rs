//! Docker steps against a real daemon (started by scripts/test.sh when none answers): content
//! tags, rebuilds, build args, failed builds, push and pull with a local registry, restart
//! with a health check, prune, compose, drift.

mod common;
#[path = "common/docker.rs"]
mod dockertest;

use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use common::*;
use dockertest::*;

fn main() -> std::process::ExitCode {
    run_trials(TESTS)
}

/// Every test here, and whether it needs the registry too.
const TESTS: &[(&str, Needs, fn())] = &[
    (
        "build_content_tag_skip_rebuild_and_build_args",
        Needs::Docker,
        build_content_tag_skip_rebuild_and_build_args,
    ),
    (
        "failed_build_names_the_instruction",
        Needs::Docker,
        failed_build_names_the_instruction,
    ),
    (
        "push_to_the_local_registry_and_pull_back",
        Needs::Registry,
        push_to_the_local_registry_and_pull_back,
    ),
    (
        "restart_waits_for_health_then_drift_after_docker_rm",
        Needs::Docker,
        restart_waits_for_health_then_drift_after_docker_rm,
    ),
    (
        "drift_alone_triggers_a_step_that_is_otherwise_up_to_date",
        Needs::Docker,
        drift_alone_triggers_a_step_that_is_otherwise_up_to_date,
    ),
    (
        "prune_keeps_the_newest_images",
        Needs::Docker,
        prune_keeps_the_newest_images,
    ),
    ("compose_up_and_down", Needs::Docker, compose_up_and_down),
    (
        "compose_deploy_in_a_checkout_keeps_env_and_pulls_downs_ups",
        Needs::Registry,
        compose_deploy_in_a_checkout_keeps_env_and_pulls_downs_ups,
    ),
    (
        "push_authenticates_to_a_registry_with_htpasswd",
        Needs::Tools(&["docker-registry", "htpasswd"]),
        push_authenticates_to_a_registry_with_htpasswd,
    ),
];

fn build_content_tag_skip_rebuild_and_build_args() {
    let image = unique("kcdtest/app");
    let (fx, remote, plan) = build_fixture(&image, "");
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let record = &state(&fx).steps["build"];
    let outputs = record.outputs.as_ref().expect("outputs");
    let tag = outputs["content_tag"].as_str().expect("tag").to_string();
    assert!(tag.starts_with("kcd-"), "{tag}");
    let first = image_id(&format!("{image}:{tag}"));
    assert_eq!(
        image_id(&format!("{image}:latest")),
        first,
        "moving tag applied"
    );
    assert_eq!(outputs["id"].as_str(), Some(first.as_str()));
    let labels = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &first,
    ]);
    let labels: serde_json::Value = serde_json::from_str(&labels).expect("labels");
    assert_eq!(labels["org.kernelci.kcideploy"], "1");
    let staging = &state(&fx).repos["pipe"].deployed;
    assert_eq!(
        labels["org.example.rev"].as_str(),
        Some(staging.as_str()),
        "build arg from the repo SHA"
    );

    // Same content, new run: the build is a no-op (how fast: bench/docker-noop.sh).
    let (code, out, _) = apply(&plan);
    assert_eq!(code, 0, "{out}");
    assert_eq!(build_logs(&fx).matches("nothing to build").count(), 1);

    // One context file changes: a new content tag, a new image, `latest` moves.
    remote.branch("pr/1", ALICE, &[("docker/app.txt", Some("v2\n"))]);
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let tag2 = state(&fx).steps["build"].outputs.as_ref().expect("outputs")["content_tag"]
        .as_str()
        .expect("tag")
        .to_string();
    assert_ne!(tag2, tag);
    let second = image_id(&format!("{image}:{tag2}"));
    assert_ne!(second, first);
    assert_eq!(image_id(&format!("{image}:latest")), second);
    // A README change is outside the context, but the REV build argument is the staging
    // SHA, which every merge changes: the build args are part of the content tag, so the
    // tag changes (as documented: tree, Dockerfile and args).
    remote.branch("pr/2", ALICE, &[("README.md", Some("new readme\n"))]);
    let (code, _, _) = apply(&plan);
    assert_eq!(code, 0);
    let tag3 = content_tag(&fx);
    assert_ne!(tag3, tag2, "the REV build arg (the staging SHA) changed");

    // With args that do not follow the SHA, only the build context decides: a change
    // outside it keeps the content tag and builds nothing; one inside it makes a new tag.
    std::fs::write(
        &plan,
        std::fs::read_to_string(&plan).expect("plan").replace(
            r#"args: { REV: "${repos.pipe.sha}" }"#,
            "args: { REV: fixed }",
        ),
    )
    .expect("plan");
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let fixed = content_tag(&fx);
    assert_ne!(fixed, tag3, "other args, other tag");
    let noops = build_logs(&fx).matches("nothing to build").count();
    remote.branch("pr/3", ALICE, &[("docs/notes.md", Some("notes\n"))]);
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(content_tag(&fx), fixed, "a change outside the context");
    assert_eq!(
        build_logs(&fx).matches("nothing to build").count(),
        noops + 1,
        "nothing built for a change outside the context"
    );
    remote.branch("pr/4", ALICE, &[("docker/extra.txt", Some("extra\n"))]);
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    assert_ne!(content_tag(&fx), fixed, "a change inside the context");
}

/// The build step's content tag, from the state.
fn content_tag(fx: &Fixture) -> String {
    state(fx).steps["build"].outputs.as_ref().expect("outputs")["content_tag"]
        .as_str()
        .expect("tag")
        .to_string()
}

/// Every run's build log so far.
fn build_logs(fx: &Fixture) -> String {
    std::fs::read_dir(fx.path().join(".kcideploy/runs/t"))
        .expect("runs")
        .flatten()
        .filter_map(|run| std::fs::read_to_string(run.path().join("build.log")).ok())
        .collect()
}

fn failed_build_names_the_instruction() {
    let image = unique("kcdtest/broken");
    let fx = Fixture::new();
    fx.repo("pipe", &[("a", Some("a\n"))]);
    let plan = fx.plan_file(&format!(
        "version: 1\nname: t\nrepos:\n  pipe: {{ url: repos/pipe.git }}\nsteps:\n  build:\n    kind: docker_build\n    always: true\n    with:\n      image: {image}\n      inline: \"FROM scratch\\nCOPY missing-file /x\\n\"\n"
    ));
    let (code, out, _) = apply(&plan);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("docker build of {image}:kcd-")),
        "{out}"
    );
    assert!(out.contains(" failed at `Step 2/"), "{out}");
    assert!(
        out.contains(" : COPY missing-file /x`: COPY failed: file not found in build context"),
        "{out}"
    );
}

fn push_to_the_local_registry_and_pull_back() {
    let registry = std::env::var("KCIDEPLOY_TEST_REGISTRY").expect("checked by main");
    let image = format!("{registry}/{}", unique("kcdtest/pushed"));
    let (fx, _remote, plan) = build_fixture(
        &image,
        &format!(
            "  push:\n    kind: docker_push\n    always: true\n    needs: [build]\n    with: {{ image: {image}, tags: [latest] }}\n"
        ),
    );
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let built = image_id(&format!("{image}:latest"));
    docker(&["image", "rm", &format!("{image}:latest")]);
    let tag = state(&fx).steps["build"].outputs.as_ref().expect("o")["content_tag"]
        .as_str()
        .expect("t")
        .to_string();
    docker(&["image", "rm", &format!("{image}:{tag}")]);
    assert!(!docker_ok(&[
        "image",
        "inspect",
        &format!("{image}:latest")
    ]));
    docker(&["pull", "-q", &format!("{image}:latest")]);
    assert_eq!(
        image_id(&format!("{image}:latest")),
        built,
        "pulled back what was pushed"
    );
}

fn restart_waits_for_health_then_drift_after_docker_rm() {
    let image = unique("kcdtest/svc");
    let name = unique("kcdtest-svc");
    let (fx, _remote, plan) = build_fixture(
        &image,
        &format!(
            "  restart:\n    kind: container_restart\n    always: true\n    needs: [build]\n    timeout: 60s\n    with: {{ names: [{name}], stop_timeout: 1 }}\n"
        ),
    );
    // Build first (restart fails: no container yet), then start the service by hand.
    let (code, out, _) = apply(&plan);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("cannot restart container {name}")),
        "{out}"
    );
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "--health-cmd",
        "/bin/busybox test -f /ready",
        "--health-interval",
        "1s",
        &format!("{image}:latest"),
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox sleep 2; /bin/busybox touch /ready; exec /bin/busybox sleep 1000",
    ]);
    let started_before = docker(&["inspect", "--format", "{{.State.StartedAt}}", &name]);
    let start = Instant::now();
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "waited for the health check"
    );
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.Health.Status}}", &name]),
        "healthy"
    );
    assert_ne!(
        docker(&["inspect", "--format", "{{.State.StartedAt}}", &name]),
        started_before,
        "restarted"
    );
    let record = state(&fx).steps["restart"]
        .outputs
        .clone()
        .expect("outputs");
    assert_eq!(record["containers"][0]["name"], name.as_str());

    // No drift while all is as recorded.
    let (code, out, err) = output(
        kcideploy()
            .args([
                "plan",
                "-refresh",
                "-detailed-exitcode",
                "--cycle",
                "full",
                "-f",
            ])
            .arg(&plan),
    );
    assert_eq!(code, 2, "always steps run in every run: {out}{err}");
    assert!(!out.contains("drift:"), "{out}");
    // docker rm: the restart step drifts; a removed image: the build step drifts.
    docker(&["rm", "-f", &name]);
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "-refresh", "--cycle", "full", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("drift: container {name} no longer exists")),
        "{out}"
    );
    let tag = state(&fx).steps["build"].outputs.as_ref().expect("o")["content_tag"]
        .as_str()
        .expect("t")
        .to_string();
    docker(&["image", "rm", "-f", &format!("{image}:{tag}")]);
    let (_, out, _) = output(
        kcideploy()
            .args(["plan", "-refresh", "--json", "-f"])
            .arg(&plan),
    );
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    let build = json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == "build")
        .expect("build");
    let reasons: Vec<&serde_json::Value> = build["because"]
        .as_array()
        .expect("because")
        .iter()
        .collect();
    assert!(
        reasons.iter().any(|r| r["reason"] == "drift"
            && r["detail"] == format!("image {image}:{tag} no longer exists")),
        "{reasons:?}"
    );
}

fn drift_alone_triggers_a_step_that_is_otherwise_up_to_date() {
    let image = unique("kcdtest/drift");
    let (fx, _remote, plan) = build_fixture(&image, "");
    let text = std::fs::read_to_string(&plan)
        .expect("plan")
        .replace("    always: true\n", "");
    std::fs::write(&plan, text).expect("write");
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, _) = output(
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
    );
    assert_eq!(code, 0, "nothing changed, nothing drifted");
    docker(&["image", "rm", "-f", &format!("{image}:latest")]);
    let (code, out, _) = output(
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
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("drift: {image}:latest no longer exists")),
        "{out}"
    );
    // Applying the refreshed plan puts the tag back.
    let saved = fx.path().join("p.json");
    kcideploy()
        .args(["plan", "-refresh", "--cycle", "partial", "-f"])
        .arg(&plan)
        .arg("-out")
        .arg(&saved)
        .assert()
        .success();
    let (code, out, err) = output(kcideploy().arg("apply").arg(&saved));
    assert_eq!(code, 0, "{out}{err}");
    assert!(docker_ok(&["image", "inspect", &format!("{image}:latest")]));
}

fn prune_keeps_the_newest_images() {
    let image = unique("kcdtest/prune");
    let dir = tempfile::tempdir().expect("dir");
    let mut ids = Vec::new();
    for i in 0..3 {
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!("FROM scratch\nLABEL n={i}\nCMD [\"x\"]\n"),
        )
        .expect("df");
        docker(&[
            "build",
            "-q",
            "-t",
            &format!("{image}:v{i}"),
            "--label",
            "org.kernelci.kcideploy=1",
            "--label",
            &format!("org.kernelci.kcideploy.image={image}"),
            dir.path().to_str().expect("path"),
        ]);
        ids.push(image_id(&format!("{image}:v{i}")));
        std::thread::sleep(Duration::from_millis(1100));
    }
    let fx = Fixture::new();
    fx.repo("pipe", &[("a", Some("a\n"))]);
    let plan = fx.plan_file(&format!(
        "version: 1\nname: t\nrepos:\n  pipe: {{ url: repos/pipe.git }}\nsteps:\n  prune: {{ kind: docker_prune, always: true, with: {{ image: {image}, keep: 2 }} }}\n"
    ));
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!docker_ok(&["image", "inspect", &ids[0]]), "oldest removed");
    assert!(docker_ok(&["image", "inspect", &ids[1]]));
    assert!(docker_ok(&["image", "inspect", &ids[2]]));
}

fn compose_up_and_down() {
    let image = unique("kcdtest/compose");
    let project = unique("kcdproj").replace('-', "");
    let (fx, remote, plan) = build_fixture(&image, "");
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let compose = format!(
        "version: \"2.4\"\nservices:\n  app:\n    image: {image}:latest\n    network_mode: none\n    command: [\"/bin/busybox\", \"sleep\", \"1000\"]\n"
    );
    remote.branch(
        "pr/1",
        ALICE,
        &[("docker-compose.yaml", Some(compose.as_str()))],
    );
    let text = std::fs::read_to_string(&plan).expect("plan")
        + &format!(
            "  up: {{ kind: compose, always: true, after: [build], with: {{ action: up, project: {project}, repo: pipe, services: [app] }} }}\n"
        );
    std::fs::write(&plan, text).expect("write");
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let running = docker(&[
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--format",
        "{{.Names}}",
    ]);
    assert!(!running.is_empty(), "compose started the service");
    let text = std::fs::read_to_string(&plan)
        .expect("plan")
        .replace("action: up", "action: down");
    std::fs::write(&plan, text).expect("write");
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let running = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--format",
        "{{.Names}}",
    ]);
    assert!(running.is_empty(), "compose down removed it: {running}");
    let _ = fx;
}

/// The compose project's one container: (id, image id, `APP_MSG` of its environment).
fn compose_container(project: &str) -> (String, String, String) {
    let id = docker(&[
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--format",
        "{{.ID}}",
    ]);
    assert_eq!(id.lines().count(), 1, "one running container: {id}");
    let image = docker(&["inspect", "--format", "{{.Image}}", &id]);
    let env = docker(&["inspect", "--format", "{{json .Config.Env}}", &id]);
    let msg = serde_json::from_str::<Vec<String>>(&env)
        .expect("env")
        .iter()
        .find_map(|e| e.strip_prefix("APP_MSG=").map(String::from))
        .unwrap_or_default();
    (id, image, msg)
}

/// The staging restart with Debian's docker-compose (`cli: v1`) and a real daemon, in a
/// persistent checkout: `.env` written on the host between two cycles is kept (and read by
/// compose), and each cycle pulls, then downs, then ups: the second cycle's container is a
/// new one, running, from the image the registry had (not the older local copy).
fn compose_deploy_in_a_checkout_keeps_env_and_pulls_downs_ups() {
    let registry = std::env::var("KCIDEPLOY_TEST_REGISTRY").expect("checked by main");
    let local = unique("kcdtest/composeck");
    let image = format!("{registry}/{local}");
    let project = unique("kcdck").replace('-', "");
    let (fx, remote, plan) = build_fixture(&local, "");
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let first = image_id(&format!("{local}:latest"));
    docker(&["tag", &first, &format!("{image}:latest")]);
    docker(&["push", "-q", &format!("{image}:latest")]);
    let compose = format!(
        "version: \"2.4\"\nservices:\n  app:\n    image: {image}:latest\n    network_mode: none\n    environment: [\"APP_MSG=${{APP_MSG:-unset}}\"]\n    command: [\"/bin/busybox\", \"sleep\", \"1000\"]\n"
    );
    remote.branch(
        "pr/1",
        ALICE,
        &[
            ("docker-compose.yaml", Some(compose.as_str())),
            (".gitignore", Some(".env\n")),
        ],
    );
    let text = std::fs::read_to_string(&plan).expect("plan")
        + &format!(
            "  app:\n    kind: compose\n    always: true\n    after: [build]\n    with:\n      \
             action: deploy\n      cli: v1\n      repo: pipe\n      checkout: checkouts/app\n      \
             project: {project}\n      files: [docker-compose.yaml]\n"
        );
    std::fs::write(&plan, text).expect("write");
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let (c1, image1, msg1) = compose_container(&project);
    assert_eq!((image1.as_str(), msg1.as_str()), (first.as_str(), "unset"));

    // On the host: the secrets' .env. In the registry: a newer image under the same tag,
    // while the local tag still names the older one.
    let checkout = fx.path().join("checkouts/app");
    std::fs::write(checkout.join(".env"), "APP_MSG=from-dot-env\n").expect(".env");
    let scratch = docker(&["create", &first]);
    let second = docker(&[
        "commit",
        "--change",
        "LABEL org.example.second=1",
        &scratch,
        &format!("{image}:latest"),
    ]);
    docker(&["rm", &scratch]);
    docker(&["push", "-q", &format!("{image}:latest")]);
    docker(&["tag", &first, &format!("{image}:latest")]);
    assert_ne!(first, second);

    remote.branch("pr/2", ALICE, &[("README.md", Some("next cycle\n"))]);
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let (c2, image2, msg2) = compose_container(&project);
    assert_ne!(c2, c1, "down removed the first container, up made another");
    assert_eq!(
        image2, second,
        "pulled before up: the registry's image runs"
    );
    assert_eq!(msg2, "from-dot-env", "compose read the kept .env");
    assert_eq!(
        std::fs::read_to_string(checkout.join(".env")).expect(".env"),
        "APP_MSG=from-dot-env\n"
    );
    let logs: String = std::fs::read_dir(fx.path().join(".kcideploy/runs/t"))
        .expect("runs")
        .flatten()
        .filter_map(|run| std::fs::read_to_string(run.path().join("app.log")).ok())
        .collect();
    let order: Vec<&str> = logs
        .lines()
        .filter(|l| l.starts_with("docker-compose "))
        .map(|l| l.rsplit(" docker-compose.yaml ").next().unwrap_or(l))
        .collect();
    assert_eq!(
        order,
        [
            "pull",
            "down --remove-orphans",
            "up -d",
            "pull",
            "down --remove-orphans",
            "up -d"
        ],
        "{logs}"
    );
    let _ = StdCommand::new("docker-compose")
        .args(["-p", &project, "-f", "docker-compose.yaml", "down"])
        .current_dir(&checkout)
        .output();
}

/// A `docker-registry` of its own on a free 127.0.0.1 port, with htpasswd (bcrypt) auth;
/// killed on drop.
struct AuthRegistry {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl AuthRegistry {
    fn start(user: &str, password: &str) -> AuthRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let htpasswd = StdCommand::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd");
        assert!(htpasswd.status.success(), "htpasswd -Bbn");
        let htpasswd_path = dir.path().join("htpasswd");
        std::fs::write(&htpasswd_path, &htpasswd.stdout).expect("htpasswd file");
        // A free port: the kernel picks one; the registry binds it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: warn }}\nstorage: {{ filesystem: {{ rootdirectory: {} }} }}\nhttp: {{ addr: {addr} }}\nauth: {{ htpasswd: {{ realm: kcideploy, path: {} }} }}\n",
                dir.path().join("data").display(),
                htpasswd_path.display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = StdCommand::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry");
        let registry = AuthRegistry {
            child,
            addr,
            _dir: dir,
        };
        let start = Instant::now();
        while registry.get("/v2/", None).is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the registry on {} never answered: {}",
                registry.addr,
                std::fs::read_to_string(registry._dir.path().join("registry.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    /// The HTTP status of `GET path`, with basic auth when given; `None` when nothing answers.
    fn get(&self, path: &str, auth: Option<(&str, &str)>) -> Option<u16> {
        use base64::Engine as _;
        use std::io::{Read as _, Write as _};
        let mut conn = std::net::TcpStream::connect(&self.addr).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json\r\n",
            self.addr
        );
        if let Some((user, password)) = auth {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        conn.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        conn.read_to_string(&mut response).ok()?;
        response.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file's text under `dir`, recursively.
fn all_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.push_str(&all_text(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    out
}

fn push_authenticates_to_a_registry_with_htpasswd() {
    let user = "kcd";
    let password = format!("pw-{}", kcideploy::support::random_id());
    let registry = AuthRegistry::start(user, &password);
    assert_eq!(registry.get("/v2/", None), Some(401), "auth is on");
    assert_eq!(registry.get("/v2/", Some((user, &password))), Some(200));

    let name = unique("kcdtest/authed");
    let image = format!("{}/{name}", registry.addr);
    let (fx, _remote, plan) = build_fixture(
        &image,
        &format!(
            "  push:\n    kind: docker_push\n    always: true\n    needs: [build]\n    with: {{ image: {image}, tags: [latest] }}\n"
        ),
    );
    // No Docker config file to fall back on: only the environment gives credentials.
    let docker_config = tempfile::tempdir().expect("tempdir");
    let apply_with = |creds: Option<(&str, &str)>| {
        let mut cmd = kcideploy();
        cmd.args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan)
            .env("DOCKER_CONFIG", docker_config.path())
            .env_remove("KCIDEPLOY_REGISTRY_USERNAME")
            .env_remove("KCIDEPLOY_REGISTRY_PASSWORD");
        if let Some((u, p)) = creds {
            cmd.env("KCIDEPLOY_REGISTRY_USERNAME", u)
                .env("KCIDEPLOY_REGISTRY_PASSWORD", p);
        }
        output(&mut cmd)
    };

    // Without credentials: the push fails, and says the registry wants them.
    let (code, out, err) = apply_with(None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("cannot push {image}:latest: "))
            && out.contains("no basic auth credentials"),
        "{out}{err}"
    );
    let manifest = format!("/v2/{name}/manifests/latest");
    assert_eq!(registry.get(&manifest, Some((user, &password))), Some(404));

    // With them, from kcideploy's own environment: pushed, and the manifest is there.
    let (code, out, err) = apply_with(Some((user, &password)));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        registry.get(&manifest, Some((user, &password))),
        Some(200),
        "{out}"
    );
    assert_eq!(registry.get(&manifest, None), Some(401));

    // The password is nowhere: not in the output, the state, or the run logs.
    assert!(!out.contains(&password) && !err.contains(&password));
    let kept = all_text(&fx.path().join(".kcideploy"));
    assert!(kept.contains("push "), "the run logs are there: {kept}");
    assert!(!kept.contains(&password), "the password is in .kcideploy/");

    // From a credential helper named in the Docker config (`credHelpers`), as `docker login`
    // with a helper leaves it: `docker-credential-kcitest get` prints the secret.
    let helper_dir = tempfile::tempdir().expect("tempdir");
    let helper = helper_dir.path().join("docker-credential-kcitest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$server\"\n"
        ),
    )
    .expect("helper");
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::write(
        docker_config.path().join("config.json"),
        format!(
            "{{\"credHelpers\": {{\"{}\": \"kcitest\"}}}}",
            registry.addr
        ),
    )
    .expect("config");
    let text = std::fs::read_to_string(&plan).expect("plan");
    std::fs::write(&plan, text.replace("tags: [latest]", "tags: [helper]")).expect("plan");
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan)
            .env("DOCKER_CONFIG", docker_config.path())
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    helper_dir.path().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env_remove("KCIDEPLOY_REGISTRY_USERNAME")
            .env_remove("KCIDEPLOY_REGISTRY_PASSWORD"),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        registry.get(
            &format!("/v2/{name}/manifests/helper"),
            Some((user, &password))
        ),
        Some(200),
        "pushed with the helper's credentials: {out}"
    );
    assert!(!out.contains(&password) && !err.contains(&password));
    assert!(!all_text(&fx.path().join(".kcideploy")).contains(&password));
    for tag in ["latest", "helper"] {
        docker(&["image", "rm", &format!("{image}:{tag}")]);
    }
    docker(&["image", "rm", &format!("{image}:{}", content_tag(&fx))]);
}
