//! Docker steps through the daemon's API (bollard): build with a content tag, push, restart
//! and wait until healthy, prune; and the drift checks behind `plan -refresh`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::HealthStatusEnum;
use bollard::query_parameters::{
    BuildImageOptions, ListContainersOptions, ListImagesOptions, PushImageOptions,
    RemoveImageOptions, RestartContainerOptions, TagImageOptions,
};
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{StepCtx, StepError};
use crate::apply::process::{Cancel, cancelled};
use crate::config::kinds::{
    ContainerRestartWith, DockerBuildWith, DockerPruneWith, DockerPushWith,
};

/// Label on every image kcideploy builds.
pub const LABEL: &str = "org.kernelci.kcideploy";
/// The image repository, as a label (prune groups by it).
pub const LABEL_IMAGE: &str = "org.kernelci.kcideploy.image";
/// The content digest, as a label.
pub const LABEL_CONTENT: &str = "org.kernelci.kcideploy.content";

/// Connect to the daemon named by `DOCKER_HOST` (or the local socket), agreeing on an API version.
pub async fn connect() -> Result<Docker, String> {
    let where_ =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let docker = Docker::connect_with_defaults()
        .map_err(|e| format!("cannot reach the Docker daemon at {where_}: {e}"))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| format!("cannot reach the Docker daemon at {where_}: {e}"))
}

fn failed(e: impl std::fmt::Display) -> StepError {
    StepError::Failed(e.to_string())
}

/// Replace `${repos.<name>.sha}`, `${repos.<name>.base}`, `${cycle}` and `${plan}`.
pub fn substitute(text: &str, ctx: &StepCtx<'_>) -> Result<String, String> {
    let plan = &ctx.run.plan;
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
        let key = &after[..end];
        let value = match key.split('.').collect::<Vec<_>>().as_slice() {
            ["cycle"] => plan.cycle.as_str().to_string(),
            ["plan"] => plan.name.clone(),
            ["repos", repo, field] => {
                let r = plan
                    .repos
                    .get(*repo)
                    .ok_or_else(|| format!("`${{{key}}}`: no repo `{repo}` in the plan"))?;
                match *field {
                    "sha" => r.staging.clone(),
                    "base" => r.base.clone(),
                    "branch" => r.base_branch.clone(),
                    other => {
                        return Err(format!(
                            "`${{{key}}}`: unknown field `{other}` (sha, base, branch)"
                        ));
                    }
                }
            }
            _ => {
                return Err(format!(
                    "unknown variable `${{{key}}}` (repos.<name>.sha, repos.<name>.base, cycle, plan)"
                ));
            }
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The id of the git tree of `dir` in the staging revision of `repo` (a content hash of it).
fn context_tree(ctx: &StepCtx<'_>, repo: &str, dir: &str) -> Result<String, String> {
    let plan = ctx
        .run
        .plan
        .repos
        .get(repo)
        .ok_or_else(|| format!("repo `{repo}` is not in the plan"))?;
    let cache = git2::Repository::open_bare(ctx.run.cache_dir.join(format!("{repo}.git")))
        .map_err(|e| format!("cannot open the cache of `{repo}`: {e}"))?;
    let oid = git2::Oid::from_str(&plan.staging).map_err(|e| e.to_string())?;
    let tree = cache
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(|e| e.to_string())?;
    let trimmed = dir.trim_matches('/');
    if trimmed.is_empty() || trimmed == "." {
        return Ok(tree.id().to_string());
    }
    let entry = tree.get_path(std::path::Path::new(trimmed)).map_err(|_| {
        format!(
            "the build context `{dir}` does not exist in {repo} {}",
            crate::support::text::short(&plan.staging)
        )
    })?;
    Ok(entry.id().to_string())
}

/// The next item of a daemon's progress stream, or `Cancelled` when the run is stopped.
async fn next_or_cancel<S: futures_util::Stream + Unpin>(
    stream: &mut S,
    cancel: &mut tokio::sync::watch::Receiver<Cancel>,
) -> Result<Option<S::Item>, StepError> {
    tokio::select! {
        item = stream.next() => Ok(item),
        _ = cancelled(cancel, Cancel::Graceful) => Err(StepError::Cancelled),
    }
}

/// Build an image, or do nothing when the content tag exists; then move the tags.
pub async fn build(
    ctx: &mut StepCtx<'_>,
    with: &DockerBuildWith,
) -> Result<serde_json::Value, StepError> {
    let docker = connect().await.map_err(StepError::Failed)?;
    let mut log = ctx.log;
    let args: BTreeMap<String, String> = with
        .args
        .iter()
        .map(|(k, v)| Ok((k.clone(), substitute(v, ctx)?)))
        .collect::<Result<_, String>>()
        .map_err(StepError::Failed)?;
    let (context_id, context_dir) = match &with.repo {
        Some(repo) => {
            let id = context_tree(ctx, repo, &with.context).map_err(StepError::Failed)?;
            let dir = ctx
                .run
                .checkout(repo)
                .map_err(StepError::Failed)?
                .join(&with.context);
            (id, Some(dir))
        }
        None => ("none".to_string(), None),
    };
    let dockerfile_name = if with.inline.is_some() {
        ".kcideploy.Dockerfile".to_string()
    } else {
        with.dockerfile.clone()
    };
    let dockerfile = match (&with.inline, &context_dir) {
        (Some(text), _) => text.clone(),
        (None, Some(dir)) => std::fs::read_to_string(dir.join(&with.dockerfile)).map_err(|e| {
            failed(format!(
                "cannot read {} in the build context: {e}",
                with.dockerfile
            ))
        })?,
        (None, None) => return Err(failed("no build context and no inline Dockerfile")),
    };
    let digest = hex::encode(Sha256::digest(
        json!({ "context": context_id, "dockerfile": dockerfile, "args": args, "no_cache": with.no_cache })
            .to_string()
            .as_bytes(),
    ));
    let content_tag = format!("kcd-{}", &digest[..16]);
    let content_ref = format!("{}:{content_tag}", with.image);

    let existing = docker.inspect_image(&content_ref).await.ok();
    let id = match existing.and_then(|i| i.id) {
        Some(id) => {
            let _ = writeln!(log, "{content_ref} exists ({id}): nothing to build");
            id
        }
        None if with.check_registry
            && docker
                .inspect_registry_image(&content_ref, credentials(&with.image))
                .await
                .is_ok() =>
        {
            let _ = writeln!(
                log,
                "{content_ref} exists in the registry: nothing to build"
            );
            return Ok(
                json!({ "image": with.image, "content_tag": content_tag, "id": null, "tags": [] }),
            );
        }
        None => {
            let tar = build_context(
                context_dir.as_deref(),
                with.inline
                    .as_deref()
                    .map(|t| (dockerfile_name.as_str(), t)),
            )
            .map_err(|e| failed(format!("cannot pack the build context: {e}")))?;
            let _ = writeln!(
                log,
                "building {content_ref} ({} KiB of context)",
                tar.len() / 1024
            );
            let labels = HashMap::from([
                (LABEL.to_string(), "1".to_string()),
                (LABEL_IMAGE.to_string(), with.image.clone()),
                (LABEL_CONTENT.to_string(), digest.clone()),
                (
                    "org.kernelci.kcideploy.plan".to_string(),
                    ctx.run.plan.name.clone(),
                ),
                (
                    "org.kernelci.kcideploy.step".to_string(),
                    ctx.name.to_string(),
                ),
            ]);
            let options = BuildImageOptions {
                dockerfile: dockerfile_name.clone(),
                t: Some(content_ref.clone()),
                buildargs: Some(args.clone().into_iter().collect()),
                labels: Some(labels),
                rm: true,
                forcerm: true,
                nocache: with.no_cache,
                networkmode: with.network.clone(),
                ..Default::default()
            };
            let mut stream =
                docker.build_image(options, None, Some(bollard::body_full(tar.into())));
            let mut last_instruction = String::new();
            let mut error: Option<String> = None;
            loop {
                let Some(item) = next_or_cancel(&mut stream, &mut ctx.cancel).await? else {
                    break;
                };
                match item {
                    Ok(info) => {
                        if let Some(text) = info.stream {
                            let _ = log.write_all(text.as_bytes());
                            for line in text.lines() {
                                if line.starts_with("Step ") {
                                    last_instruction = line.trim().to_string();
                                }
                            }
                        }
                        if let Some(detail) = info.error_detail {
                            error = Some(detail.message.unwrap_or_else(|| "build failed".into()));
                        }
                    }
                    Err(e) => error = Some(e.to_string()),
                }
            }
            if let Some(e) = error {
                let e = e
                    .strip_prefix("Docker stream error: ")
                    .unwrap_or(&e)
                    .to_string();
                let _ = writeln!(log, "error: {e}");
                let at = if last_instruction.is_empty() {
                    String::new()
                } else {
                    format!(" at `{last_instruction}`")
                };
                return Err(failed(format!(
                    "docker build of {content_ref} failed{at}: {}",
                    e.trim()
                )));
            }
            let image = docker
                .inspect_image(&content_ref)
                .await
                .map_err(|e| failed(format!("built {content_ref}, but cannot inspect it: {e}")))?;
            image.id.unwrap_or_default()
        }
    };
    for tag in &with.tags {
        docker
            .tag_image(
                &content_ref,
                Some(TagImageOptions {
                    repo: Some(with.image.clone()),
                    tag: Some(tag.clone()),
                }),
            )
            .await
            .map_err(|e| {
                failed(format!(
                    "cannot tag {content_ref} as {}:{tag}: {e}",
                    with.image
                ))
            })?;
        let _ = writeln!(log, "tagged {}:{tag}", with.image);
    }
    Ok(json!({ "image": with.image, "content_tag": content_tag, "id": id, "tags": with.tags }))
}

/// A tar of the context directory, plus an inline Dockerfile.
fn build_context(
    dir: Option<&std::path::Path>,
    inline: Option<(&str, &str)>,
) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    if let Some(dir) = dir {
        builder.append_dir_all(".", dir)?;
    }
    if let Some((name, text)) = inline {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, text.as_bytes())?;
    }
    builder.into_inner()
}

/// The registry host of an image reference (`127.0.0.1:5000/x/y` → `127.0.0.1:5000`).
fn registry_of(image: &str) -> Option<&str> {
    let (first, _) = image.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// Registry credentials: `KCIDEPLOY_REGISTRY_USERNAME` / `_PASSWORD`, else the Docker config
/// file's `auths` entry for the image's registry. Never logged.
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
    let config_dir = std::env::var("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| std::path::Path::new(&h).join(".docker")))
        .ok()?;
    let text = std::fs::read_to_string(config_dir.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auth = config["auths"][registry]["auth"].as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (username, password) = decoded.split_once(':')?;
    Some(DockerCredentials {
        username: Some(username.to_string()),
        password: Some(password.to_string()),
        serveraddress: Some(registry.to_string()),
        ..Default::default()
    })
}

/// Push tags of an image.
pub async fn push(ctx: &mut StepCtx<'_>, with: &DockerPushWith) -> Result<(), StepError> {
    let docker = connect().await.map_err(StepError::Failed)?;
    let mut log = ctx.log;
    for tag in &with.tags {
        let tag = substitute(tag, ctx).map_err(StepError::Failed)?;
        let _ = writeln!(log, "push {}:{tag}", with.image);
        let mut stream = docker.push_image(
            &with.image,
            Some(PushImageOptions {
                tag: Some(tag.clone()),
                ..Default::default()
            }),
            credentials(&with.image),
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

/// Restart containers, then wait until each runs and, with a health check, is healthy.
pub async fn restart(
    ctx: &mut StepCtx<'_>,
    with: &ContainerRestartWith,
) -> Result<serde_json::Value, StepError> {
    let docker = connect().await.map_err(StepError::Failed)?;
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
    for name in &names {
        let _ = writeln!(log, "restart {name}");
        docker
            .restart_container(
                name,
                Some(RestartContainerOptions {
                    t: Some(with.stop_timeout),
                    signal: None,
                }),
            )
            .await
            .map_err(|e| failed(format!("cannot restart container {name}: {e}")))?;
    }
    let limit = ctx.step.timeout();
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

/// Remove kcideploy's images beyond the newest `keep` of each repository.
pub async fn prune(ctx: &mut StepCtx<'_>, with: &DockerPruneWith) -> Result<(), StepError> {
    let docker = connect().await.map_err(StepError::Failed)?;
    let mut log = ctx.log;
    let mut label = vec![format!("{LABEL}=1")];
    if let Some(image) = &with.image {
        label.push(format!("{LABEL_IMAGE}={image}"));
    }
    let filters = HashMap::from([("label".to_string(), label)]);
    let images = docker
        .list_images(Some(ListImagesOptions {
            all: false,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| failed(format!("cannot list images: {e}")))?;
    let mut by_repo: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for image in images {
        let repo = image.labels.get(LABEL_IMAGE).cloned().unwrap_or_default();
        by_repo
            .entry(repo)
            .or_default()
            .push((image.created, image.id));
    }
    let mut in_use = Vec::new();
    for (repo, mut list) in by_repo {
        list.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, id) in list.into_iter().skip(with.keep) {
            match docker
                .remove_image(
                    &id,
                    Some(RemoveImageOptions {
                        force: true,
                        noprune: false,
                        ..Default::default()
                    }),
                    None,
                )
                .await
            {
                Ok(_) => {
                    let _ = writeln!(log, "removed {repo} {id}");
                }
                Err(e) => {
                    let _ = writeln!(log, "kept {repo} {id}: {e}");
                    in_use.push(id);
                }
            }
        }
    }
    if !in_use.is_empty() {
        let _ = writeln!(
            log,
            "{} image(s) could not be removed (in use?)",
            in_use.len()
        );
    }
    Ok(())
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

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.get(..12).unwrap_or(id)
}
