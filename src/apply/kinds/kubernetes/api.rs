//! The few calls of the Kubernetes API the `kubernetes` kind makes, over HTTP(S) with
//! reqwest: discovery of a group version's resources (kind → resource name, namespaced or
//! not), server-side apply (`PATCH`, `application/apply-patch+yaml`), `GET`, `POST`, `PUT`.
//! Every request has a time limit; errors name the method, the path, the server and the
//! API's own `Status` message.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;
use tokio::sync::Mutex;

use super::kubeconfig::Target;

/// The content type of server-side apply.
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// One kind of object the server serves.
#[derive(Debug, Clone)]
pub struct Resource {
    /// `deployments`.
    pub plural: String,
    pub namespaced: bool,
}

/// A failed call: the server's status (0 when there was no answer) and why.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ApiError> for String {
    fn from(e: ApiError) -> String {
        e.message
    }
}

/// A cluster's API.
pub struct Api {
    pub target: Target,
    /// One request's time limit (`timeouts.kubernetes`).
    pub limit: Duration,
    /// Connecting's (`timeouts.connect`), for messages.
    connect: Duration,
    /// Resources by group version (`apps/v1`), as discovered.
    discovered: Mutex<HashMap<String, HashMap<String, Resource>>>,
}

/// `/api/v1` for the core group, `/apis/<group>/<version>` for the others.
fn group_path(api_version: &str) -> String {
    match api_version.contains('/') {
        true => format!("/apis/{api_version}"),
        false => format!("/api/{api_version}"),
    }
}

/// Where an object lives: `/apis/apps/v1/namespaces/ns/deployments/name`.
pub fn object_path(
    api_version: &str,
    resource: &Resource,
    namespace: Option<&str>,
    name: &str,
) -> String {
    let base = group_path(api_version);
    match (resource.namespaced, namespace) {
        (true, Some(ns)) => format!("{base}/namespaces/{ns}/{}/{name}", resource.plural),
        _ => format!("{base}/{}/{name}", resource.plural),
    }
}

impl Api {
    pub fn new(target: Target, limit: Duration, connect: Duration) -> Api {
        Api {
            target,
            limit,
            connect,
            discovered: Mutex::new(HashMap::new()),
        }
    }

    /// The namespace of objects that name none: the step's `namespace`, else the
    /// kubeconfig context's, else `default`.
    pub fn namespace_for(&self, step_namespace: Option<&str>) -> String {
        step_namespace
            .map(str::to_string)
            .or_else(|| self.target.namespace.clone())
            .unwrap_or_else(|| "default".into())
    }

    /// The server's host and port, for messages.
    pub fn host(&self) -> String {
        crate::support::http::host_of(&self.target.server)
    }

    /// One call with a JSON answer; `body` is its content type and bytes.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, ApiError> {
        let url = format!("{}{path_and_query}", self.target.server);
        let path = path_and_query.split('?').next().unwrap_or(path_and_query);
        let what = format!("{method} {path} on {}", self.host());
        let mut request = self
            .target
            .client
            .request(method, &url)
            .header(ACCEPT, "application/json")
            .timeout(self.limit);
        if let Some(auth) = &self.target.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if let Some((content_type, bytes)) = body {
            request = request.header(CONTENT_TYPE, content_type).body(bytes);
        }
        let response = request.send().await.map_err(|e| ApiError {
            status: 0,
            message: format!("{what}: {}", self.no_answer(&e)),
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| ApiError {
            status: status.as_u16(),
            message: format!("{what}: {}", self.no_answer(&e)),
        })?;
        if !status.is_success() {
            return Err(ApiError {
                status: status.as_u16(),
                message: format!("{what}: {status}: {}", status_message(&text)),
            });
        }
        serde_json::from_str(&text).map_err(|_| ApiError {
            status: status.as_u16(),
            message: format!("{what}: the answer is not JSON"),
        })
    }

    /// Why a request got no answer, for people: the time limit and its setting, or the
    /// whole chain of causes.
    fn no_answer(&self, e: &reqwest::Error) -> String {
        crate::support::http::no_answer(e, self.connect, (self.limit, "timeouts.kubernetes"))
    }

    /// The resource serving `kind` in `api_version` (discovered once per group version).
    pub async fn resource(&self, api_version: &str, kind: &str) -> Result<Resource, String> {
        let mut discovered = self.discovered.lock().await;
        if !discovered.contains_key(api_version) {
            let path = group_path(api_version);
            let list = match self.call(Method::GET, &path, None).await {
                Ok(list) => list,
                Err(e) if e.status == 404 => {
                    return Err(format!(
                        "the cluster at {} does not serve {api_version} (GET {path}: 404)",
                        self.host()
                    ));
                }
                Err(e) => return Err(e.message),
            };
            let mut kinds = HashMap::new();
            for r in list["resources"].as_array().into_iter().flatten() {
                let (Some(plural), Some(kind)) = (r["name"].as_str(), r["kind"].as_str()) else {
                    continue;
                };
                if plural.contains('/') {
                    continue; // a subresource (`deployments/status`)
                }
                kinds.insert(
                    kind.to_string(),
                    Resource {
                        plural: plural.to_string(),
                        namespaced: r["namespaced"].as_bool().unwrap_or(false),
                    },
                );
            }
            discovered.insert(api_version.to_string(), kinds);
        }
        discovered
            .get(api_version)
            .and_then(|kinds| kinds.get(kind))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "the cluster at {} serves no kind {kind} in {api_version}",
                    self.host()
                )
            })
    }

    /// Server-side apply of `object` at `path`.
    pub async fn apply(
        &self,
        path: &str,
        object: &Value,
        field_manager: &str,
        force: bool,
    ) -> Result<Value, ApiError> {
        let query = format!(
            "?fieldManager={}&fieldValidation=Strict{}",
            crate::support::text::percent_encode(field_manager),
            if force { "&force=true" } else { "" }
        );
        let body = serde_json::to_vec(object).unwrap_or_default();
        let path_query = format!("{path}{query}");
        self.call(Method::PATCH, &path_query, Some((APPLY_PATCH, body)))
            .await
    }

    /// `GET path`; `None` when there is no such object.
    pub async fn get(&self, path: &str) -> Result<Option<Value>, ApiError> {
        match self.call(Method::GET, path, None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The `message` of a Kubernetes `Status` answer, else the body's start.
fn status_message(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if v["message"].is_string() => {
            let reason = v["reason"]
                .as_str()
                .map(|r| format!("{r}: "))
                .unwrap_or_default();
            crate::support::text::clip(
                &format!("{reason}{}", v["message"].as_str().unwrap_or("")),
                600,
            )
        }
        _ => crate::support::text::clip(body.trim(), 300),
    }
}
