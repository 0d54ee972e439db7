//! Docker steps on another daemon (a build host): the test starts a second dockerd on its
//! own socket, data-root and exec-root (as scripts/test.sh starts the default one) and
//! stops it at the end, whatever happens. A `docker_build` step with `docker_host` builds
//! there and not on the default daemon (`DOCKER_HOST`), `-refresh` looks for the image
//! there, and a `compose` step with `docker_host` runs its services there. A daemon that
//! cannot be reached fails the step naming the address and the cause, within
//! `timeouts.connect`.

mod common;
#[path = "common/docker.rs"]
mod dockertest;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use dockertest::*;

const TESTS: &[(&str, Needs, fn())] = &[
    (
        "docker_steps_with_docker_host_run_on_that_daemon_not_the_default",
        Needs::Tools(&["dockerd", "docker-compose"]),
        docker_steps_with_docker_host_run_on_that_daemon_not_the_default,
    ),
    (
        "a_tcp_docker_host_with_cert_path_is_reached_over_verified_tls",
        Needs::Tools(&["dockerd", "openssl"]),
        a_tcp_docker_host_with_cert_path_is_reached_over_verified_tls,
    ),
    (
        "an_unreachable_docker_host_fails_naming_it_and_the_cause",
        Needs::Docker,
        an_unreachable_docker_host_fails_naming_it_and_the_cause,
    ),
];

fn main() -> std::process::ExitCode {
    run_trials(TESTS)
}

/// A second Docker daemon in a temporary directory, stopped (SIGTERM, then SIGKILL) and
/// removed when dropped.
struct SecondDaemon {
    child: Child,
    /// `unix:///tmp/.../d.sock`.
    host: String,
    dir: tempfile::TempDir,
}

/// Where a daemon also listens over TLS: `tcp://127.0.0.1:<port>` and the directory of the
/// daemon's `ca.pem`, `server-cert.pem` and `server-key.pem`.
struct Tls<'a> {
    address: &'a str,
    certs: &'a std::path::Path,
}

impl SecondDaemon {
    fn start(tls: Option<Tls<'_>>) -> SecondDaemon {
        // Under /tmp: a socket's path must stay short.
        let dir = tempfile::Builder::new()
            .prefix("kcd-dh")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let host = format!("unix://{}", path("d.sock"));
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("log");
        let child = Command::new("dockerd")
            .args(["--storage-driver=vfs", "--iptables=false", "--bridge=none"])
            .args(["--data-root", &path("data"), "--exec-root", &path("exec")])
            .args(["--pidfile", &path("dockerd.pid"), "-H", &host])
            .args(tls.iter().flat_map(|t| {
                let file = |f: &str| t.certs.join(f).display().to_string();
                [
                    "-H".to_string(),
                    t.address.to_string(),
                    "--tlsverify".into(),
                    format!("--tlscacert={}", file("ca.pem")),
                    format!("--tlscert={}", file("server-cert.pem")),
                    format!("--tlskey={}", file("server-key.pem")),
                ]
            }))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        let daemon = SecondDaemon { child, host, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !daemon.docker_ok(&["info"]) {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(daemon.dir.path().join("dockerd.log"));
                panic!("the second dockerd did not answer within 60s:\n{log:?}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        daemon
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .args(["-H", &self.host])
            .args(args)
            .env_remove("DOCKER_CONTEXT")
            .output()
            .expect("docker CLI")
    }

    fn docker_ok(&self, args: &[&str]) -> bool {
        self.cli(args).status.success()
    }

    fn docker(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "docker -H {} {args:?}: {}",
            self.host,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for SecondDaemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The build step of `build_fixture`'s plan, on `host`.
fn on_host(plan: &std::path::Path, host: &str) {
    let text = std::fs::read_to_string(plan).expect("plan");
    let text = text.replacen(
        "    kind: docker_build\n",
        &format!("    kind: docker_build\n    docker_host: {host}\n"),
        1,
    );
    std::fs::write(plan, text).expect("write");
}

fn docker_steps_with_docker_host_run_on_that_daemon_not_the_default() {
    let second = SecondDaemon::start(None);
    let image = unique("kcdtest/elsewhere");
    let latest = format!("{image}:latest");
    let (fx, remote, plan) = build_fixture(&image, "");
    on_host(&plan, &second.host);

    // The plan says where the step runs.
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("\n      docker_host: {}\n", second.host)),
        "the plan shows the daemon:\n{out}"
    );

    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        second.docker_ok(&["image", "inspect", &latest]),
        "built on the second daemon"
    );
    assert!(
        !docker_ok(&["image", "inspect", &latest]),
        "not built on the default daemon ({})",
        std::env::var("DOCKER_HOST").unwrap_or_default()
    );
    let log: String = std::fs::read_dir(fx.path().join(".kcideploy/runs/t"))
        .expect("runs")
        .flatten()
        .filter_map(|run| std::fs::read_to_string(run.path().join("build.log")).ok())
        .collect();
    assert!(
        log.contains(&format!("Docker daemon: {}", second.host)),
        "{log}"
    );

    // -refresh looks for the image on the daemon that built it.
    let (_, out, err) = refreshed_plan(&plan);
    assert!(
        !out.contains("drift"),
        "no drift on the second daemon:\n{out}{err}"
    );
    second.docker(&["image", "rm", &latest]);
    let (_, out, err) = refreshed_plan(&plan);
    assert!(
        out.contains(&format!("drift: {latest} no longer exists")),
        "a tag removed there is drift:\n{out}{err}"
    );

    // compose runs the services on the step's daemon.
    let project = unique("kcdhost").replace('-', "");
    let compose = format!(
        "version: \"2.4\"\nservices:\n  app:\n    image: {latest}\n    network_mode: none\n    command: [\"/bin/busybox\", \"sleep\", \"1000\"]\n"
    );
    remote.branch(
        "pr/1",
        ALICE,
        &[("docker-compose.yaml", Some(compose.as_str()))],
    );
    let text = std::fs::read_to_string(&plan).expect("plan")
        + &format!(
            "  up: {{ kind: compose, always: true, after: [build], docker_host: \"{}\", with: {{ action: up, cli: v1, project: {project}, repo: pipe, services: [app] }} }}\n",
            second.host
        );
    std::fs::write(&plan, text).expect("write");
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let label = format!("label=com.docker.compose.project={project}");
    let there = second.docker(&["ps", "--filter", &label, "--format", "{{.Names}}"]);
    assert!(
        !there.is_empty(),
        "compose started the service on the second daemon"
    );
    let here = docker(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"]);
    assert!(here.is_empty(), "nothing on the default daemon: {here}");
    let text = std::fs::read_to_string(&plan)
        .expect("plan")
        .replace("action: up", "action: down");
    std::fs::write(&plan, text).expect("write");
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    let there = second.docker(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"]);
    assert!(there.is_empty(), "compose down removed it there: {there}");
}

/// `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) in `dir`, and a certificate and key signed by it for each of `certs`
/// (`(name, extensions)`: `<name>-cert.pem`, `<name>-key.pem`).
fn certificates(dir: &std::path::Path, certs: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=kcd-test-ca",
        ],
    );
    for (name, extensions) in certs {
        let (key, cert) = (format!("{name}-key.pem"), format!("{name}-cert.pem"));
        let (csr, ext) = (format!("{name}.csr"), format!("{name}.ext"));
        std::fs::write(dir.join(&ext), extensions).expect("ext");
        let subject = format!("/CN={name}");
        openssl(
            dir,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                &subject,
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &cert,
                "-extfile",
                &ext,
            ],
        );
    }
}

fn a_tcp_docker_host_with_cert_path_is_reached_over_verified_tls() {
    let certs = tempfile::tempdir().expect("tempdir");
    let daemon_certs = certs.path().join("daemon");
    certificates(
        &daemon_certs,
        &[
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ],
    );
    // What kcideploy is given: ca.pem, cert.pem, key.pem (as DOCKER_CERT_PATH).
    let client = certs.path().join("client");
    std::fs::create_dir_all(&client).expect("mkdir");
    for (from, to) in [
        ("ca.pem", "ca.pem"),
        ("client-cert.pem", "cert.pem"),
        ("client-key.pem", "key.pem"),
    ] {
        std::fs::copy(daemon_certs.join(from), client.join(to)).expect("copy");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let address = format!("tcp://127.0.0.1:{port}");
    let second = SecondDaemon::start(Some(Tls {
        address: &address,
        certs: &daemon_certs,
    }));
    let image = unique("kcdtest/tls");
    let latest = format!("{image}:latest");
    let (_fx, _remote, plan) = build_fixture(&image, "");
    let with_docker = |section: &str| {
        let text = std::fs::read_to_string(&plan).expect("plan");
        let text = text
            .split("\ndocker:")
            .next()
            .unwrap_or_default()
            .to_string();
        std::fs::write(&plan, format!("{text}\ndocker:\n{section}")).expect("write");
    };

    // Plan-wide, with the certificates: built on that daemon over TLS.
    with_docker(&format!(
        "  host: \"{address}\"\n  cert_path: {}\n",
        client.display()
    ));
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    let shown = format!(
        "docker_host: {address} (TLS, certificates in {})",
        client.display()
    );
    assert!(out.contains(&shown), "{shown}\n{out}");
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        second.docker_ok(&["image", "inspect", &latest]),
        "built there"
    );
    assert!(
        !docker_ok(&["image", "inspect", &latest]),
        "not on the default daemon"
    );

    // A CA that did not sign the daemon's certificate: refused, saying why.
    let other = certs.path().join("other");
    certificates(&other, &[]);
    std::fs::copy(other.join("ca.pem"), client.join("ca.pem")).expect("copy");
    let (code, out, err) = output(
        kcideploy()
            .args([
                "apply",
                "-auto-approve",
                "-replace",
                "build",
                "--cycle",
                "partial",
                "-f",
            ])
            .arg(&plan),
    );
    assert_eq!(code, 1, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains(&format!(
            "cannot reach the Docker daemon at {address} (TLS):"
        )),
        "{text}"
    );
    assert!(
        text.contains("invalid peer certificate"),
        "the certificate is checked: {text}"
    );

    // Without certificates, a TLS daemon does not answer plain HTTP.
    with_docker(&format!("  host: \"{address}\"\n"));
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        format!("{out}{err}").contains(&format!("cannot reach the Docker daemon at {address}:")),
        "{out}{err}"
    );
}

fn an_unreachable_docker_host_fails_naming_it_and_the_cause() {
    let image = unique("kcdtest/nowhere");
    let (fx, _remote, plan) = build_fixture(&image, "");
    let missing = fx.path().join("no-such.sock");
    on_host(&plan, &format!("unix://{}", missing.display()));
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 1, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains(&format!(
            "cannot reach the Docker daemon at unix://{}",
            missing.display()
        )),
        "{text}"
    );
    assert!(text.contains("Socket not found"), "the cause: {text}");

    // A daemon that accepts the connection and never answers: given up after
    // timeouts.connect, saying so.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("tcp://{}", silent.local_addr().expect("addr"));
    let text = std::fs::read_to_string(&plan).expect("plan");
    let text = text.replace(&format!("unix://{}", missing.display()), &address)
        + "timeouts: { connect: 2s }\n";
    std::fs::write(&plan, text).expect("write");
    let started = Instant::now();
    let (code, out, err) = apply(&plan);
    assert_eq!(code, 1, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains(&format!(
            "cannot reach the Docker daemon at {address}: no answer within 2s (timeouts.connect)"
        )),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}
