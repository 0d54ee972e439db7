//! `kubernetes`: deploy to a cluster through its API (a small client of our own over
//! reqwest and rustls, see README "Kubernetes"). In order: read every manifest (all of them
//! are checked before anything is written), resolve `pin_images` to digests in their
//! registries, find each object's resource and namespace, pin the Deployments' images,
//! replace the ConfigMaps made from directories, server-side apply the objects one by one in
//! the order given, then wait until every applied Deployment has rolled out. A rollout that
//! fails or does not finish in time fails the step, so the steps that need it do not run.

mod adopt;
mod api;
mod configmap;
mod drift;
mod kubeconfig;
mod manifest;
mod rollout;
pub mod scale;

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

pub use adopt::adopt;
pub use drift::drift;
pub use scale::give_back;

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

/// The cluster of `with`'s kubeconfig and `context`, within the plan's `timeouts`.
pub(crate) async fn connect(
    with: &KubernetesWith,
    context: Option<&str>,
    config: &crate::config::Config,
) -> Result<Api, String> {
    let timeouts = &config.file.timeouts;
    let target = kubeconfig::target(
        with.kubeconfig.as_deref(),
        context,
        &config.dir,
        timeouts.connect.0,
    )
    .await?;
    Ok(Api::new(target, timeouts.kubernetes.0, timeouts.connect.0))
}

/// Resolve every `pin_images` value to a digest, by key.
async fn resolve_pins(
    ctx: &StepCtx<'_>,
    with: &KubernetesWith,
) -> Result<IndexMap<String, manifest::Resolved>, StepError> {
    let mut pins = IndexMap::new();
    if with.pin_images.is_empty() {
        return Ok(pins);
    }
    let client = ctx.run.http_client().map_err(failed)?;
    let timeouts = &ctx.run.config.file.timeouts;
    for (key, written) in &with.pin_images {
        let written = super::docker::substitute(written, ctx)
            .map_err(|e| failed(format!("with.pin_images.{key}: {e}")))?;
        let image = super::registry::ImageRef::parse(&written)
            .map_err(|e| failed(format!("with.pin_images.{key}: {e}")))?;
        // The digest the plan showed, when it resolved one: what was approved deploys.
        let planned = ctx
            .run
            .plan
            .steps
            .iter()
            .find(|s| s.name == ctx.name)
            .and_then(|s| s.params.get(&crate::apply::pins::digest_key(key)))
            .filter(|d| super::registry::is_sha256_digest(d))
            .cloned();
        let digest = match planned {
            Some(d) => d,
            None => {
                super::registry::resolve(&client, &image, timeouts.registry.0, timeouts.connect.0)
                    .await
                    .map_err(failed)?
            }
        };
        ctx.progress(format!("pin {key}: {} → {digest}", image.written));
        let resolved = manifest::Resolved {
            tag: image.written.clone(),
            image: image.pinned(&digest),
            digest,
        };
        pins.insert(key.clone(), resolved);
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
    let default_ns = api.namespace_for(with.namespace.as_deref());
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

/// The ConfigMaps made from directories: (namespace, name, directory, contents), built
/// before anything is written.
type Built = Vec<(Option<String>, String, String, configmap::Contents)>;

fn build_configmaps(with: &KubernetesWith, base: &std::path::Path) -> Result<Built, StepError> {
    with.configmaps
        .iter()
        .map(|c| {
            let namespace = c.namespace.clone().or_else(|| with.namespace.clone());
            let contents =
                configmap::build(&base.join(&c.from_dir), &c.from_dir).map_err(failed)?;
            Ok((namespace, c.name.clone(), c.from_dir.clone(), contents))
        })
        .collect()
}

/// Replace each ConfigMap; what was written, for state.
async fn configmaps(
    ctx: &StepCtx<'_>,
    api: &Api,
    with: &KubernetesWith,
    built: Built,
) -> Result<Vec<Value>, StepError> {
    let mut done = Vec::new();
    for (namespace, name, dir, contents) in built {
        let namespace = namespace
            .or_else(|| api.target.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let written = configmap::replace(api, &namespace, &name, &contents, &with.field_manager)
            .await
            .map_err(failed)?;
        ctx.progress(format!(
            "ConfigMap {namespace}/{name}: {} ({} keys from {dir})",
            written.as_str(),
            contents.keys(),
        ));
        done.push(json!({
            "namespace": namespace,
            "name": name,
            "keys": contents.keys(),
            "sha256": contents.digest(),
            "written": written.as_str(),
        }));
    }
    Ok(done)
}

/// Server-side apply every object in order; what was applied (for state) and the
/// Deployments to wait for.
async fn apply_all(
    ctx: &StepCtx<'_>,
    api: &Api,
    objects: &[Object],
    placed: &[(String, Option<String>)],
    with: &KubernetesWith,
) -> Result<(Vec<Value>, Vec<Watched>), StepError> {
    let mut applied = Vec::new();
    let mut watched = Vec::new();
    for (object, (path, namespace)) in objects.iter().zip(placed) {
        if *ctx.cancel.borrow() >= Cancel::Graceful {
            return Err(StepError::Cancelled);
        }
        let name = qualified(namespace.as_deref(), object.name());
        let (kind, at) = (object.kind(), object.at());
        api.apply(path, &object.value, &with.field_manager, with.force)
            .await
            .map_err(|e| failed(format!("cannot apply {kind} {name} ({at}): {e}")))?;
        ctx.progress(format!("applied {kind} {name} ({at})"));
        applied.push(json!({
            "api_version": object.api_version(),
            "kind": kind,
            "namespace": namespace,
            "name": object.name(),
            "file": at,
        }));
        if object.is_deployment() {
            watched.push(Watched {
                name,
                path: path.clone(),
                state: Rollout::Waiting("not looked at yet".into()),
            });
        }
    }
    Ok((applied, watched))
}

/// Wait for the rollouts until `deadline`, reporting progress as the step's.
async fn wait_rollouts(
    ctx: &StepCtx<'_>,
    api: &Api,
    watched: &mut [Watched],
    with: &KubernetesWith,
    deadline: Instant,
) -> Result<(), StepError> {
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
    let interval = with.interval.0;
    match rollout::wait(
        api,
        watched,
        interval,
        deadline,
        &mut progress,
        &mut stopped,
    )
    .await
    {
        Ok(()) => Ok(()),
        Err(e) if e == "cancelled" => Err(StepError::Cancelled),
        Err(e) => Err(failed(e)),
    }
}

async fn run(ctx: &mut StepCtx<'_>, with: &KubernetesWith) -> Result<Value, StepError> {
    if let Some(to) = &with.scale {
        let api = connect(with, with.context.as_deref(), &ctx.run.config)
            .await
            .map_err(failed)?;
        return scale::run(ctx, &api, with, to).await;
    }
    let start = Instant::now();
    let (base, _) = ctx.workdir(with.repo.as_deref(), None)?;
    let mut warnings = Vec::new();
    let mut objects =
        manifest::read(&base, &with.manifests, &mut |w| warnings.push(w)).map_err(failed)?;
    for w in warnings {
        ctx.progress(w);
    }
    let built = build_configmaps(with, &base)?;
    let pins = resolve_pins(ctx, with).await?;
    let api = connect(with, with.context.as_deref(), &ctx.run.config)
        .await
        .map_err(failed)?;
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
    let configmaps = configmaps(ctx, &api, with, built).await?;
    let (applied, mut watched) = apply_all(ctx, &api, &objects, &placed, with).await?;
    if with.wait && !watched.is_empty() {
        let deadline = (Instant::now() + with.rollout_timeout.0).min(start + ctx.limit);
        wait_rollouts(ctx, &api, &mut watched, with, deadline).await?;
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
