//! `docker_prune`: remove kcideploy's older images.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use bollard::query_parameters::{ListImagesOptions, RemoveImageOptions};

use super::docker::{Daemon, LABEL, LABEL_IMAGE, PRUNE_TIMEOUT, connect, failed, within_limit};
use super::{Attempt, Kind, StepCtx, StepError};
use crate::config::kinds::DockerPruneWith;

/// Remove kcideploy's images beyond the newest `keep` of each repository.
pub async fn prune(
    ctx: &mut StepCtx<'_>,
    daemon: &Daemon,
    with: &DockerPruneWith,
) -> Result<(), StepError> {
    let docker = connect(ctx, daemon).await?;
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

/// `docker_prune`.
pub struct Prune(pub DockerPruneWith);

impl Kind for Prune {
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a> {
        Box::pin(async move {
            let daemon = Daemon::of(&ctx.run.config, ctx.name);
            let (limit, log) = (ctx.limit, ctx.log_path.clone());
            within_limit(
                "docker prune",
                &daemon,
                limit,
                log,
                prune(ctx, &daemon, &self.0),
            )
            .await
            .map(|()| None)
        })
    }

    fn default_timeout(&self) -> Duration {
        PRUNE_TIMEOUT
    }

    fn watches_limit(&self) -> bool {
        true
    }
}
