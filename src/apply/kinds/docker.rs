//! What the Docker step kinds share (docker_build.rs, docker_push.rs, container_restart.rs,
//! docker_prune.rs talk to the daemon's API through bollard): connecting, substitutions,
//! registry credentials, time limits naming the daemon; and the drift checks behind
//! `plan -refresh`.

use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use futures_util::StreamExt;

use super::{StepCtx, StepError};
use crate::apply::process::{Cancel, cancelled};

/// Label on every image kcideploy builds.
pub const LABEL: &str = "org.kernelci.kcideploy";
/// The image repository, as a label (prune groups by it).
pub const LABEL_IMAGE: &str = "org.kernelci.kcideploy.image";
/// The content digest, as a label.
pub const LABEL_CONTENT: &str = "org.kernelci.kcideploy.content";

/// The daemon's address, as `DOCKER_HOST` names it (or the local socket).
pub fn daemon_address() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// Connect to the daemon named by `DOCKER_HOST` (or the local socket), agreeing on an API version.
pub async fn connect() -> Result<Docker, String> {
    let where_ = daemon_address();
    let docker = Docker::connect_with_defaults()
        .map_err(|e| format!("cannot reach the Docker daemon at {where_}: {e}"))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| format!("cannot reach the Docker daemon at {where_}: {e}"))
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

/// Run `work` (`what`, talking to the daemon) within the attempt's limit; past it, fail
/// naming the daemon and the last thing it said.
pub(super) async fn within_limit<T>(
    what: &str,
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
                daemon_address()
            )))
        }
    }
}
