//! `with.scale`: set the replicas of Deployments through their `scale` subresource (`GET`,
//! then `PATCH` with a JSON merge patch, as `kubectl scale` does), recording how many each
//! had: `kcideploy resume` gives them back. Production's way to stop the line: the trigger
//! scaled to zero builds no new revision until the regression is understood.

use reqwest::Method;
use serde_json::{Value, json};

use super::api::Api;
use super::failed;
use crate::apply::kinds::{StepCtx, StepError};
use crate::config::kinds::KubernetesWith;
use crate::config::kubernetes::ScaleTo;

const MERGE_PATCH: &str = "application/merge-patch+json";

fn scale_path(namespace: &str, name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale")
}

/// The replicas of `namespace/name` now.
pub async fn replicas(api: &Api, namespace: &str, name: &str) -> Result<u64, String> {
    let now = api
        .call(Method::GET, &scale_path(namespace, name), None)
        .await
        .map_err(String::from)?;
    Ok(now["spec"]["replicas"].as_u64().unwrap_or(0))
}

/// Set `namespace/name` to `count` replicas.
pub async fn set(api: &Api, namespace: &str, name: &str, count: u64) -> Result<(), String> {
    let body = serde_json::to_vec(&json!({ "spec": { "replicas": count } })).unwrap_or_default();
    api.call(
        Method::PATCH,
        &scale_path(namespace, name),
        Some((MERGE_PATCH, body)),
    )
    .await
    .map(|_| ())
    .map_err(String::from)
}

/// Scale every Deployment of `to`; the outputs record each one's replicas before.
pub async fn run(
    ctx: &mut StepCtx<'_>,
    api: &Api,
    with: &KubernetesWith,
    to: &ScaleTo,
) -> Result<Value, StepError> {
    let namespace = api.namespace_for(with.namespace.as_deref());
    let mut scaled = Vec::new();
    for name in &to.deployments {
        let before = replicas(api, &namespace, name).await.map_err(failed)?;
        set(api, &namespace, name, u64::from(to.replicas))
            .await
            .map_err(failed)?;
        ctx.progress(format!(
            "Deployment {namespace}/{name}: {before} → {} replica(s)",
            to.replicas
        ));
        scaled.push(json!({
            "namespace": namespace,
            "deployment": name,
            "replicas_before": before,
            "replicas": to.replicas,
        }));
    }
    Ok(json!({
        "context": api.target.context,
        "server": api.target.server,
        "scaled": scaled,
    }))
}

/// Give the Deployments a successful scale step paused (`outputs.scaled`) their replicas
/// back, for `kcideploy resume`; what was done, one line each.
pub async fn give_back(
    config: &crate::config::Config,
    with: &KubernetesWith,
    outputs: &Value,
) -> Result<Vec<String>, String> {
    let api = super::connect(with, with.context.as_deref(), config).await?;
    let mut done = Vec::new();
    for entry in outputs["scaled"].as_array().into_iter().flatten() {
        let (Some(namespace), Some(name), Some(before)) = (
            entry["namespace"].as_str(),
            entry["deployment"].as_str(),
            entry["replicas_before"].as_u64(),
        ) else {
            continue;
        };
        let now = replicas(&api, namespace, name).await?;
        set(&api, namespace, name, before).await?;
        done.push(format!(
            "Deployment {namespace}/{name}: {now} → {before} replica(s)"
        ));
    }
    Ok(done)
}
