//! `docker_push`: push tags of an image.

use std::io::Write;
use std::time::Duration;

use bollard::query_parameters::PushImageOptions;

use super::docker::{
    PUSH_TIMEOUT, connect, credentials_within, failed, next_or_cancel, substitute, within_limit,
};
use super::{Attempt, Kind, StepCtx, StepError};
use crate::config::kinds::DockerPushWith;

/// Push tags of an image.
pub async fn push(ctx: &mut StepCtx<'_>, with: &DockerPushWith) -> Result<(), StepError> {
    let docker = connect().await.map_err(StepError::Failed)?;
    let mut log = ctx.log;
    let limit = ctx.run.config.file.timeouts.registry.0;
    let auth = credentials_within(&with.image, limit)
        .await
        .map_err(StepError::Failed)?;
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
        loop {
            let Some(item) = next_or_cancel(&mut stream, &mut ctx.cancel).await? else {
                break;
            };
            match item {
                Ok(info) => {
                    if let Some(status) = info.status {
                        let _ = writeln!(log, "{status}");
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
    }
    Ok(())
}

/// `docker_push`.
pub struct Push(pub DockerPushWith);

impl Kind for Push {
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a> {
        let what = format!("docker push of {}", self.0.image);
        Box::pin(async move {
            within_limit(&what, ctx.limit, ctx.log_path.clone(), push(ctx, &self.0))
                .await
                .map(|()| None)
        })
    }

    fn default_timeout(&self) -> Duration {
        PUSH_TIMEOUT
    }

    fn watches_limit(&self) -> bool {
        true
    }
}
