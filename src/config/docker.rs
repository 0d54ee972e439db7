//! `docker:` and a step's `docker_host`: which Docker daemon a Docker step talks to (a
//! build host, a staging VM), checked when the plan file loads.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::errors::Source;
use super::{Config, SemanticError, SpannedString, StepKind, quote};

/// The Docker daemon of the Docker steps.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// The daemon of every `docker_build`, `docker_push`, `container_restart`,
    /// `docker_prune` and `compose` step (a step's `docker_host` overrides it):
    /// `unix:///path/docker.sock`, `tcp://host:port` (TLS with `cert_path`) or
    /// `ssh://user@host[:port]` (the `ssh` client runs `docker system dial-stdio` there).
    /// Unset: `DOCKER_HOST` of kcideploy's environment, else `unix:///var/run/docker.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub host: Option<SpannedString>,
    /// A directory holding `ca.pem`, `cert.pem` and `key.pem` (as `DOCKER_CERT_PATH`),
    /// absolute or relative to the plan file: `tcp://` daemons are then reached over TLS,
    /// their certificate checked (against `ca.pem` and the system's roots), this client
    /// showing `cert.pem`. Unset:
    /// as the docker CLI, TLS when `DOCKER_TLS_VERIFY` is set, with the certificates of
    /// `DOCKER_CERT_PATH` (default `~/.docker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_path: Option<String>,
}

/// How a daemon address is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerScheme {
    /// `unix:///path`: a local socket.
    Unix,
    /// `tcp://host:port`: HTTP, or HTTPS with certificates.
    Tcp,
    /// `ssh://user@host[:port]`: `docker system dial-stdio` on that host, through `ssh`.
    Ssh,
}

/// Which daemon one step talks to, as the plan file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerHost {
    /// The step's `docker_host`, else `docker.host`; `None`: the environment's daemon.
    pub host: Option<String>,
    /// `docker.cert_path`, resolved against the plan file's directory.
    pub cert_path: Option<PathBuf>,
}

impl DockerHost {
    /// What the plan shows of it (`None` when the plan names no daemon).
    pub fn shown(&self) -> Option<String> {
        let host = self.host.as_ref()?;
        Some(match (&self.cert_path, scheme(host)) {
            (Some(certs), Ok(DockerScheme::Tcp)) => {
                format!("{host} (TLS, certificates in {})", certs.display())
            }
            _ => host.clone(),
        })
    }
}

/// The step kinds that talk to a Docker daemon (`docker_host` is theirs).
pub fn uses_docker(kind: StepKind) -> bool {
    matches!(
        kind,
        StepKind::DockerBuild
            | StepKind::DockerPush
            | StepKind::ContainerRestart
            | StepKind::DockerPrune
            | StepKind::Compose
    )
}

/// What `DOCKER_HOST` may hold: its scheme, or why it is not an address kcideploy can use.
pub fn scheme(address: &str) -> Result<DockerScheme, String> {
    let help = "write unix:///path/to/docker.sock, tcp://host:port or ssh://user@host";
    let Some((scheme, rest)) = address.split_once("://") else {
        return Err(format!(
            "{} is not a Docker daemon address: {help}",
            quote(address)
        ));
    };
    let bad = |why: &str| Err(format!("{}: {why}: {help}", quote(address)));
    match scheme {
        "unix" if rest.starts_with('/') && rest.len() > 1 => Ok(DockerScheme::Unix),
        "unix" => bad("the socket's path must be absolute"),
        "tcp" => match rest.trim_end_matches('/').rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.contains('/') => {
                match port.parse::<u16>() {
                    Ok(p) if p > 0 => Ok(DockerScheme::Tcp),
                    _ => bad("the port must be a number from 1 to 65535"),
                }
            }
            _ => bad("a tcp address needs a host and a port"),
        },
        "ssh" => {
            let authority = rest.trim_end_matches('/');
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if host.is_empty() || host.starts_with(':') || authority.contains('/') {
                bad("an ssh address is user@host or user@host:port, without a path")
            } else {
                Ok(DockerScheme::Ssh)
            }
        }
        "npipe" => bad("named pipes are Windows's; kcideploy runs on Linux"),
        "http" | "https" => bad("Docker addresses use tcp://, with `docker.cert_path` for TLS"),
        _ => bad("unknown scheme"),
    }
}

impl Config {
    /// The daemon step `name` talks to, as the plan file says.
    pub fn docker_host(&self, name: &str) -> DockerHost {
        let f = &self.file;
        let step = f.steps.get(name).and_then(|s| s.docker_host.as_ref());
        DockerHost {
            host: step.or(f.docker.host.as_ref()).map(|h| h.value.clone()),
            cert_path: f.docker.cert_path.as_ref().map(|p| self.dir.join(p)),
        }
    }
}

/// The plan's `docker.host` and each step's `docker_host` are addresses, the latter only on
/// Docker steps; `docker.cert_path` is not empty.
pub(super) fn errors(config: &Config, src: &Source) -> Vec<SemanticError> {
    let f = &config.file;
    let mut out = Vec::new();
    let address = |at: &SpannedString, whose: String| {
        scheme(&at.value).err().map(|message| {
            src.error_at(
                &at.referenced,
                at.value.len().max(1),
                format!("{whose}: {message}"),
                "not a Docker daemon address",
            )
        })
    };
    if let Some(host) = &f.docker.host {
        out.extend(address(host, "docker.host".into()));
    }
    for (name, step) in &f.steps {
        let Some(host) = &step.docker_host else {
            continue;
        };
        out.extend(address(host, format!("step {} docker_host", quote(name))));
        if !uses_docker(step.kind.value) {
            let e = src
                .error_at(
                    &host.referenced,
                    host.value.len().max(1),
                    format!(
                        "step {} ({}) sets docker_host, but talks to no Docker daemon",
                        quote(name),
                        step.kind.value
                    ),
                    "not a Docker step",
                )
                .with_help(
                    "docker_host is for docker_build, docker_push, container_restart, docker_prune and compose steps; a command step is given DOCKER_HOST by with.env",
                );
            out.push(e);
        }
    }
    if f.docker
        .cert_path
        .as_ref()
        .is_some_and(|p| p.trim().is_empty())
    {
        out.push(src.error_with_labels(
            0,
            0,
            "docker.cert_path is empty: name the directory of ca.pem, cert.pem and key.pem".into(),
            Vec::new(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load(rest: &str) -> Result<Config, Vec<String>> {
        let text = format!("version: 1\nname: t\nrepos:\n  core: {{ url: /tmp/core.git }}\n{rest}");
        Config::from_str(Path::new("/plans/plan.yaml"), text)
            .map_err(|e| e.errors().iter().map(|e| e.message.clone()).collect())
    }

    #[test]
    fn the_step_overrides_the_plan_and_both_are_checked_where_written() {
        let config = load(
            "docker: { host: \"tcp://build:2376\", cert_path: certs }\nsteps:\n  a: { kind: docker_prune }\n  b: { kind: docker_prune, docker_host: \"unix:///b.sock\" }\n  c: { kind: command, with: { run: [\"true\"] } }\n",
        )
        .expect("loads");
        let a = config.docker_host("a");
        assert_eq!(a.host.as_deref(), Some("tcp://build:2376"));
        assert_eq!(a.cert_path.as_deref(), Some(Path::new("/plans/certs")));
        assert_eq!(
            config.docker_host("b").host.as_deref(),
            Some("unix:///b.sock")
        );
        let none = load("steps:\n  a: { kind: docker_prune }\n").expect("loads");
        assert_eq!(none.docker_host("a").host, None);
        let each = load(
            "steps:\n  p:\n    kind: docker_prune\n    for_each: [b1, b2]\n    docker_host: \"ssh://${each.value}\"\n",
        )
        .expect("loads");
        assert_eq!(each.docker_host("p[b2]").host.as_deref(), Some("ssh://b2"));

        let e = load("docker:\n  host: build:2376\n").expect_err("invalid");
        assert!(
            e[0].starts_with(
                "/plans/plan.yaml:6:9: docker.host: `build:2376` is not a Docker daemon address"
            ),
            "{e:?}"
        );
        let e = load(
            "steps:\n  c:\n    kind: command\n    docker_host: \"ssh://me@build\"\n    with: { run: [\"true\"] }\n",
        )
        .expect_err("invalid");
        assert!(
            e[0].starts_with(
                "/plans/plan.yaml:8:18: step `c` (command) sets docker_host, but talks to no Docker daemon"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn addresses_kcideploy_can_use() {
        for ok in [
            "unix:///var/run/docker.sock",
            "tcp://build.example.org:2376",
            "tcp://127.0.0.1:2375/",
            "tcp://[::1]:2375",
            "ssh://deploy@build.example.org",
            "ssh://deploy@build.example.org:2222",
            "ssh://build",
        ] {
            assert!(scheme(ok).is_ok(), "{ok}: {:?}", scheme(ok));
        }
        for (bad, why) in [
            ("/var/run/docker.sock", "not a Docker daemon address"),
            ("unix://docker.sock", "absolute"),
            ("tcp://build.example.org", "host and a port"),
            ("tcp://build:http", "port must be a number"),
            ("tcp://:2375", "host and a port"),
            ("ssh://deploy@", "user@host"),
            ("ssh://deploy@build/var/run", "without a path"),
            ("https://build:2376", "tcp://"),
            ("npipe:////./pipe/docker_engine", "Windows"),
            ("fd://", "unknown scheme"),
        ] {
            let e = scheme(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn shown_names_tls_only_for_tcp() {
        let tls = DockerHost {
            host: Some("tcp://b:2376".into()),
            cert_path: Some("/etc/certs".into()),
        };
        assert_eq!(
            tls.shown().as_deref(),
            Some("tcp://b:2376 (TLS, certificates in /etc/certs)")
        );
        let unix = DockerHost {
            host: Some("unix:///d.sock".into()),
            ..tls.clone()
        };
        assert_eq!(unix.shown().as_deref(), Some("unix:///d.sock"));
        let none = DockerHost { host: None, ..tls };
        assert_eq!(none.shown(), None);
    }
}
