//! `kubernetes`: deploy to a cluster through its API (a small client of our own over
//! reqwest and rustls, see README "Kubernetes"). In order: read every manifest (all of them
//! are checked before anything is written), resolve `pin_images` to digests in their
//! registries, find each object's resource and namespace, pin the Deployments' images,
//! replace the ConfigMaps made from directories, server-side apply the objects one by one in
//! the order given, then wait until every applied Deployment has rolled out. A rollout that
//! fails or does not finish in time fails the step, so the steps that need it do not run.

mod api;
mod configmap;
mod kubeconfig;
mod manifest;
mod rollout;

use std::io::Write;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::{Value, json};

use super::{Attempt, Kind, StepCtx, StepError};
use crate::apply::process::Cancel;
use crate::config::kinds::KubernetesWith;
use api::Api;
use manifest::Object;
use rollout::{Rollout, Watched};

/// Connecting to the API server (DNS, TCP, TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One API call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// One registry request.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(60);
/// An attempt's limit when the step sets no `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// `kubernetes`.
pub struct Kubernetes(pub KubernetesWith);

impl Kind for Kubernetes {
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a> {
        Box::pin(async move { run(ctx, &self.0).await.map(Some) })
    }

    fn default_timeout(&self) -> Duration {
        DEFAULT_TIMEOUT
    }

    fn watches_limit(&self) -> bool {
        true
    }
}

fn failed(message: impl Into<String>) -> StepError {
    StepError::Failed(message.into())
}

/// Resolve every `pin_images` value to a digest: key → (tag as written, digest, pinned
/// reference).
async fn resolve_pins(
    ctx: &StepCtx<'_>,
    with: &KubernetesWith,
) -> Result<IndexMap<String, (String, String, String)>, StepError> {
    let mut pins = IndexMap::new();
    if with.pin_images.is_empty() {
        return Ok(pins);
    }
    let client = ctx.run.http_client().map_err(failed)?;
    for (key, written) in &with.pin_images {
        let written = super::docker::substitute(written, ctx)
            .map_err(|e| failed(format!("with.pin_images.{key}: {e}")))?;
        let image = super::registry::ImageRef::parse(&written)
            .map_err(|e| failed(format!("with.pin_images.{key}: {e}")))?;
        let digest = super::registry::resolve(&client, &image, REGISTRY_TIMEOUT)
            .await
            .map_err(failed)?;
        ctx.progress(format!("pin {key}: {} → {digest}", image.written));
        pins.insert(key.clone(), (image.written.clone(), digest.clone(), image.pinned(&digest)));
    }
    Ok(pins)
}

/// Where each object goes: its API path and namespace (`None` for cluster-scoped kinds).
/// An object naming another namespace than the step's is refused, as `kubectl apply -n`
/// refuses it.
async fn place(
    api: &Api,
    objects: &mut [Object],
    with: &KubernetesWith,
) -> Result<Vec<(String, Option<String>)>, StepError> {
    let default_ns = with
        .namespace
        .clone()
        .or_else(|| api.target.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let mut placed = Vec::new();
    for object in objects.iter_mut() {
        let resource = api
            .resource(object.api_version(), object.kind())
            .await
            .map_err(|e| failed(format!("{}: {e}", object.at())))?;
        let namespace = match resource.namespaced {
            false => None,
            true => {
                let ns = object.namespace().unwrap_or(&default_ns).to_string();
                if let Some(step_ns) = &with.namespace
                    && *step_ns != ns
                {
                    return Err(failed(format!(
                        "{}: {} {} is in namespace {ns}, but the step deploys to {step_ns}",
                        object.at(),
                        object.kind(),
                        object.name()
                    )));
                }
                object.value["metadata"]["namespace"] = json!(ns);
                Some(ns)
            }
        };
        let path = api::object_path(
            object.api_version(),
            &resource,
            namespace.as_deref(),
            object.name(),
        );
        placed.push((path, namespace));
    }
    Ok(placed)
}

/// `namespace/name`, or `name` for cluster-scoped objects.
fn qualified(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Replace each ConfigMap made from a directory; what was written, for state.
async fn configmaps(
    ctx: &StepCtx<'_>,
    api: &Api,
    with: &KubernetesWith,
    base: &std::path::Path,
) -> Result<Vec<Value>, StepError> {
    let mut done = Vec::new();
    for c in &with.configmaps {
        let namespace = c
            .namespace
            .clone()
            .or_else(|| with.namespace.clone())
            .or_else(|| api.target.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let contents = configmap::build(&base.join(&c.from_dir), &c.from_dir).map_err(failed)?;
        let written = configmap::replace(api, &namespace, &c.name, &contents, &with.field_manager)
            .await
            .map_err(failed)?;
        ctx.progress(format!(
            "ConfigMap {namespace}/{}: {} ({} keys from {})",
            c.name,
            written.as_str(),
            contents.keys(),
            c.from_dir
        ));
        done.push(json!({
            "namespace": namespace,
            "name": c.name,
            "keys": contents.keys(),
            "sha256": contents.digest(),
            "written": written.as_str(),
        }));
    }
    Ok(done)
}

async fn run(ctx: &mut StepCtx<'_>, with: &KubernetesWith) -> Result<Value, StepError> {
    let start = Instant::now();
    let (base, _) = ctx.workdir(with.repo.as_deref(), None)?;
    let mut warnings = Vec::new();
    let mut objects = manifest::read(&base, &with.manifests, &mut |w| warnings.push(w))
        .map_err(failed)?;
    for w in warnings {
        ctx.progress(w);
    }
    let pins = resolve_pins(ctx, with).await?;
    let target = kubeconfig::target(
        with.kubeconfig.as_deref(),
        with.context.as_deref(),
        &ctx.run.config.dir,
        CONNECT_TIMEOUT,
    )
    .await
    .map_err(failed)?;
    let api = Api::new(target, REQUEST_TIMEOUT);
    let _ = writeln!(
        ctx.log,
        "cluster {} (context {})",
        api.target.server, api.target.context
    );
    let placed = place(&api, &mut objects, with).await?;
    let namespace_of = |o: &Object| o.namespace().unwrap_or("").to_string();
    let pinned = manifest::pin(&mut objects, &pins, &namespace_of).map_err(failed)?;
    for p in &pinned {
        ctx.progress(format!(
            "Deployment {} container {}: {} → {}",
            p.deployment, p.container, p.was, p.image
        ));
    }
    let configmaps = configmaps(ctx, &api, with, &base).await?;
    let mut applied = Vec::new();
    let mut watched = Vec::new();
    for (object, (path, namespace)) in objects.iter().zip(&placed) {
        if *ctx.cancel.borrow() >= Cancel::Graceful {
            return Err(StepError::Cancelled);
        }
        let name = qualified(namespace.as_deref(), object.name());
        api.apply(path, &object.value, &with.field_manager, with.force)
            .await
            .map_err(|e| failed(format!("cannot apply {} {name} ({}): {e}", object.kind(), object.at())))?;
        ctx.progress(format!("applied {} {name} ({})", object.kind(), object.at()));
        applied.push(json!({
            "api_version": object.api_version(),
            "kind": object.kind(),
            "namespace": namespace,
            "name": object.name(),
            "file": object.at(),
        }));
        if object.is_deployment() {
            watched.push(Watched {
                name,
                path: path.clone(),
                state: Rollout::Waiting("not looked at yet".into()),
            });
        }
    }
    if with.wait && !watched.is_empty() {
        let deadline = (Instant::now() + with.rollout_timeout.0).min(start + ctx.limit);
        let mut cancel = ctx.cancel.clone();
        let mut stopped = move || *cancel.borrow_and_update() >= Cancel::Graceful;
        let log = ctx.log;
        let events = ctx.events.clone();
        let step = ctx.name.to_string();
        let mut progress = move |message: String| {
            let mut log = log;
            let _ = writeln!(log, "{message}");
            let _ = events.send(crate::apply::events::Event::StepProgress {
                step: step.clone(),
                message,
            });
        };
        match rollout::wait(&api, &mut watched, with.interval.0, deadline, &mut progress, &mut stopped).await {
            Ok(()) => {}
            Err(e) if e == "cancelled" => return Err(StepError::Cancelled),
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(json!({
        "context": api.target.context,
        "server": api.target.server,
        "objects": applied,
        "configmaps": configmaps,
        "images": pinned.iter().map(|p| json!({
            "deployment": p.deployment,
            "container": p.container,
            "tag": p.tag,
            "digest": p.digest,
            "image": p.image,
        })).collect::<Vec<_>>(),
        "rolled_out": watched.iter().filter(|w| w.state == Rollout::Done).map(|w| w.name.clone()).collect::<Vec<_>>(),
    }))
}

/// Drift of a `kubernetes` step's recorded outputs: a pinned Deployment gone or running
/// another image than the one pinned, a ConfigMap gone or changed. An unreachable cluster
/// is an error, not drift.
pub async fn drift(
    with: &KubernetesWith,
    dir: &std::path::Path,
    outputs: &Value,
) -> Result<Option<String>, String> {
    let images = outputs["images"].as_array().cloned().unwrap_or_default();
    let maps = outputs["configmaps"].as_array().cloned().unwrap_or_default();
    if images.is_empty() && maps.is_empty() {
        return Ok(None);
    }
    let context = with
        .context
        .clone()
        .or_else(|| outputs["context"].as_str().map(str::to_string));
    let target = kubeconfig::target(with.kubeconfig.as_deref(), context.as_deref(), dir, CONNECT_TIMEOUT).await?;
    let api = Api::new(target, REQUEST_TIMEOUT);
    for pin in &images {
        let (Some(deployment), Some(container), Some(image)) = (
            pin["deployment"].as_str(),
            pin["container"].as_str(),
            pin["image"].as_str(),
        ) else {
            continue;
        };
        let (ns, name) = deployment.split_once('/').unwrap_or(("default", deployment));
        let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}");
        let Some(live) = api.get(&path).await? else {
            return Ok(Some(format!("Deployment {deployment} no longer exists")));
        };
        let running = live["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == container)
            .and_then(|c| c["image"].as_str());
        match running {
            Some(found) if found == image => {}
            Some(found) => {
                return Ok(Some(format!(
                    "Deployment {deployment} container {container} runs {found} instead of the pinned {image}"
                )));
            }
            None => {
                return Ok(Some(format!(
                    "Deployment {deployment} has no container {container} any more"
                )));
            }
        }
    }
    for map in &maps {
        let (Some(ns), Some(name), Some(recorded)) = (
            map["namespace"].as_str(),
            map["name"].as_str(),
            map["sha256"].as_str(),
        ) else {
            continue;
        };
        let path = format!("/api/v1/namespaces/{ns}/configmaps/{name}");
        match api.get(&path).await? {
            None => return Ok(Some(format!("ConfigMap {ns}/{name} no longer exists"))),
            Some(live) if configmap::Contents::of(&live).digest() != recorded => {
                return Ok(Some(format!(
                    "ConfigMap {ns}/{name} was changed since it was applied"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(None)
}
