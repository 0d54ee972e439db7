//! `docker_build`: build an image with a content tag, or do nothing when it exists.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;

use bollard::Docker;
use bollard::models::BuildInfo;
use bollard::query_parameters::{BuildImageOptions, TagImageOptions};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::docker::{
    Daemon, LABEL, LABEL_CONTENT, LABEL_IMAGE, connect, credentials_within, failed, next_or_cancel,
    substitute, within_limit,
};
use super::{Attempt, Kind, StepCtx, StepError};
use crate::config::kinds::DockerBuildWith;

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

/// What an image is built from: the context (its git tree id and exported directory, if
/// any), the Dockerfile (its name in the context and its text) and the build arguments.
struct Inputs {
    context_id: String,
    context_dir: Option<PathBuf>,
    dockerfile_name: String,
    dockerfile: String,
    args: BTreeMap<String, String>,
}

impl Inputs {
    /// The build arguments substituted, the context exported, the Dockerfile read.
    fn of(ctx: &StepCtx<'_>, with: &DockerBuildWith) -> Result<Inputs, StepError> {
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
            (None, Some(dir)) => {
                std::fs::read_to_string(dir.join(&with.dockerfile)).map_err(|e| {
                    failed(format!(
                        "cannot read {} in the build context: {e}",
                        with.dockerfile
                    ))
                })?
            }
            (None, None) => return Err(failed("no build context and no inline Dockerfile")),
        };
        Ok(Inputs {
            context_id,
            context_dir,
            dockerfile_name,
            dockerfile,
            args,
        })
    }

    /// The content digest the image's tag is named after.
    fn digest(&self, no_cache: bool) -> String {
        hex::encode(Sha256::digest(
            json!({ "context": self.context_id, "dockerfile": self.dockerfile, "args": self.args, "no_cache": no_cache })
                .to_string()
                .as_bytes(),
        ))
    }
}

/// Build an image, or do nothing when the content tag exists; then move the tags.
pub async fn build(
    ctx: &mut StepCtx<'_>,
    daemon: &Daemon,
    with: &DockerBuildWith,
) -> Result<serde_json::Value, StepError> {
    let docker = connect(ctx, daemon).await?;
    let mut log = ctx.log;
    let inputs = Inputs::of(ctx, with)?;
    let digest = inputs.digest(with.no_cache);
    let content_tag = format!("kcd-{}", &digest[..16]);
    let content_ref = format!("{}:{content_tag}", with.image);

    let existing = docker.inspect_image(&content_ref).await.ok();
    let id = match existing.and_then(|i| i.id) {
        Some(id) => {
            let _ = writeln!(log, "{content_ref} exists ({id}): nothing to build");
            id
        }
        None if with.check_registry && in_registry(&docker, daemon, ctx, &content_ref).await => {
            let _ = writeln!(
                log,
                "{content_ref} exists in the registry: nothing to build"
            );
            return Ok(
                json!({ "image": with.image, "content_tag": content_tag, "id": null, "tags": [] }),
            );
        }
        None => run_build(&docker, ctx, with, &inputs, &digest, &content_ref).await?,
    };
    move_tags(&docker, ctx, with, &content_ref).await?;
    Ok(json!({ "image": with.image, "content_tag": content_tag, "id": id, "tags": with.tags }))
}

/// Whether the registry has `content_ref`, asked through the daemon within
/// `timeouts.registry`. No answer counts as no (the image is built), said in the log.
async fn in_registry(
    docker: &Docker,
    daemon: &Daemon,
    ctx: &StepCtx<'_>,
    content_ref: &str,
) -> bool {
    let limit = ctx.run.config.file.timeouts.registry.0;
    let registry = super::docker::registry_of(content_ref).unwrap_or("docker.io");
    let why = match credentials_within(content_ref, limit).await {
        Err(e) => e,
        Ok(auth) => {
            let ask = docker.inspect_registry_image(content_ref, auth);
            match tokio::time::timeout(limit, ask).await {
                Ok(Ok(_)) => return true,
                Ok(Err(e)) => crate::support::text::error_chain(&e),
                Err(_) => format!(
                    "timed out: no answer within {} (timeouts.registry)",
                    crate::support::text::age(limit.as_secs() as i64)
                ),
            }
        }
    };
    let mut log = ctx.log;
    let _ = writeln!(
        log,
        "registry look-up of {content_ref} on {registry} through the Docker daemon at {}: {why}; building",
        daemon.name()
    );
    false
}

/// Build `content_ref` from `inputs`, labelled as kcideploy's; its image id.
async fn run_build(
    docker: &Docker,
    ctx: &mut StepCtx<'_>,
    with: &DockerBuildWith,
    inputs: &Inputs,
    digest: &str,
    content_ref: &str,
) -> Result<String, StepError> {
    let mut log = ctx.log;
    let tar = build_context(
        inputs.context_dir.as_deref(),
        with.inline
            .as_deref()
            .map(|t| (inputs.dockerfile_name.as_str(), t)),
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
        (LABEL_CONTENT.to_string(), digest.to_string()),
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
        dockerfile: inputs.dockerfile_name.clone(),
        t: Some(content_ref.to_string()),
        buildargs: Some(inputs.args.clone().into_iter().collect()),
        labels: Some(labels),
        rm: true,
        forcerm: true,
        nocache: with.no_cache,
        networkmode: with.network.clone(),
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
    follow_build(ctx, &mut stream, content_ref).await?;
    let image = docker
        .inspect_image(content_ref)
        .await
        .map_err(|e| failed(format!("built {content_ref}, but cannot inspect it: {e}")))?;
    Ok(image.id.unwrap_or_default())
}

/// Copy the daemon's build output to the log until it ends; a failure names the last
/// `Step` instruction it reached.
async fn follow_build<S>(
    ctx: &mut StepCtx<'_>,
    stream: &mut S,
    content_ref: &str,
) -> Result<(), StepError>
where
    S: futures_util::Stream<Item = Result<BuildInfo, bollard::errors::Error>> + Unpin,
{
    let mut log = ctx.log;
    let mut last_instruction = String::new();
    let mut error: Option<String> = None;
    while let Some(item) = next_or_cancel(stream, &mut ctx.cancel).await? {
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
    let Some(e) = error else {
        return Ok(());
    };
    let e = e.strip_prefix("Docker stream error: ").unwrap_or(&e);
    let _ = writeln!(log, "error: {e}");
    let at = if last_instruction.is_empty() {
        String::new()
    } else {
        format!(" at `{last_instruction}`")
    };
    Err(failed(format!(
        "docker build of {content_ref} failed{at}: {}",
        e.trim()
    )))
}

/// Tag `content_ref` as `<image>:<tag>` for each of the step's tags.
async fn move_tags(
    docker: &Docker,
    ctx: &StepCtx<'_>,
    with: &DockerBuildWith,
    content_ref: &str,
) -> Result<(), StepError> {
    let mut log = ctx.log;
    for tag in &with.tags {
        docker
            .tag_image(
                content_ref,
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
    Ok(())
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

/// `docker_build`.
pub struct Build(pub DockerBuildWith);

impl Kind for Build {
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a> {
        let what = format!("docker build of {}", self.0.image);
        Box::pin(async move {
            let daemon = Daemon::of(&ctx.run.config, ctx.name);
            let (limit, log) = (ctx.limit, ctx.log_path.clone());
            within_limit(&what, &daemon, limit, log, build(ctx, &daemon, &self.0))
                .await
                .map(Some)
        })
    }

    fn watches_limit(&self) -> bool {
        true
    }
}
