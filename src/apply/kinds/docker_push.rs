//! `docker_push`: push tags of an image.

use std::io::Write;
use std::time::Duration;

use bollard::query_parameters::PushImageOptions;

use serde_json::json;

use super::docker::{
    Daemon, PUSH_TIMEOUT, connect, credentials_within, failed, next_or_cancel, short_id,
    substitute, within_limit,
};
use super::{Attempt, Kind, StepCtx, StepError};
use crate::config::kinds::DockerPushWith;

/// Push tags of an image; each tag with the manifest digest the registry stored, for state
/// and `-refresh`.
pub async fn push(
    ctx: &mut StepCtx<'_>,
    daemon: &Daemon,
    with: &DockerPushWith,
) -> Result<serde_json::Value, StepError> {
    let docker = connect(ctx, daemon).await?;
    let mut log = ctx.log;
    let limit = ctx.run.config.file.timeouts.registry.0;
    let auth = credentials_within(&with.image, limit)
        .await
        .map_err(StepError::Failed)?;
    let mut pushed = Vec::new();
    for tag in &with.tags {
        let tag = substitute(tag, ctx).map_err(StepError::Failed)?;
        let _ = writeln!(log, "push {}:{tag}", with.image);
        let mut stream = docker.push_image(
            &with.image,
            Some(PushImageOptions {
                tag: Some(tag.clone()),
                ..Default::default()
            }),
            auth.clone(),
        );
        let mut digest = None;
        loop {
            let Some(item) = next_or_cancel(&mut stream, &mut ctx.cancel).await? else {
                break;
            };
            match item {
                Ok(info) => {
                    if let Some(status) = info.status {
                        let _ = writeln!(log, "{status}");
                        digest = digest.or_else(|| digest_of(&status));
                    }
                    if let Some(detail) = info.error_detail {
                        return Err(failed(format!(
                            "cannot push {}:{tag}: {}",
                            with.image,
                            detail.message.unwrap_or_default()
                        )));
                    }
                }
                Err(e) => return Err(failed(format!("cannot push {}:{tag}: {e}", with.image))),
            }
        }
        pushed.push(json!({ "tag": tag, "digest": digest }));
    }
    Ok(json!({ "image": with.image, "pushed": pushed }))
}

/// The manifest digest in the daemon's last push status (`<tag>: digest: sha256:… size: N`).
fn digest_of(status: &str) -> Option<String> {
    let (_, rest) = status.split_once("digest: ")?;
    let digest = rest.split_whitespace().next()?;
    digest.starts_with("sha256:").then(|| digest.to_string())
}

/// Drift of a push recorded as `outputs`: a tag no longer in the registry, or naming another
/// manifest than the one pushed. An unreachable registry is an error, not drift.
pub async fn drift(
    docker: &bollard::Docker,
    outputs: &serde_json::Value,
    timeouts: &crate::config::Timeouts,
) -> Result<Option<String>, String> {
    let Some(image) = outputs["image"].as_str() else {
        return Ok(None);
    };
    let limit = timeouts.registry.0;
    let auth = credentials_within(image, limit).await?;
    for pushed in outputs["pushed"].as_array().into_iter().flatten() {
        let Some(tag) = pushed["tag"].as_str() else {
            continue;
        };
        let reference = format!("{image}:{tag}");
        let ask = docker.inspect_registry_image(&reference, auth.clone());
        let found = match tokio::time::timeout(limit, ask).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) if missing_manifest(&e) => {
                return Ok(Some(format!("{reference} is no longer in the registry")));
            }
            Ok(Err(e)) => {
                return Err(format!(
                    "cannot look up {reference} in its registry: {}",
                    crate::support::text::error_chain(&e)
                ));
            }
            Err(_) => {
                return Err(format!(
                    "cannot look up {reference} in its registry: timed out: no answer within {} (timeouts.registry)",
                    crate::support::text::age(limit.as_secs() as i64)
                ));
            }
        };
        if let Some(recorded) = pushed["digest"].as_str()
            && found.descriptor.digest.as_deref() != Some(recorded)
        {
            return Ok(Some(format!(
                "{reference} names manifest {} in the registry instead of the pushed {}",
                found
                    .descriptor
                    .digest
                    .as_deref()
                    .map(short_id)
                    .unwrap_or("?"),
                short_id(recorded)
            )));
        }
    }
    Ok(None)
}

/// Whether the daemon said the registry has no such manifest.
fn missing_manifest(e: &bollard::errors::Error) -> bool {
    let text = e.to_string();
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    ) || text.contains("manifest unknown")
        || text.contains("not found")
}

/// `docker_push`.
pub struct Push(pub DockerPushWith);

impl Kind for Push {
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a> {
        let what = format!("docker push of {}", self.0.image);
        Box::pin(async move {
            let daemon = Daemon::of(&ctx.run.config, ctx.name);
            let (limit, log) = (ctx.limit, ctx.log_path.clone());
            within_limit(&what, &daemon, limit, log, push(ctx, &daemon, &self.0))
                .await
                .map(Some)
        })
    }

    fn default_timeout(&self) -> Duration {
        PUSH_TIMEOUT
    }

    fn watches_limit(&self) -> bool {
        true
    }
}
