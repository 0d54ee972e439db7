//! What the Docker step kinds share (docker_build.rs, docker_push.rs, container_restart.rs,
//! docker_prune.rs talk to the daemon's API through bollard): the step's daemon (local, or
//! another machine's over TCP with TLS or over ssh) and connecting to it, substitutions,
//! registry credentials, time limits naming the daemon; and the drift checks behind
//! `plan -refresh`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use futures_util::StreamExt;

use super::{StepCtx, StepError};
use crate::apply::process::{Cancel, cancelled};
use crate::config::Config;
use crate::config::docker::{DockerScheme, scheme};

/// Label on every image kcideploy builds.
pub const LABEL: &str = "org.kernelci.kcideploy";
/// The image repository, as a label (prune groups by it).
pub const LABEL_IMAGE: &str = "org.kernelci.kcideploy.image";
/// The content digest, as a label.
pub const LABEL_CONTENT: &str = "org.kernelci.kcideploy.content";

/// bollard's time limit of one request (the steps bound the whole work themselves).
const REQUEST_TIMEOUT: u64 = 120;

/// The Docker daemon one step talks to: the address the plan gives it (the step's
/// `docker_host`, else `docker.host`) or the environment's (`DOCKER_HOST`, else the local
/// socket), and the certificates of a `tcp://` daemon reached over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// The address (`unix:///...`, `tcp://host:port`, `ssh://user@host`).
    pub address: String,
    /// Whether the plan file names it (else it is the environment's).
    planned: bool,
    /// `ca.pem`, `cert.pem` and `key.pem`: `docker.cert_path`, else, with
    /// `DOCKER_TLS_VERIFY` set, `DOCKER_CERT_PATH` (default `~/.docker`), as the docker CLI.
    cert_path: Option<PathBuf>,
}

impl Daemon {
    /// Step `step`'s daemon.
    pub fn of(config: &Config, step: &str) -> Daemon {
        let planned = config.docker_host(step);
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let cert_path = planned.cert_path.or_else(|| {
            env("DOCKER_TLS_VERIFY")?;
            env("DOCKER_CERT_PATH")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".docker")))
        });
        Daemon {
            planned: planned.host.is_some(),
            address: planned
                .host
                .or_else(|| env("DOCKER_HOST"))
                .unwrap_or_else(|| "unix:///var/run/docker.sock".into()),
            cert_path,
        }
    }

    /// The certificates, when the daemon is reached over TLS.
    fn tls(&self) -> Option<&Path> {
        let tcp = scheme(&self.address) == Ok(DockerScheme::Tcp);
        self.cert_path.as_deref().filter(|_| tcp)
    }

    /// The daemon as messages name it: its address, and TLS.
    pub fn name(&self) -> String {
        let tls = if self.tls().is_some() { " (TLS)" } else { "" };
        format!("{}{tls}", self.address)
    }

    /// What a docker CLI (compose) needs in its environment to talk to this daemon, when
    /// the plan names it (otherwise the inherited `DOCKER_*` variables already do).
    pub fn cli_env(&self) -> Vec<(String, String)> {
        if !self.planned {
            return Vec::new();
        }
        let mut env = vec![("DOCKER_HOST".to_string(), self.address.clone())];
        if let Some(certs) = self.tls() {
            env.push(("DOCKER_CERT_PATH".into(), certs.display().to_string()));
            env.push(("DOCKER_TLS_VERIFY".into(), "1".into()));
        }
        env
    }

    /// Connect and agree on an API version within `limit` (`timeouts.connect`); the error
    /// names the daemon and the cause.
    pub async fn connect(&self, limit: Duration) -> Result<Docker, String> {
        let fail =
            |cause: String| format!("cannot reach the Docker daemon at {}: {cause}", self.name());
        let (docker, ssh) = self.client(limit).map_err(fail)?;
        // What ssh said (`Permission denied`, `Host key verification failed`) says why.
        let said = || {
            let last = ssh.as_ref().and_then(|s| s.last());
            last.map(|s| format!(" (ssh: {s})")).unwrap_or_default()
        };
        match tokio::time::timeout(limit, docker.negotiate_version()).await {
            Ok(Ok(docker)) => Ok(docker),
            Ok(Err(e)) => Err(fail(format!(
                "{}{}",
                crate::support::text::error_chain(&e),
                said()
            ))),
            Err(_) => Err(fail(format!(
                "no answer within {} (timeouts.connect){}",
                crate::support::text::age(limit.as_secs() as i64),
                said()
            ))),
        }
    }

    /// A client for the address (nothing is sent yet), and what its ssh says if it has one.
    fn client(&self, limit: Duration) -> Result<(Docker, Option<super::docker_ssh::Said>), String> {
        let address = &self.address;
        let version = bollard::API_DEFAULT_VERSION;
        let made = match scheme(address)? {
            DockerScheme::Unix => Docker::connect_with_unix(address, REQUEST_TIMEOUT, version),
            DockerScheme::Tcp => match self.tls() {
                Some(certs) => {
                    let [ca, cert, key] = ["ca.pem", "cert.pem", "key.pem"].map(|f| certs.join(f));
                    if let Some(missing) = [&ca, &cert, &key].into_iter().find(|p| !p.is_file()) {
                        return Err(format!(
                            "TLS: no {} (docker.cert_path or DOCKER_CERT_PATH names the directory of ca.pem, cert.pem and key.pem)",
                            missing.display()
                        ));
                    }
                    let _ = rustls::crypto::ring::default_provider().install_default();
                    Docker::connect_with_ssl(address, &key, &cert, &ca, REQUEST_TIMEOUT, version)
                }
                None => Docker::connect_with_http(address, REQUEST_TIMEOUT, version),
            },
            DockerScheme::Ssh => {
                let (docker, said) =
                    super::docker_ssh::client(address, limit.as_secs(), REQUEST_TIMEOUT)?;
                return Ok((docker, Some(said)));
            }
        };
        made.map(|d| (d, None))
            .map_err(|e| crate::support::text::error_chain(&e))
    }
}

/// Connections to the daemons of several steps, each made on its first use (`-refresh`,
/// `state adopt`).
#[derive(Default)]
pub struct Daemons(Vec<(Daemon, Result<Docker, String>)>);

impl Daemons {
    /// Step `step`'s daemon, connected (or why it cannot be).
    pub async fn of_step(&mut self, config: &Config, step: &str) -> Result<&Docker, String> {
        let daemon = Daemon::of(config, step);
        let i = match self.0.iter().position(|(d, _)| *d == daemon) {
            Some(i) => i,
            None => {
                let connected = daemon.connect(config.file.timeouts.connect.0).await;
                self.0.push((daemon, connected));
                self.0.len() - 1
            }
        };
        self.0[i].1.as_ref().map_err(Clone::clone)
    }
}

/// Connect to step `ctx`'s `daemon` within `timeouts.connect`, saying which it is in the log.
pub(super) async fn connect(ctx: &StepCtx<'_>, daemon: &Daemon) -> Result<Docker, StepError> {
    use std::io::Write;
    let mut log = ctx.log;
    let _ = writeln!(log, "Docker daemon: {}", daemon.name());
    let limit = ctx.run.config.file.timeouts.connect.0;
    daemon.connect(limit).await.map_err(StepError::Failed)
}

pub(super) fn failed(e: impl std::fmt::Display) -> StepError {
    StepError::Failed(e.to_string())
}

/// Replace `${repos.<name>.sha}`, `${repos.<name>.base}`, `${cycle}` and `${plan}`, as the
/// plan resolved them (planner::params).
pub fn substitute(text: &str, ctx: &StepCtx<'_>) -> Result<String, String> {
    let plan = &ctx.run.plan;
    crate::planner::params::Vars {
        repos: &plan.repos,
        cycle: plan.cycle,
        plan: &plan.name,
    }
    .substitute(text)
}

/// The next item of a daemon's progress stream, or `Cancelled` when the run is stopped.
pub(super) async fn next_or_cancel<S: futures_util::Stream + Unpin>(
    stream: &mut S,
    cancel: &mut tokio::sync::watch::Receiver<Cancel>,
) -> Result<Option<S::Item>, StepError> {
    tokio::select! {
        item = stream.next() => Ok(item),
        _ = cancelled(cancel, Cancel::Graceful) => Err(StepError::Cancelled),
    }
}

/// The registry host of an image reference (`127.0.0.1:5000/x/y` → `127.0.0.1:5000`).
pub(super) fn registry_of(image: &str) -> Option<&str> {
    let (first, _) = image.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// Registry credentials: `KCIDEPLOY_REGISTRY_USERNAME` / `_PASSWORD`, else what the Docker
/// config (`$DOCKER_CONFIG` or `~/.docker/config.json`) gives for the image's registry: its
/// `auths` entry, or the credential helper of `credHelpers` / `credsStore`
/// (`docker-credential-<name> get`), as the docker CLI does. Never logged.
pub fn credentials(image: &str) -> Option<DockerCredentials> {
    let registry = registry_of(image).unwrap_or("https://index.docker.io/v1/");
    if let (Ok(username), Ok(password)) = (
        std::env::var("KCIDEPLOY_REGISTRY_USERNAME"),
        std::env::var("KCIDEPLOY_REGISTRY_PASSWORD"),
    ) {
        return Some(DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: Some(registry.to_string()),
            ..Default::default()
        });
    }
    match docker_credential::get_credential(registry) {
        Ok(docker_credential::DockerCredential::UsernamePassword(username, password)) => {
            Some(DockerCredentials {
                username: Some(username),
                password: Some(password),
                serveraddress: Some(registry.to_string()),
                ..Default::default()
            })
        }
        Ok(docker_credential::DockerCredential::IdentityToken(token)) => Some(DockerCredentials {
            identitytoken: Some(token),
            serveraddress: Some(registry.to_string()),
            ..Default::default()
        }),
        // No config, no entry for this registry, or a helper that failed: push anonymously
        // (the registry's refusal names the cause). The error text is not logged: a helper
        // may echo what it read.
        Err(_) => None,
    }
}

/// [`credentials`], given up after `limit` (`timeouts.registry`): a credential helper may ask
/// a cloud service, and one that hangs does not hold the step.
pub async fn credentials_within(
    image: &str,
    limit: Duration,
) -> Result<Option<DockerCredentials>, String> {
    let owned = image.to_string();
    let look_up = tokio::task::spawn_blocking(move || credentials(&owned));
    match tokio::time::timeout(limit, look_up).await {
        Ok(found) => Ok(found.unwrap_or(None)),
        Err(_) => Err(format!(
            "the Docker credentials of {}: timed out: no answer within {} (timeouts.registry)",
            registry_of(image).unwrap_or("docker.io"),
            crate::support::text::age(limit.as_secs() as i64)
        )),
    }
}

/// Drift of one step's recorded outputs: why it must run again, or `None`.
pub async fn drift(docker: &Docker, outputs: &serde_json::Value) -> Option<String> {
    if let (Some(image), Some(tag)) = (outputs["image"].as_str(), outputs["content_tag"].as_str()) {
        let reference = format!("{image}:{tag}");
        let Ok(found) = docker.inspect_image(&reference).await else {
            return Some(format!("image {reference} no longer exists"));
        };
        for moving in outputs["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
        {
            let moving_ref = format!("{image}:{moving}");
            match docker.inspect_image(&moving_ref).await {
                Ok(i) if i.id == found.id => {}
                Ok(_) => return Some(format!("{moving_ref} points at another image")),
                Err(_) => return Some(format!("{moving_ref} no longer exists")),
            }
        }
    } else if let (Some(image), Some(id)) = (outputs["image"].as_str(), outputs["id"].as_str()) {
        // Adopted (`state adopt`): no content tag, the moving tags name the image id.
        for moving in outputs["tags"].as_array().into_iter().flatten() {
            let moving_ref = format!("{image}:{}", moving.as_str().unwrap_or_default());
            match docker.inspect_image(&moving_ref).await {
                Ok(i) if i.id.as_deref() == Some(id) => {}
                Ok(_) => return Some(format!("{moving_ref} points at another image")),
                Err(_) => return Some(format!("{moving_ref} no longer exists")),
            }
        }
    }
    for container in outputs["containers"].as_array().into_iter().flatten() {
        let name = container["name"].as_str().unwrap_or_default();
        let Ok(info) = docker.inspect_container(name, None).await else {
            return Some(format!("container {name} no longer exists"));
        };
        if !info.state.and_then(|s| s.running).unwrap_or(false) {
            return Some(format!("container {name} is not running"));
        }
        if let Some(recorded) = container["image"].as_str()
            && info.image.as_deref() != Some(recorded)
        {
            return Some(format!(
                "container {name} runs image {} instead of {}",
                info.image.as_deref().map(short_id).unwrap_or("?"),
                short_id(recorded)
            ));
        }
    }
    None
}

pub(super) fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.get(..12).unwrap_or(id)
}

/// A push's time limit when the step sets none.
pub(super) const PUSH_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A prune's time limit when the step sets none.
pub(super) const PRUNE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Run `work` (`what`, talking to `daemon`) within the attempt's limit; past it, fail
/// naming the daemon and the last thing it said.
pub(super) async fn within_limit<T>(
    what: &str,
    daemon: &Daemon,
    limit: Duration,
    log_path: std::path::PathBuf,
    work: impl std::future::Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    match tokio::time::timeout(limit, work).await {
        Ok(done) => done,
        Err(_) => {
            let last = crate::apply::process::tail(&log_path, 1);
            let cause = if last.trim().is_empty() || last.starts_with("--- ") {
                "no answer from the daemon".to_string()
            } else {
                format!("last from the daemon: {}", last.trim())
            };
            Err(failed(format!(
                "{what} timed out after {} on the Docker daemon at {}: {cause}",
                crate::support::text::age(limit.as_secs() as i64),
                daemon.name()
            )))
        }
    }
}
