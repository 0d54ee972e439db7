//! `with:` of the `kubernetes` step kind: server-side apply of manifests and ConfigMaps made
//! from directories, image pinning to registry digests, and the wait for rollouts.

use indexmap::IndexMap;
use serde::Deserialize;

use super::HumanDuration;

/// The key of `pin_images` that pins the first container of every Deployment (a container
/// name cannot be it: container names are DNS labels, without `_`).
pub const FIRST_CONTAINER: &str = "first_container";

/// A ConfigMap made from every file under a directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigMapFrom {
    /// The ConfigMap's name (`pipeline-configmap`).
    pub name: String,
    /// Every regular file under this directory, recursively, becomes a key: its base name.
    pub from_dir: String,
    /// Namespace; the step's `namespace` when unset.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `with.scale` of a `kubernetes` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleTo {
    /// Deployment names in the step's namespace (`trigger`).
    pub deployments: Vec<String>,
    /// The replicas they get (0 pauses them).
    pub replicas: u32,
}

/// `kubernetes`: apply manifests (and ConfigMaps made from directories) with server-side
/// apply, pin Deployment images to registry digests, wait until the Deployments rolled out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesWith {
    /// Kubeconfig file, relative to the plan file; default `$KUBECONFIG`, else
    /// `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// Context of the kubeconfig; default its `current-context`.
    #[serde(default)]
    pub context: Option<String>,
    /// Namespace of objects whose manifest names none (default: the context's, else
    /// `default`); an object naming another namespace is refused.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Read manifests and ConfigMap directories from this repo's staging revision (else
    /// relative to the plan file).
    #[serde(default)]
    pub repo: Option<String>,
    /// Manifest files or directories (their `.yaml`, `.yml` and `.json` files in name
    /// order), applied one by one in this order, each file's documents in order.
    #[serde(default)]
    pub manifests: Vec<String>,
    /// ConfigMaps made from directories, replaced whole before the manifests are applied.
    #[serde(default)]
    pub configmaps: Vec<ConfigMapFrom>,
    /// Images to pin, resolved to `image@sha256:...` through the registry's API:
    /// `first_container: IMAGE` for the first container of every Deployment, or a container
    /// name (which wins over `first_container`). Init containers are never pinned.
    #[serde(default)]
    pub pin_images: IndexMap<String, String>,
    /// Server-side apply's field manager.
    #[serde(default = "KubernetesWith::default_field_manager")]
    pub field_manager: String,
    /// Take over fields another manager owns (server-side apply `force=true`).
    #[serde(default = "KubernetesWith::default_force")]
    pub force: bool,
    /// Wait until every applied Deployment has rolled out.
    #[serde(default = "KubernetesWith::default_wait")]
    pub wait: bool,
    /// Longest wait for the rollouts, from the last object applied.
    #[serde(default = "KubernetesWith::default_rollout_timeout")]
    pub rollout_timeout: HumanDuration,
    /// Instead of applying manifests: set the replicas of these Deployments (through their
    /// `scale` subresource, as `kubectl scale` does), recording how many each had, so that
    /// `kcideploy resume` can give them back. With `when_failed`, this stops the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleTo>,
    /// Time between two looks at the Deployments.
    #[serde(default = "KubernetesWith::default_interval")]
    pub interval: HumanDuration,
}

impl KubernetesWith {
    fn default_field_manager() -> String {
        "kcideploy".into()
    }
    fn default_force() -> bool {
        true
    }
    fn default_wait() -> bool {
        true
    }
    fn default_rollout_timeout() -> HumanDuration {
        HumanDuration::from_secs(600)
    }
    fn default_interval() -> HumanDuration {
        HumanDuration::from_secs(2)
    }

    /// What the settings must hold beyond their types.
    pub fn check(&self) -> Result<(), String> {
        if let Some(scale) = &self.scale {
            if !self.manifests.is_empty()
                || !self.configmaps.is_empty()
                || !self.pin_images.is_empty()
            {
                return Err("with.scale: a step that scales Deployments applies nothing (no manifests, configmaps or pin_images)".into());
            }
            if scale.deployments.is_empty() {
                return Err("with.scale.deployments: name at least one Deployment".into());
            }
            if let Some(bad) = scale.deployments.iter().find(|d| !is_dns_subdomain(d)) {
                return Err(format!(
                    "with.scale.deployments: {bad:?} is not a Deployment name"
                ));
            }
            return Ok(());
        }
        if self.manifests.is_empty() && self.configmaps.is_empty() {
            return Err(
                "a kubernetes step needs with.manifests or with.configmaps (or both)".into(),
            );
        }
        for (key, image) in &self.pin_images {
            if image.trim().is_empty() {
                return Err(format!("with.pin_images.{key}: empty image reference"));
            }
            if key != FIRST_CONTAINER && !is_dns_label(key) {
                return Err(format!(
                    "with.pin_images.{key}: neither `{FIRST_CONTAINER}` nor a container name \
                     (lower-case letters, digits and `-`)"
                ));
            }
        }
        for (i, c) in self.configmaps.iter().enumerate() {
            if !is_dns_subdomain(&c.name) {
                return Err(format!(
                    "with.configmaps[{i}].name: {:?} is not a valid ConfigMap name",
                    c.name
                ));
            }
        }
        if self.field_manager.is_empty() {
            return Err("with.field_manager is empty".into());
        }
        if self.interval.0.is_zero() {
            return Err("with.interval: write a duration above zero, such as 2s".into());
        }
        Ok(())
    }
}

/// A Kubernetes DNS label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A Kubernetes DNS subdomain: DNS labels joined by `.`, at most 253 characters.
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}
