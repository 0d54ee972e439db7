//! `-refresh`: compare what state says each step made with the live system (images and their
//! tags, containers and the image each runs, pushed registry manifests, pushed git branches
//! and tags, the images pinned in Kubernetes Deployments and the ConfigMaps applied). A step whose outcome drifted runs again; the detail says what was found.

use std::collections::BTreeMap;

use super::kinds::docker;
use crate::config::Config;
use crate::config::kinds::KindSettings;
use crate::state::State;

/// A check that could not be made (daemon, registry or git remote unreachable).
#[derive(Debug, thiserror::Error)]
#[error("cannot refresh step `{step}`: {message}")]
pub struct RefreshError {
    pub step: String,
    pub message: String,
}

/// Why each step whose recorded outcome is no longer true must run again.
pub fn drift(config: &Config, state: &State) -> Result<BTreeMap<String, String>, RefreshError> {
    crate::support::rt::block_on(drift_async(config, state))
}

/// [`drift`], on the caller's runtime.
pub async fn drift_async(
    config: &Config,
    state: &State,
) -> Result<BTreeMap<String, String>, RefreshError> {
    let mut found = BTreeMap::new();
    let mut daemons = docker::Daemons::default();
    for (name, record) in &state.steps {
        let Some(outputs) = &record.outputs else {
            continue;
        };
        if !config.file.steps.contains_key(name) {
            continue;
        }
        let err = |message: String| RefreshError {
            step: name.clone(),
            message,
        };
        let detail = match config.settings(name) {
            KindSettings::DockerBuild(_) | KindSettings::ContainerRestart(_) => {
                let docker = daemons.of_step(config, name).await.map_err(err)?;
                docker::drift(docker, outputs).await
            }
            KindSettings::DockerPush(_) => {
                let docker = daemons.of_step(config, name).await.map_err(err)?;
                super::kinds::docker_push_drift(docker, outputs, &config.file.timeouts)
                    .await
                    .map_err(err)?
            }
            KindSettings::GitPush(with) => {
                let url = with.url.clone().or_else(|| {
                    let repo = config.file.repos.get(&with.repo)?;
                    Some(config.repo_url(repo))
                });
                match url {
                    Some(url) => super::kinds::git_push_drift(&url, outputs, &config.file.timeouts)
                        .map_err(err)?,
                    None => None,
                }
            }
            KindSettings::Kubernetes(with) => {
                super::kinds::kubernetes_drift(&with, config, outputs)
                    .await
                    .map_err(err)?
            }
            _ => None,
        };
        if let Some(detail) = detail {
            found.insert(name.clone(), detail);
        }
    }
    Ok(found)
}
