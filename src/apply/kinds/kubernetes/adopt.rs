//! `state adopt` for `kubernetes` steps: the objects the step's manifests name, as they run
//! in the cluster: each pinned container's image (with its digest when it is pinned to
//! one) and each ConfigMap's contents, recorded as the step records them after a run.

use std::path::Path;

use serde_json::{Value, json};

use super::configmap;
use super::manifest;
use crate::apply::adopt::live::ReadBack;
use crate::config::Config;
use crate::config::kinds::KubernetesWith;
use crate::config::kubernetes::FIRST_CONTAINER;
use crate::planner::params::Vars;

/// Read back what a `kubernetes` step made; `cache_dir` holds the repos' caches (the
/// manifests are read at the adopted revision when the step names a repo).
pub async fn adopt(
    with: &KubernetesWith,
    config: &Config,
    vars: &Vars<'_>,
    cache_dir: &Path,
) -> ReadBack {
    match read(with, config, vars, cache_dir).await {
        Ok(found) => found,
        Err(why) => ReadBack {
            outputs: None,
            found: String::new(),
            unknown: Some(why),
        },
    }
}

async fn read(
    with: &KubernetesWith,
    config: &Config,
    vars: &Vars<'_>,
    cache_dir: &Path,
) -> Result<ReadBack, String> {
    let export = tempfile::tempdir().map_err(|e| format!("cannot make a temp dir: {e}"))?;
    let base = match &with.repo {
        Some(repo) => {
            let sha = vars
                .repos
                .get(repo)
                .map(|r| r.staging.clone())
                .ok_or_else(|| format!("repo `{repo}` was not adopted"))?;
            let git = git2::Repository::open_bare(cache_dir.join(format!("{repo}.git")))
                .map_err(|e| format!("cannot open the cache of `{repo}`: {e}"))?;
            crate::gitops::export::export_tree(&git, &sha, export.path())
                .map_err(|e| format!("cannot export {repo} {sha}: {e}"))?;
            export.path().to_path_buf()
        }
        None => config.dir.clone(),
    };
    let objects = manifest::read(&base, &with.manifests, &mut |_| {})?;
    let api = super::connect(with, with.context.as_deref(), config).await?;
    let default_ns = api.namespace_for(with.namespace.as_deref());
    let mut images = Vec::new();
    let mut unknown = Vec::new();
    for object in objects.iter().filter(|o| o.is_deployment()) {
        let ns = object.namespace().unwrap_or(&default_ns).to_string();
        let name = object.name();
        let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}");
        let Some(live) = api.get(&path).await? else {
            unknown.push(format!("no Deployment {ns}/{name}"));
            continue;
        };
        pinned(
            with,
            vars,
            &format!("{ns}/{name}"),
            &live,
            &mut images,
            &mut unknown,
        );
    }
    let mut maps = Vec::new();
    for c in &with.configmaps {
        let ns = c.namespace.clone().unwrap_or_else(|| default_ns.clone());
        let path = format!("/api/v1/namespaces/{ns}/configmaps/{}", c.name);
        match api.get(&path).await? {
            None => unknown.push(format!("no ConfigMap {ns}/{}", c.name)),
            Some(live) => {
                let contents = configmap::Contents::of(&live);
                maps.push(json!({
                    "namespace": ns,
                    "name": c.name,
                    "keys": contents.keys(),
                    "sha256": contents.digest(),
                    "written": "adopted",
                }));
            }
        }
    }
    let found = format!(
        "{} pinned image(s), {} ConfigMap(s) on {}",
        images.len(),
        maps.len(),
        api.target.server
    );
    let objects: Vec<Value> = objects
        .iter()
        .map(|o| {
            json!({
                "api_version": o.api_version(),
                "kind": o.kind(),
                "namespace": o.namespace().unwrap_or(&default_ns),
                "name": o.name(),
                "file": o.at(),
            })
        })
        .collect();
    Ok(ReadBack {
        outputs: Some(json!({
            "context": api.target.context,
            "server": api.target.server,
            "objects": objects,
            "configmaps": maps,
            "images": images,
            "rolled_out": [],
        })),
        found,
        unknown: (!unknown.is_empty()).then(|| unknown.join("; ")),
    })
}

/// The live Deployment's containers that `pin_images` pins, as the step records them.
fn pinned(
    with: &KubernetesWith,
    vars: &Vars<'_>,
    deployment: &str,
    live: &Value,
    images: &mut Vec<Value>,
    unknown: &mut Vec<String>,
) {
    let containers = live["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, container) in containers.iter().enumerate() {
        let name = container["name"].as_str().unwrap_or("");
        let key = if with.pin_images.contains_key(name) {
            name
        } else if i == 0 && with.pin_images.contains_key(FIRST_CONTAINER) {
            FIRST_CONTAINER
        } else {
            continue;
        };
        let image = container["image"].as_str().unwrap_or("").to_string();
        let tag = vars
            .substitute(&with.pin_images[key])
            .unwrap_or_else(|_| with.pin_images[key].clone());
        let digest = image.split_once('@').map(|(_, d)| d.to_string());
        if digest.is_none() {
            unknown.push(format!(
                "Deployment {deployment} container {name} runs {image}, not pinned to a digest"
            ));
        }
        images.push(json!({
            "deployment": deployment,
            "container": name,
            "tag": tag,
            "digest": digest,
            "image": image,
        }));
    }
}
