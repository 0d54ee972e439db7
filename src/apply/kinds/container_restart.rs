//! `container_restart`: restart containers and wait until they run and are healthy.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use bollard::models::HealthStatusEnum;
use bollard::query_parameters::{ListContainersOptions, RestartContainerOptions};
use serde_json::json;

use super::docker::{Daemon, connect, failed};
use super::recreate;
use super::{Attempt, Kind, StepCtx, StepError};
use crate::apply::process::{Cancel, cancelled};
use crate::config::kinds::ContainerRestartWith;

/// Restart containers, then wait until each runs and, with a health check, is healthy.
pub async fn restart(
    ctx: &mut StepCtx<'_>,
    with: &ContainerRestartWith,
) -> Result<serde_json::Value, StepError> {
    let daemon = Daemon::of(&ctx.run.config, ctx.name);
    let docker = connect(ctx, &daemon).await?;
    let mut log = ctx.log;
    let names: Vec<String> = match &with.label {
        Some(label) => {
            let filters = HashMap::from([("label".to_string(), vec![label.clone()])]);
            let list = docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters),
                    ..Default::default()
                }))
                .await
                .map_err(|e| failed(format!("cannot list containers: {e}")))?;
            let mut names: Vec<String> = list
                .into_iter()
                .filter_map(|c| {
                    c.names
                        .and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_string()))
                })
                .collect();
            names.sort();
            if names.is_empty() {
                return Err(failed(format!("no container carries the label {label}")));
            }
            names
        }
        None => with.names.clone(),
    };
    let wanted = with
        .image
        .as_deref()
        .map(|i| super::docker::substitute(i, ctx))
        .transpose()
        .map_err(StepError::Failed)?;
    for name in &names {
        restart_or_recreate(&docker, name, wanted.as_deref(), with.stop_timeout, log).await?;
    }
    let limit = ctx.limit;
    let start = Instant::now();
    let mut containers = Vec::new();
    for name in &names {
        loop {
            let info = docker
                .inspect_container(name, None)
                .await
                .map_err(|e| failed(format!("cannot inspect container {name}: {e}")))?;
            let state = info.state.clone().unwrap_or_default();
            let running = state.running.unwrap_or(false);
            let health = state.health.and_then(|h| h.status);
            let healthy = matches!(
                health,
                None | Some(
                    HealthStatusEnum::EMPTY | HealthStatusEnum::NONE | HealthStatusEnum::HEALTHY
                )
            );
            if running && healthy {
                let _ = writeln!(
                    log,
                    "{name} is running{}",
                    if health.is_some() { " and healthy" } else { "" }
                );
                containers.push(json!({
                    "name": name,
                    "id": info.id,
                    "image": info.image,
                }));
                break;
            }
            let what = if !running {
                let status = state
                    .status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".into());
                format!("not running (status {status})")
            } else {
                let health = health.map(|h| h.to_string()).unwrap_or_default();
                format!("running but {health}")
            };
            if start.elapsed() >= limit {
                return Err(failed(format!(
                    "container {name} is {what} after {}",
                    crate::support::text::age(limit.as_secs() as i64)
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = cancelled(&mut ctx.cancel, Cancel::Graceful) => return Err(StepError::Cancelled),
            }
        }
    }
    Ok(json!({ "containers": containers }))
}

/// Restart container `name`, or recreate it when its image reference (`wanted`, else the
/// one it was created from) now names another image than the one it runs (a rebuild moved
/// the tag, or the container was started by hand from another image): a restart would run
/// the old one.
async fn restart_or_recreate(
    docker: &bollard::Docker,
    name: &str,
    wanted: Option<&str>,
    stop_timeout: i32,
    mut log: &std::fs::File,
) -> Result<(), StepError> {
    let info = docker
        .inspect_container(name, None)
        .await
        .map_err(|e| failed(format!("cannot restart container {name}: {e}")))?;
    let moved = recreate::moved_image(docker, &info, wanted)
        .await
        .map_err(StepError::Failed)?;
    if let Some((reference, new_image)) = moved {
        recreate::recreate(
            docker,
            name,
            info,
            (&reference, &new_image),
            stop_timeout,
            log,
        )
        .await?;
        return Ok(());
    }
    let _ = writeln!(log, "restart {name}");
    docker
        .restart_container(
            name,
            Some(RestartContainerOptions {
                t: Some(stop_timeout),
                signal: None,
            }),
        )
        .await
        .map_err(|e| failed(format!("cannot restart container {name}: {e}")))
}

/// `container_restart`.
pub struct Restart(pub ContainerRestartWith);

impl Kind for Restart {
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a> {
        Box::pin(async move { restart(ctx, &self.0).await.map(Some) })
    }

    fn watches_limit(&self) -> bool {
        true
    }
}
