//! Recreating a container whose image reference now names another image (the tag was moved by
//! a rebuild): a restart would run the old image again. The new container keeps the old one's
//! name, settings, environment, mounts (anonymous volumes included) and networks; what the old
//! image set by default (its `ENV`, `CMD`, labels…) is left for the new image to set.
//!
//! The old container is stopped and renamed aside first, and put back (renamed and started)
//! when the new one cannot be created or started, so a failed recreate leaves the service as
//! it was.

use std::collections::HashMap;
use std::io::Write;

use bollard::Docker;
use bollard::models::{
    ContainerConfig, ContainerCreateBody, ContainerInspectResponse, EndpointSettings, ImageConfig,
    NetworkConnectRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, RenameContainerOptions, StopContainerOptions,
};

use super::StepError;
use super::docker::{failed, short_id};

/// The image reference the container must run (`wanted`, else the one it was created
/// from) and the id that reference names now, when that is not the image the container
/// runs. `None` when they agree, or when the container's own reference names no image any
/// more (a restart is all that can be done then); a `wanted` image that does not exist is an
/// error.
pub(super) async fn moved_image(
    docker: &Docker,
    info: &ContainerInspectResponse,
    wanted: Option<&str>,
) -> Result<Option<(String, String)>, String> {
    let own = info.config.as_ref().and_then(|c| c.image.clone());
    let Some(reference) = wanted.map(str::to_string).or(own) else {
        return Ok(None);
    };
    let Some(running) = info.image.as_deref() else {
        return Ok(None);
    };
    let now = match docker.inspect_image(&reference).await {
        Ok(image) => image.id,
        Err(e) if wanted.is_some() => {
            return Err(format!("the image {reference} to run cannot be found: {e}"));
        }
        Err(_) => None,
    };
    Ok(now.filter(|now| now != running).map(|now| (reference, now)))
}

/// Replace container `name` (as `info` describes it) by a new one from `reference`; the new
/// container's id.
pub(super) async fn recreate(
    docker: &Docker,
    name: &str,
    info: ContainerInspectResponse,
    (reference, new_image): (&str, &str),
    stop_timeout: i32,
    mut log: &std::fs::File,
) -> Result<String, StepError> {
    let old_id = info.id.clone().unwrap_or_default();
    let old_image = match info.image.as_deref() {
        Some(id) => docker.inspect_image(id).await.ok().and_then(|i| i.config),
        None => None,
    };
    let (body, extra_networks) = creation_body(&info, old_image.as_ref(), reference);
    let aside = format!("{name}-kcideploy-replaced-{}", short_id(&old_id));
    let _ = writeln!(
        log,
        "recreate {name}: {reference} now names image {}, the container runs {}",
        short_id(new_image),
        info.image.as_deref().map(short_id).unwrap_or("?")
    );
    docker
        .stop_container(
            &old_id,
            Some(StopContainerOptions {
                t: Some(stop_timeout),
                signal: None,
            }),
        )
        .await
        .map_err(|e| failed(format!("cannot stop container {name}: {e}")))?;
    docker
        .rename_container(
            &old_id,
            RenameContainerOptions {
                name: aside.clone(),
            },
        )
        .await
        .map_err(|e| failed(format!("cannot rename container {name} aside: {e}")))?;
    match create_and_start(docker, name, body, &extra_networks).await {
        Ok(id) => {
            let removed = docker
                .remove_container(
                    &old_id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: false,
                        link: false,
                    }),
                )
                .await;
            if let Err(e) = removed {
                let _ = writeln!(log, "could not remove the old container {aside}: {e}");
            }
            let _ = writeln!(log, "{name} recreated as {}", short_id(&id));
            Ok(id)
        }
        Err(e) => {
            let restored = restore(docker, &old_id, name).await;
            let what = match restored {
                Ok(()) => "the old container runs again".to_string(),
                Err(r) => format!("the old container could not be put back ({r}); it is {aside}"),
            };
            Err(failed(format!(
                "cannot recreate container {name}: {e}; {what}"
            )))
        }
    }
}

/// Create `name` from `body`, connect it to the other networks, start it; its id. A
/// half-made container is removed.
async fn create_and_start(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
    extra_networks: &[(String, EndpointSettings)],
) -> Result<String, String> {
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            }),
            body,
        )
        .await
        .map_err(|e| format!("create: {e}"))?;
    let id = created.id;
    let started = async {
        for (network, endpoint) in extra_networks {
            docker
                .connect_network(
                    network,
                    NetworkConnectRequest {
                        container: id.clone(),
                        endpoint_config: Some(endpoint.clone()),
                    },
                )
                .await
                .map_err(|e| format!("connect to network {network}: {e}"))?;
        }
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| format!("start: {e}"))
    }
    .await;
    match started {
        Ok(()) => Ok(id),
        Err(e) => {
            let _ = docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
            Err(e)
        }
    }
}

/// Put the old container back under its name and start it.
async fn restore(docker: &Docker, old_id: &str, name: &str) -> Result<(), String> {
    docker
        .rename_container(
            old_id,
            RenameContainerOptions {
                name: name.to_string(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    docker
        .start_container(old_id, None)
        .await
        .map_err(|e| e.to_string())
}

/// What to create the new container with: the old container's settings less what its image
/// gave by default, its host settings with anonymous volumes bound by name, and the endpoint
/// of its main network; the other networks to connect it to afterwards.
fn creation_body(
    info: &ContainerInspectResponse,
    old_image: Option<&ImageConfig>,
    reference: &str,
) -> (ContainerCreateBody, Vec<(String, EndpointSettings)>) {
    let mut config = info.config.clone().unwrap_or_default();
    let short = info
        .id
        .as_deref()
        .map(short_id)
        .unwrap_or_default()
        .to_string();
    // Docker names a container's host after its id unless told otherwise.
    if config.hostname.as_deref() == Some(short.as_str()) {
        config.hostname = None;
    }
    let mut host = info.host_config.clone().unwrap_or_default();
    keep_anonymous_volumes(info, &mut host);
    let main_network = host.network_mode.clone().unwrap_or_default();
    let mut networks: Vec<(String, EndpointSettings)> = info
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(network, endpoint)| (network, endpoint_for_new(endpoint, &short)))
        .collect();
    networks.sort_by(|a, b| a.0.cmp(&b.0));
    let main = networks
        .iter()
        .position(|(n, _)| *n == main_network)
        .map(|i| networks.remove(i));
    let networking_config = main.map(|(network, endpoint)| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(network, endpoint)])),
    });
    // Modes that own the network stack leave no other network to join.
    if matches!(main_network.as_str(), "none" | "host") || main_network.starts_with("container:") {
        networks.clear();
    }
    let body = without_image_defaults(config, old_image, reference, host, networking_config);
    (body, networks)
}

/// The endpoint settings a new container keeps: aliases (but the old container's id), links,
/// a static address, driver options.
fn endpoint_for_new(old: EndpointSettings, old_short_id: &str) -> EndpointSettings {
    EndpointSettings {
        aliases: old
            .aliases
            .map(|a| a.into_iter().filter(|x| x != old_short_id).collect()),
        links: old.links,
        ipam_config: old.ipam_config,
        driver_opts: old.driver_opts,
        mac_address: old.mac_address.filter(|m| !m.is_empty()),
        ..Default::default()
    }
}

/// Anonymous volumes (an image's `VOLUME`, `-v /path`) survive as named binds, as
/// docker-compose keeps them when it recreates a service.
fn keep_anonymous_volumes(info: &ContainerInspectResponse, host: &mut bollard::models::HostConfig) {
    let mut binds = host.binds.clone().unwrap_or_default();
    let declared: Vec<String> = binds
        .iter()
        .filter_map(|b| b.split(':').nth(1).map(str::to_string))
        .chain(
            host.mounts
                .iter()
                .flatten()
                .filter_map(|m| m.target.clone()),
        )
        .collect();
    for mount in info.mounts.iter().flatten() {
        let (Some("volume"), Some(volume), Some(dest)) = (
            mount.typ.as_deref(),
            mount.name.as_ref(),
            mount.destination.as_ref(),
        ) else {
            continue;
        };
        if declared.contains(dest) {
            continue;
        }
        let mode = if mount.rw == Some(false) { ":ro" } else { "" };
        binds.push(format!("{volume}:{dest}{mode}"));
    }
    if !binds.is_empty() {
        host.binds = Some(binds);
    }
}

/// The old container's configuration as a creation body for `reference`, without what the
/// old image gave by default (so the new image's defaults apply).
fn without_image_defaults(
    config: ContainerConfig,
    image: Option<&ImageConfig>,
    reference: &str,
    host_config: bollard::models::HostConfig,
    networking_config: Option<NetworkingConfig>,
) -> ContainerCreateBody {
    fn unless_same<T: PartialEq>(value: Option<T>, default: Option<&T>) -> Option<T> {
        match (value, default) {
            (Some(v), Some(d)) if v == *d => None,
            (v, _) => v,
        }
    }
    let image = image.cloned().unwrap_or_default();
    let image_env = image.env.clone().unwrap_or_default();
    let env = config
        .env
        .map(|env| env.into_iter().filter(|e| !image_env.contains(e)).collect());
    let labels = config.labels.map(|labels| {
        let defaults = image.labels.clone().unwrap_or_default();
        labels
            .into_iter()
            .filter(|(k, v)| defaults.get(k) != Some(v))
            .collect()
    });
    // A command given with the old image's entrypoint is the container's own only when one
    // of them differs from the image's.
    let entrypoint = unless_same(config.entrypoint, image.entrypoint.as_ref());
    let cmd = if entrypoint.is_some() {
        config.cmd
    } else {
        unless_same(config.cmd, image.cmd.as_ref())
    };
    ContainerCreateBody {
        hostname: config.hostname,
        domainname: config.domainname,
        user: unless_same(config.user, image.user.as_ref()),
        attach_stdin: config.attach_stdin,
        attach_stdout: config.attach_stdout,
        attach_stderr: config.attach_stderr,
        exposed_ports: unless_same(config.exposed_ports, image.exposed_ports.as_ref()),
        tty: config.tty,
        open_stdin: config.open_stdin,
        stdin_once: config.stdin_once,
        env,
        cmd,
        healthcheck: unless_same(config.healthcheck, image.healthcheck.as_ref()),
        image: Some(reference.to_string()),
        volumes: unless_same(config.volumes, image.volumes.as_ref()),
        working_dir: unless_same(config.working_dir, image.working_dir.as_ref()),
        entrypoint,
        network_disabled: config.network_disabled,
        labels,
        stop_signal: unless_same(config.stop_signal, image.stop_signal.as_ref()),
        stop_timeout: config.stop_timeout,
        shell: unless_same(config.shell, image.shell.as_ref()),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    }
}
