//! `-refresh` for `kubernetes` steps: the live objects compared with what the step recorded.

use serde_json::Value;

use super::api::Api;
use super::configmap;
use crate::config::kinds::KubernetesWith;

/// Drift of a `kubernetes` step's recorded outputs: a pinned Deployment gone or running
/// another image than the one pinned, a ConfigMap gone or changed. An unreachable cluster
/// is an error, not drift.
pub async fn drift(
    with: &KubernetesWith,
    config: &crate::config::Config,
    outputs: &Value,
) -> Result<Option<String>, String> {
    let images = outputs["images"].as_array().cloned().unwrap_or_default();
    let maps = outputs["configmaps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if images.is_empty() && maps.is_empty() {
        return Ok(None);
    }
    let context = with
        .context
        .clone()
        .or_else(|| outputs["context"].as_str().map(str::to_string));
    let api: Api = super::connect(with, context.as_deref(), config).await?;
    for pin in &images {
        let (Some(deployment), Some(container), Some(image)) = (
            pin["deployment"].as_str(),
            pin["container"].as_str(),
            pin["image"].as_str(),
        ) else {
            continue;
        };
        let (ns, name) = deployment
            .split_once('/')
            .unwrap_or(("default", deployment));
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
