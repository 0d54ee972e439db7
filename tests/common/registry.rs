//! Registries for digest resolution: a real one (Debian's `docker-registry`, the
//! distribution registry, started on a free port of 127.0.0.1 and stopped on drop) that
//! images are pushed to through its HTTP API, so its digests are the real thing without a
//! Docker daemon; and a fake on 127.0.0.1 that asks for a bearer token from its own token
//! service (basic credentials), as Docker Hub and ghcr.io do.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// A `docker-registry` process we started.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    child: Child,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt")
}

impl Registry {
    /// Start `docker-registry` with its storage under `dir`.
    pub fn start(dir: &Path) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: warn }}\nstorage: {{ filesystem: {{ rootdirectory: {} }} }}\nhttp: {{ addr: 127.0.0.1:{port} }}\n",
                dir.join("registry-data").display()
            ),
        )
        .expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "docker-registry (Debian package docker-registry; scripts/test.sh installs it)",
            );
        let registry = Registry {
            host: format!("127.0.0.1:{port}"),
            child,
        };
        let start = Instant::now();
        while crate::common::get(&format!("http://{}/v2/", registry.host)).0 != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "docker-registry did not answer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// Upload a blob; its digest.
    async fn blob(&self, client: &reqwest::Client, name: &str, bytes: &[u8]) -> String {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let started = client
            .post(format!("http://{}/v2/{name}/blobs/uploads/", self.host))
            .send()
            .await
            .expect("start upload");
        assert_eq!(started.status().as_u16(), 202, "start upload");
        let location = started.headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        let location = match location.starts_with("http") {
            true => location,
            false => format!("http://{}{location}", self.host),
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = client
            .put(format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("upload");
        assert_eq!(done.status().as_u16(), 201, "upload blob");
        digest
    }

    async fn manifest(
        &self,
        client: &reqwest::Client,
        name: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let response = client
            .put(format!(
                "http://{}/v2/{name}/manifests/{reference}",
                self.host
            ))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("put manifest");
        let status = response.status().as_u16();
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert_eq!(
            status,
            201,
            "put manifest: {}",
            response.text().await.unwrap_or_default()
        );
        assert_eq!(
            digest,
            format!("sha256:{}", hex::encode(Sha256::digest(body)))
        );
        digest
    }

    /// Push a one-layer image as `name:tag` (a Docker v2 manifest), or, with `index`, an OCI
    /// image index naming it (what a multi-platform build pushes). The digest the registry
    /// reports for the tag.
    pub fn push(&self, name: &str, tag: &str, index: bool) -> String {
        let _ = rustls::crypto::ring::default_provider().install_default();
        runtime().block_on(async {
            let client = reqwest::Client::new();
            let config = format!(
                r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"tag":"{tag}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
            );
            let config_digest = self.blob(&client, name, config.as_bytes()).await;
            let layer = format!("layer of {name}:{tag}").into_bytes();
            let layer_digest = self.blob(&client, name, &layer).await;
            let manifest_type = match index {
                true => "application/vnd.oci.image.manifest.v1+json",
                false => "application/vnd.docker.distribution.manifest.v2+json",
            };
            let (config_type, layer_type) = match index {
                true => ("application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip"),
                false => ("application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.diff.tar.gzip"),
            };
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": manifest_type,
                "config": { "mediaType": config_type, "size": config.len(), "digest": config_digest },
                "layers": [{ "mediaType": layer_type, "size": layer.len(), "digest": layer_digest }],
            })
            .to_string();
            if !index {
                return self.manifest(&client, name, tag, manifest_type, manifest.as_bytes()).await;
            }
            let manifest_digest = self
                .manifest(&client, name, &format!("{tag}-amd64"), manifest_type, manifest.as_bytes())
                .await;
            let index_body = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [{
                    "mediaType": manifest_type, "size": manifest.len(), "digest": manifest_digest,
                    "platform": { "architecture": "amd64", "os": "linux" },
                }],
            })
            .to_string();
            self.manifest(&client, name, tag, "application/vnd.oci.image.index.v1+json", index_body.as_bytes())
                .await
        })
    }
}

impl Registry {
    /// Point `name:to` at what `name:from` names (a tag moved, as a rebuild moves it); the
    /// digest `to` now has.
    pub fn retag(&self, name: &str, from: &str, to: &str) -> String {
        let _ = rustls::crypto::ring::default_provider().install_default();
        runtime().block_on(async {
            let client = reqwest::Client::new();
            let got = client
                .get(format!("http://{}/v2/{name}/manifests/{from}", self.host))
                .header(
                    "accept",
                    "application/vnd.docker.distribution.manifest.v2+json",
                )
                .send()
                .await
                .expect("get manifest");
            let media_type = got.headers()["content-type"]
                .to_str()
                .expect("content-type")
                .to_string();
            let body = got.bytes().await.expect("manifest body");
            self.manifest(&client, name, to, &media_type, &body).await
        })
    }
}

/// A registry that wants a bearer token from its token service, which wants basic
/// credentials; it knows the manifests in `manifests` (`name:tag` → digest).
#[derive(Default)]
pub struct TokenRegistry {
    pub user: String,
    pub password: String,
    pub manifests: std::collections::HashMap<String, String>,
    /// `METHOD path` of every request, with whether it carried credentials.
    pub requests: Vec<(String, bool)>,
    pub accept: Vec<String>,
}

pub type SharedRegistry = Arc<Mutex<TokenRegistry>>;
const REGISTRY_TOKEN: &str = "registry-token-abc";

async fn registry_handle(
    State(shared): State<SharedRegistry>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    use base64::Engine;
    let mut reg = shared.lock().expect("registry");
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    reg.requests
        .push((format!("{method} {}", uri.path()), !auth.is_empty()));
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if uri.path() == "/token" {
        let wanted = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", reg.user, reg.password))
        );
        if auth != wanted {
            return (
                StatusCode::UNAUTHORIZED,
                "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}",
            )
                .into_response();
        }
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            format!("{{\"token\":\"{REGISTRY_TOKEN}\"}}"),
        )
            .into_response();
    }
    let Some(rest) = uri.path().strip_prefix("/v2/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some((name, tag)) = rest.split_once("/manifests/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if auth != format!("Bearer {REGISTRY_TOKEN}") {
        let challenge = format!(
            "Bearer realm=\"http://{host}/token\",service=\"fake-registry\",scope=\"repository:{name}:pull\""
        );
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", challenge)],
            "",
        )
            .into_response();
    }
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    reg.accept.push(accept);
    match reg.manifests.get(&format!("{name}:{tag}")) {
        Some(digest) => (
            StatusCode::OK,
            [
                ("docker-content-digest", digest.clone()),
                (
                    "content-type",
                    "application/vnd.oci.image.index.v1+json".to_string(),
                ),
            ],
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Serve a [`TokenRegistry`]; its `host:port`.
pub fn start_token_registry(shared: SharedRegistry) -> String {
    let url = crate::common::serve(
        axum::Router::new()
            .fallback(registry_handle)
            .with_state(shared),
    );
    url.trim_start_matches("http://").to_string()
}
