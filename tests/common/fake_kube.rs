//! A fake Kubernetes API server on 127.0.0.1 speaking the real wire format as far as
//! kcideploy uses it: discovery (`/api/v1`, `/apis/<group>/<version>` APIResourceLists with
//! their subresources), server-side apply (`PATCH` with `application/apply-patch+yaml` and a
//! `fieldManager`, refused otherwise with the real server's messages), `GET` (Deployments
//! with a status the test steers), `POST`, `PUT` (guarded by `resourceVersion`) and `DELETE`,
//! `Status` objects for errors, namespaces that must exist, bearer-token authentication.
//! Every call is logged with the time it arrived, so tests can check order and timing.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const TOKEN: &str = "kube-FAKE-TOKEN-0123456789abcdef";

/// How a Deployment's rollout goes after each apply that changes it.
#[derive(Debug, Clone)]
pub enum Rollout {
    /// Rolled out by the first look.
    Immediate,
    /// Rolled out this long after the apply.
    After(Duration),
    /// Fails: `Progressing=False` with reason `ProgressDeadlineExceeded`.
    Never,
    /// Never finishes and never says it failed (the pod crash-loops).
    Stuck,
}

/// One call, as it arrived.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: String,
    pub at: Instant,
}

#[derive(Default)]
pub struct Kube {
    /// Objects by path (`/apis/apps/v1/namespaces/ns/deployments/name`).
    pub objects: BTreeMap<String, Value>,
    pub namespaces: BTreeSet<String>,
    /// Rollout behaviour by `namespace/name` (default: immediate).
    pub rollouts: HashMap<String, Rollout>,
    /// When each Deployment's last changing apply arrived.
    pub applied_at: HashMap<String, Instant>,
    /// When each Deployment was first reported rolled out after its last apply.
    pub ready_at: HashMap<String, Instant>,
    pub calls: Vec<Call>,
    /// `Authorization: Bearer <token>` required when set.
    pub token: Option<String>,
    next_version: u64,
}

pub type Shared = Arc<Mutex<Kube>>;

/// (group version, plural, kind, namespaced).
const RESOURCES: &[(&str, &str, &str, bool)] = &[
    ("v1", "configmaps", "ConfigMap", true),
    ("v1", "services", "Service", true),
    ("v1", "secrets", "Secret", true),
    ("v1", "serviceaccounts", "ServiceAccount", true),
    (
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
    ),
    ("v1", "namespaces", "Namespace", false),
    ("apps/v1", "deployments", "Deployment", true),
    ("apps/v1", "statefulsets", "StatefulSet", true),
    ("apps/v1", "daemonsets", "DaemonSet", true),
    ("batch/v1", "jobs", "Job", true),
    ("batch/v1", "cronjobs", "CronJob", true),
    ("networking.k8s.io/v1", "ingresses", "Ingress", true),
];

impl Kube {
    /// A cluster with these namespaces, requiring [`TOKEN`].
    pub fn with_namespaces(namespaces: &[&str]) -> Kube {
        Kube {
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            token: Some(TOKEN.to_string()),
            ..Default::default()
        }
    }

    /// The calls of `method`, in order, as `path`.
    pub fn paths(&self, method: &str) -> Vec<String> {
        self.calls
            .iter()
            .filter(|c| c.method == method)
            .map(|c| c.path.clone())
            .collect()
    }

    /// A Deployment (`namespace/name`) as stored.
    pub fn deployment(&self, qualified: &str) -> Option<&Value> {
        let (ns, name) = qualified.split_once('/')?;
        self.objects
            .get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"))
    }

    fn version(&mut self) -> String {
        self.next_version += 1;
        (1000 + self.next_version).to_string()
    }
}

pub fn router(shared: Shared) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(shared)
}

pub fn start(shared: Shared) -> String {
    super::common::serve(router(shared))
}

/// A `Status` answer, as the API server sends errors.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn discovery(group_version: &str) -> Option<Value> {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.0 == group_version)
        .flat_map(|(_, plural, kind, namespaced)| {
            let main = json!({
                "name": plural, "singularName": kind.to_lowercase(), "namespaced": namespaced,
                "kind": kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            });
            let status = json!({
                "name": format!("{plural}/status"), "singularName": "", "namespaced": namespaced,
                "kind": kind, "verbs": ["get", "patch", "update"],
            });
            [main, status]
        })
        .collect();
    (!resources.is_empty()).then(|| {
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources })
    })
}

/// What a path names: (group version, plural, namespace, name).
fn parse(path: &str) -> Option<(String, String, Option<String>, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => (v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let s = |x: &&str| Some(x.to_string());
    match rest {
        ["namespaces", ns, plural] => Some((gv, plural.to_string(), s(ns), None)),
        ["namespaces", ns, plural, name] => Some((gv, plural.to_string(), s(ns), s(name))),
        [plural] => Some((gv, plural.to_string(), None, None)),
        [plural, name] => Some((gv, plural.to_string(), None, s(name))),
        _ => None,
    }
}

/// A Deployment's `scale` subresource (`autoscaling/v1` `Scale`): `GET`, and `PATCH` with a
/// JSON merge patch of `spec.replicas`, as `kubectl scale` sends it.
fn scale(
    kube: &mut Kube,
    deployment: &str,
    method: &Method,
    content_type: &str,
    body: &[u8],
) -> Response {
    let Some(object) = kube.objects.get_mut(deployment) else {
        let name = deployment.rsplit('/').next().unwrap_or("");
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("deployments.apps \"{name}\" not found"),
        );
    };
    if method == Method::PATCH {
        if content_type != "application/merge-patch+json" {
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json; got {content_type}"
                ),
            );
        }
        let patch: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let Some(replicas) = patch["spec"]["replicas"].as_i64() else {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "spec.replicas is required",
            );
        };
        object["spec"]["replicas"] = json!(replicas);
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        object["metadata"]["generation"] = json!(generation);
    } else if method != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        );
    }
    let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
    ok(
        StatusCode::OK,
        &json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": { "name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"] },
            "spec": { "replicas": replicas },
            "status": { "replicas": replicas },
        }),
    )
}

/// The rolled-out status of a Deployment, or one of a rollout under way or failed.
fn deployment_status(object: &Value, rollout: &Rollout, since: Duration) -> (Value, bool) {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
    let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
    let name = object["metadata"]["name"].as_str().unwrap_or("x");
    let rs = format!("{name}-6c9d5f7b8d");
    let cond = |t: &str, s: &str, reason: &str, message: String| {
        json!({ "type": t, "status": s, "reason": reason, "message": message,
                "lastUpdateTime": "2020-01-01T00:00:00Z", "lastTransitionTime": "2020-01-01T00:00:00Z" })
    };
    let done = match rollout {
        Rollout::Immediate => true,
        Rollout::After(d) => since >= *d,
        Rollout::Never | Rollout::Stuck => false,
    };
    if done {
        let status = json!({
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
            "conditions": [
                cond("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.".into()),
                cond("Progressing", "True", "NewReplicaSetAvailable", format!("ReplicaSet \"{rs}\" has successfully progressed.")),
            ],
        });
        return (status, true);
    }
    let progressing = match rollout {
        Rollout::Never => cond(
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{rs}\" has timed out progressing."),
        ),
        _ => cond(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs}\" is progressing."),
        ),
    };
    let status = json!({
        "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
        "unavailableReplicas": replicas,
        "conditions": [
            cond("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.".into()),
            progressing,
        ],
    });
    (status, false)
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut kube = shared.lock().expect("fake kube");
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let q = query(&uri);
    kube.calls.push(Call {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: q.clone(),
        content_type: content_type.clone(),
        at: Instant::now(),
    });
    if let Some(token) = &kube.token
        && headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some(&format!("Bearer {token}"))
    {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let path = uri.path().trim_end_matches('/').to_string();
    if method == Method::GET
        && let Some(gv) = path
            .strip_prefix("/api/")
            .or_else(|| path.strip_prefix("/apis/"))
            .filter(|gv| {
                gv.matches('/').count() <= 1 && (path.starts_with("/apis/") == gv.contains('/'))
            })
    {
        return match discovery(gv) {
            Some(list) => ok(StatusCode::OK, &list),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            ),
        };
    }
    if let Some(deployment) = path.strip_suffix("/scale") {
        return scale(&mut kube, deployment, &method, &content_type, &body);
    }
    let Some((gv, plural, ns, name)) = parse(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let Some(&(_, _, kind, namespaced)) = RESOURCES.iter().find(|r| r.0 == gv && r.1 == plural)
    else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    if namespaced != ns.is_some() && name.is_some() {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    if let Some(ns) = &ns
        && !kube.namespaces.contains(ns)
        && method != Method::GET
    {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("namespaces \"{ns}\" not found"),
        );
    }
    let qualified = format!(
        "{}/{}",
        ns.clone().unwrap_or_default(),
        name.clone().unwrap_or_default()
    );
    match method.as_str() {
        "GET" => get(&mut kube, &path, kind, &plural, &qualified),
        "PATCH" => apply(
            &mut kube,
            &path,
            &gv,
            kind,
            &ns,
            &name,
            &content_type,
            &q,
            &body,
        ),
        "PUT" => put(&mut kube, &path, &plural, &name, &body),
        "POST" => post(&mut kube, &path, &plural, &ns, &body),
        "DELETE" => match kube.objects.remove(&path) {
            Some(_) => ok(
                StatusCode::OK,
                &json!({"kind": "Status", "status": "Success"}),
            ),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{plural} \"{}\" not found", name.unwrap_or_default()),
            ),
        },
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
    }
}

fn get(kube: &mut Kube, path: &str, kind: &str, plural: &str, qualified: &str) -> Response {
    let Some(mut object) = kube.objects.get(path).cloned() else {
        let name = qualified.rsplit('/').next().unwrap_or("");
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{plural} \"{name}\" not found"),
        );
    };
    if kind == "Deployment" {
        let rollout = kube
            .rollouts
            .get(qualified)
            .cloned()
            .unwrap_or(Rollout::Immediate);
        let since = kube
            .applied_at
            .get(qualified)
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let (status, done) = deployment_status(&object, &rollout, since);
        object["status"] = status;
        if done && !kube.ready_at.contains_key(qualified) {
            kube.ready_at.insert(qualified.to_string(), Instant::now());
        }
    }
    ok(StatusCode::OK, &object)
}

#[allow(clippy::too_many_arguments)]
fn apply(
    kube: &mut Kube,
    path: &str,
    gv: &str,
    kind: &str,
    ns: &Option<String>,
    name: &Option<String>,
    content_type: &str,
    q: &BTreeMap<String, String>,
    body: &[u8],
) -> Response {
    if content_type != "application/apply-patch+yaml" {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        );
    }
    if q.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "fieldManager is required for apply requests",
        );
    }
    let Some(name) = name else {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        );
    };
    // The body is YAML; JSON is YAML too.
    let Ok(mut applied) = serde_saphyr::from_slice::<Value>(body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "error decoding YAML");
    };
    if applied["apiVersion"] != gv || applied["kind"] != kind {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "the API version in the data ({}) does not match the expected API version ({gv}) or kind",
                applied["apiVersion"]
            ),
        );
    }
    if applied["metadata"]["name"] != name.as_str() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                applied["metadata"]["name"]
            ),
        );
    }
    if let (Some(ns), Some(body_ns)) = (ns, applied["metadata"]["namespace"].as_str())
        && body_ns != ns
    {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        );
    }
    let qualified = format!("{}/{name}", ns.clone().unwrap_or_default());
    let version = kube.version();
    let existing = kube.objects.get(path).cloned();
    let generation = match &existing {
        Some(old) if old["spec"] == applied["spec"] => {
            old["metadata"]["generation"].as_i64().unwrap_or(1)
        }
        Some(old) => old["metadata"]["generation"].as_i64().unwrap_or(1) + 1,
        None => 1,
    };
    let changed = existing
        .as_ref()
        .is_none_or(|old| old["spec"] != applied["spec"]);
    applied["metadata"]["generation"] = json!(generation);
    applied["metadata"]["resourceVersion"] = json!(version);
    applied["metadata"]["uid"] = json!(format!("uid-{name}"));
    applied["metadata"]["managedFields"] =
        json!([{ "manager": q["fieldManager"], "operation": "Apply", "apiVersion": gv }]);
    if kind == "Deployment" && changed {
        kube.applied_at.insert(qualified.clone(), Instant::now());
        kube.ready_at.remove(&qualified);
    }
    kube.objects.insert(path.to_string(), applied.clone());
    let code = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    ok(code, &applied)
}

fn put(kube: &mut Kube, path: &str, plural: &str, name: &Option<String>, body: &[u8]) -> Response {
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "error decoding JSON");
    };
    let name = name.clone().unwrap_or_default();
    let Some(existing) = kube.objects.get(path).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{plural} \"{name}\" not found"),
        );
    };
    let sent = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
    if !sent.is_empty() && existing["metadata"]["resourceVersion"] != sent {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    object["metadata"]["resourceVersion"] = json!(kube.version());
    kube.objects.insert(path.to_string(), object.clone());
    ok(StatusCode::OK, &object)
}

fn post(kube: &mut Kube, path: &str, plural: &str, ns: &Option<String>, body: &[u8]) -> Response {
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "error decoding JSON");
    };
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_string) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "name or generateName is required",
        );
    };
    let _ = ns;
    let at = format!("{path}/{name}");
    if kube.objects.contains_key(&at) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("{plural} \"{name}\" already exists"),
        );
    }
    object["metadata"]["resourceVersion"] = json!(kube.version());
    kube.objects.insert(at, object.clone());
    ok(StatusCode::CREATED, &object)
}
