//! The `kubernetes` step kind against a fake API server (tests/common/fake_kube.rs) with the
//! real KernelCI manifests (the snapshot's kernelci-api and kernelci-pipeline repos), digests
//! from a real registry (`docker-registry`) or a fake one that wants a bearer token, the real
//! binary: the production deploy's order and namespaces, pinning of first containers only,
//! the whole pipeline ConfigMap replaced in one write, the trigger applied only after the
//! others rolled out, and failed or stuck rollouts failing the step.

mod common;
#[path = "common/fake_kube.rs"]
mod fake_kube;
#[path = "common/registry.rs"]
mod registry;
#[path = "common/snapshot.rs"]
mod snapshot;
#[path = "common/tls.rs"]
mod tls;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use fake_kube::{Kube, Rollout, Shared};
use registry::Registry;
use serde_json::{Value, json};

const API_NS: &str = "kernelci-api";
const PIPE_NS: &str = "kernelci-pipeline";

/// The pipeline manifests of the real update, in the real order (trigger apart).
const PIPELINE_FILES: [&str; 8] = [
    "lava-callback.yaml",
    "monitor.yaml",
    "nodehandlers.yaml",
    "scheduler-k8s.yaml",
    "scheduler-lava.yaml",
    "scheduler-shell.yaml",
    "tarball.yaml",
    "pipeline-kcidb.yaml",
];

fn kubeconfig(url: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: other\nclusters:\n- name: aks\n  cluster:\n    server: {url}\n- name: other\n  cluster:\n    server: http://127.0.0.1:9\ncontexts:\n- name: kernelci-api-1\n  context:\n    cluster: aks\n    user: deployer\n- name: other\n  context:\n    cluster: other\nusers:\n- name: deployer\n  user:\n    token: {token}\n"
    )
}

/// A production-like plan: the API manifest, then the ConfigMap and the pipeline manifests,
/// then the trigger, each a `kubernetes` step; images from `registry`.
fn production_plan(registry: &str, extra: &str) -> String {
    let manifests: Vec<String> = PIPELINE_FILES
        .iter()
        .map(|f| format!("kube/aks/{f}"))
        .collect();
    let common = "kubeconfig: kubeconfig.yaml, context: kernelci-api-1, interval: 100ms";
    format!(
        r#"version: 1
name: prod
repos:
  kernelci-api: {{ url: repos/kernelci-api.git }}
  kernelci-pipeline: {{ url: repos/kernelci-pipeline.git }}
steps:
  api:
    kind: kubernetes
    always: true
    with: {{ {common}, repo: kernelci-api, namespace: {API_NS}, manifests: [kube/aks/api.yaml],
             pin_images: {{ first_container: "{registry}/kernelci/kernelci:api" }} }}
  pipeline:
    kind: kubernetes
    always: true
    needs: [api]
    with: {{ {common}, repo: kernelci-pipeline, namespace: {PIPE_NS}{extra},
             configmaps: [{{ name: pipeline-configmap, from_dir: config }}],
             manifests: {manifests:?},
             pin_images: {{ first_container: "{registry}/kernelci/kernelci:pipeline",
                            lava-callback: "{registry}/kernelci/kernelci:lava-callback" }} }}
  trigger:
    kind: kubernetes
    always: true
    needs: [api, pipeline]
    with: {{ {common}, repo: kernelci-pipeline, namespace: {PIPE_NS}, manifests: [kube/aks/trigger.yaml],
             pin_images: {{ first_container: "{registry}/kernelci/kernelci:pipeline" }} }}
"#
    )
}

struct Setup {
    fx: Fixture,
    kube: Shared,
    plan: PathBuf,
    registry: Registry,
    /// `api`, `pipeline`, `lava-callback` → the digest the registry reports.
    digests: std::collections::HashMap<&'static str, String>,
}

fn setup(extra: &str, rollouts: &[(&str, Rollout)]) -> Setup {
    let fx = Fixture::new();
    snapshot::repos(&fx, &["kernelci-api", "kernelci-pipeline"]);
    let registry = Registry::start(fx.path());
    let mut digests = std::collections::HashMap::new();
    digests.insert("api", registry.push("kernelci/kernelci", "api", false));
    // A multi-platform tag: an OCI index, found only with its media type in `Accept`.
    digests.insert(
        "pipeline",
        registry.push("kernelci/kernelci", "pipeline", true),
    );
    digests.insert(
        "lava-callback",
        registry.push("kernelci/kernelci", "lava-callback", false),
    );
    let mut kube = Kube::with_namespaces(&[API_NS, PIPE_NS]);
    for (name, rollout) in rollouts {
        kube.rollouts.insert(name.to_string(), rollout.clone());
    }
    let kube = std::sync::Arc::new(std::sync::Mutex::new(kube));
    let url = fake_kube::start(kube.clone());
    std::fs::write(
        fx.path().join("kubeconfig.yaml"),
        kubeconfig(&url, fake_kube::TOKEN),
    )
    .expect("kubeconfig");
    let plan = fx.plan_file(&production_plan(&registry.host, extra));
    Setup {
        fx,
        kube,
        plan,
        registry,
        digests,
    }
}

fn apply(plan: &PathBuf) -> (i32, String) {
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "full", "-f"])
            .arg(plan),
    );
    (code, format!("{out}{err}"))
}

fn deployment_path(ns: &str, name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}")
}

/// The pipeline Deployments of the real manifests, in order.
const PIPELINE_DEPLOYMENTS: [&str; 10] = [
    "lava-callback",
    "monitor",
    "timeout",
    "closing",
    "holdoff",
    "scheduler-k8s",
    "scheduler-lava",
    "scheduler-shell",
    "tarball",
    "pipeline-kcidb",
];

fn expected_apply_order() -> Vec<String> {
    let mut order = vec![
        deployment_path(API_NS, "api"),
        format!("/api/v1/namespaces/{API_NS}/services/api"),
    ];
    for name in PIPELINE_DEPLOYMENTS {
        order.push(deployment_path(PIPE_NS, name));
        if name == "lava-callback" {
            order.push(format!(
                "/api/v1/namespaces/{PIPE_NS}/services/lava-callback"
            ));
        }
    }
    order.push(deployment_path(PIPE_NS, "trigger"));
    order
}

/// The base names of every file the snapshot lists under the pipeline's config/.
fn config_listing() -> Vec<String> {
    let text =
        std::fs::read_to_string(snapshot::dir().join("kernelci-pipeline/config-listing.txt"))
            .expect("config listing");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.rsplit('/').next().expect("path").to_string())
        .collect()
}

#[test]
fn production_order_pins_first_containers_and_waits_for_rollouts_before_the_trigger() {
    let s = setup(
        "",
        &[(
            "kernelci-pipeline/monitor",
            Rollout::After(Duration::from_millis(1500)),
        )],
    );
    // The ConfigMap as the old deploy's `kubectl create` left it, with a file since removed.
    let configmap = format!("/api/v1/namespaces/{PIPE_NS}/configmaps/pipeline-configmap");
    s.kube.lock().expect("kube").objects.insert(
        configmap.clone(),
        json!({ "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "pipeline-configmap", "namespace": PIPE_NS, "resourceVersion": "7",
                              "managedFields": [{ "manager": "kubectl-create", "operation": "Update" }] },
                "data": { "old-removed.yaml": "x: 1\n", "pipeline.yaml": "stale\n" } }),
    );
    let (code, out) = apply(&s.plan);
    assert_eq!(code, 0, "{out}");
    let kube = s.kube.lock().expect("kube");

    // Every apply is a server-side apply by kcideploy, forced, in the real order.
    let patches: Vec<&fake_kube::Call> =
        kube.calls.iter().filter(|c| c.method == "PATCH").collect();
    for call in &patches {
        assert_eq!(
            call.content_type, "application/apply-patch+yaml",
            "{}",
            call.path
        );
        assert_eq!(
            call.query.get("fieldManager").map(String::as_str),
            Some("kcideploy")
        );
        assert_eq!(call.query.get("force").map(String::as_str), Some("true"));
    }
    let order: Vec<String> = patches.iter().map(|c| c.path.clone()).collect();
    assert_eq!(order, expected_apply_order());

    // First containers pinned to the registry's digests; init containers as written.
    let pinned = |tag: &str| {
        format!(
            "{}/kernelci/kernelci:{tag}@{}",
            s.registry.host, s.digests[tag]
        )
    };
    let api = &kube.objects[&deployment_path(API_NS, "api")];
    assert_eq!(
        api["spec"]["template"]["spec"]["containers"][0]["image"],
        pinned("api")
    );
    assert_eq!(
        api["spec"]["template"]["spec"]["initContainers"][0]["image"],
        "busybox"
    );
    for name in PIPELINE_DEPLOYMENTS.iter().chain(&["trigger"]) {
        let d = kube.deployment(&format!("{PIPE_NS}/{name}")).expect(name);
        let tag = if *name == "lava-callback" {
            "lava-callback"
        } else {
            "pipeline"
        };
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            pinned(tag),
            "{name}"
        );
        for init in d["spec"]["template"]["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let image = init["image"].as_str().expect("image");
            assert!(
                image == "curlimages/curl:latest" || image == "kernelci/kernelci:pipeline",
                "{name}: init container {} was changed to {image}",
                init["name"]
            );
        }
    }
    let k8s = kube
        .deployment("kernelci-pipeline/scheduler-k8s")
        .expect("scheduler-k8s");
    assert_eq!(
        k8s["spec"]["template"]["spec"]["initContainers"][1]["image"],
        "kernelci/kernelci:pipeline"
    );
    // scheduler-shell.yaml writes `initContainers` twice: the last one counts, as with kubectl.
    let shell = kube
        .deployment("kernelci-pipeline/scheduler-shell")
        .expect("scheduler-shell");
    assert_eq!(
        shell["spec"]["template"]["spec"]["initContainers"][0]["name"],
        "credentials"
    );
    assert!(
        out.contains("scheduler-shell.yaml:75:7: key `initContainers` is written twice"),
        "{out}"
    );

    // The ConfigMap holds every file of the pipeline's config/, and only them, replaced
    // in one write (a PUT of the object read), never deleted.
    let cm = &kube.objects[&configmap];
    let mut keys: Vec<String> = cm["data"]
        .as_object()
        .expect("data")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    let mut listing = config_listing();
    listing.sort();
    assert_eq!(listing.len(), 80);
    assert_eq!(keys, listing);
    assert!(
        kube.paths("DELETE").is_empty(),
        "{:?}",
        kube.paths("DELETE")
    );
    assert_eq!(kube.paths("PUT"), [configmap.as_str()]);
    let put_at = kube
        .calls
        .iter()
        .find(|c| c.method == "PUT")
        .expect("put")
        .at;
    let first_pipeline_patch = patches
        .iter()
        .find(|c| c.path.contains(PIPE_NS))
        .expect("patch")
        .at;
    assert!(
        put_at < first_pipeline_patch,
        "the ConfigMap goes before the manifests"
    );
    assert_eq!(
        cm["data"]["kernelci.toml"],
        String::from_utf8(snapshot::content(
            "kernelci-pipeline",
            "config/kernelci.toml"
        ))
        .expect("utf8")
    );

    // The trigger is applied only after every other Deployment rolled out, the slow one too.
    let trigger_at = patches.last().expect("trigger").at;
    let monitor_ready = kube.ready_at["kernelci-pipeline/monitor"];
    assert!(monitor_ready < trigger_at);
    for (name, ready) in &kube.ready_at {
        if name != "kernelci-pipeline/trigger" {
            assert!(
                *ready < trigger_at,
                "{name} rolled out after the trigger was applied"
            );
        }
    }
    let monitor_applied = patches
        .iter()
        .find(|c| c.path.ends_with("/monitor"))
        .expect("monitor")
        .at;
    assert!(trigger_at.duration_since(monitor_applied) >= Duration::from_millis(1500));

    // The log shows tag → digest; state records every pin for a later rollback.
    assert!(
        out.contains(&format!(
            "kernelci/kernelci:pipeline → {}",
            s.digests["pipeline"]
        )),
        "{out}"
    );
    drop(kube);
    let state =
        s.fx.backend("prod")
            .read()
            .expect("state")
            .expect("state exists");
    let images = &state.steps["pipeline"].outputs.as_ref().expect("outputs")["images"];
    let monitor = images
        .as_array()
        .expect("images")
        .iter()
        .find(|i| i["deployment"] == "kernelci-pipeline/monitor")
        .expect("monitor pin");
    assert_eq!(
        monitor["digest"],
        Value::String(s.digests["pipeline"].clone())
    );
    assert_eq!(
        monitor["tag"],
        format!("{}/kernelci/kernelci:pipeline", s.registry.host)
    );
}

#[test]
fn a_rollout_that_fails_fails_its_step_with_the_condition_and_the_trigger_is_not_applied() {
    let s = setup("", &[("kernelci-pipeline/monitor", Rollout::Never)]);
    let (code, out) = apply(&s.plan);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Deployment kernelci-pipeline/monitor exceeded its progress deadline: ReplicaSet \"monitor-6c9d5f7b8d\" has timed out progressing."),
        "{out}"
    );
    let kube = s.kube.lock().expect("kube");
    let patches = kube.paths("PATCH");
    assert!(patches.contains(&deployment_path(PIPE_NS, "pipeline-kcidb")));
    assert!(
        !patches.contains(&deployment_path(PIPE_NS, "trigger")),
        "{patches:?}"
    );
}

#[test]
fn a_rollout_that_never_finishes_fails_after_rollout_timeout_naming_the_deployment() {
    let s = setup(
        ", rollout_timeout: 1s",
        &[("kernelci-pipeline/scheduler-lava", Rollout::Stuck)],
    );
    let (code, out) = apply(&s.plan);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("1 of 10 Deployments did not roll out within 1s: Deployment kernelci-pipeline/scheduler-lava: 0 of 1 updated replicas available; Available=False (MinimumReplicasUnavailable): Deployment does not have minimum availability."),
        "{out}"
    );
    let kube = s.kube.lock().expect("kube");
    assert!(
        !kube
            .paths("PATCH")
            .contains(&deployment_path(PIPE_NS, "trigger"))
    );
}

/// A fixture with a small repo (plans need one), a fake cluster with `namespaces`, a
/// kubeconfig for it, and these files beside the plan file.
fn local(namespaces: &[&str], files: &[(&str, &str)]) -> (Fixture, Shared) {
    let fx = Fixture::new();
    fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let kube = std::sync::Arc::new(std::sync::Mutex::new(Kube::with_namespaces(namespaces)));
    let url = fake_kube::start(kube.clone());
    std::fs::write(
        fx.path().join("kubeconfig.yaml"),
        kubeconfig(&url, fake_kube::TOKEN),
    )
    .expect("kubeconfig");
    for (path, text) in files {
        let path = fx.path().join(path);
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    (fx, kube)
}

/// A plan whose one step `deploy` has these `with:` settings (and the kubeconfig).
fn one_step(with: &str) -> String {
    format!(
        r#"version: 1
name: k
repos:
  pipe: {{ url: repos/pipe.git, pending: {{ branches: "pr/*" }} }}
components:
  config: {{ repo: pipe, paths: ["config/**"] }}
steps:
  deploy:
    kind: kubernetes
    on: [config]
    with: {{ kubeconfig: kubeconfig.yaml, context: kernelci-api-1, interval: 100ms, {with} }}
"#
    )
}

const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  template:\n    spec:\n      initContainers:\n        - name: init\n          image: busybox\n      containers:\n        - name: web\n          image: nginx:1\n        - name: sidecar\n          image: envoy:1\n";

fn writes(kube: &Shared) -> Vec<String> {
    let kube = kube.lock().expect("kube");
    kube.calls
        .iter()
        .filter(|c| c.method != "GET")
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

#[test]
fn duplicate_base_names_are_refused_naming_both_files_before_anything_is_written() {
    let (fx, kube) = local(
        &["ns"],
        &[
            ("cfg/trees/x.yaml", "a: 1\n"),
            ("cfg/runtime/x.yaml", "b: 2\n"),
            ("cfg/top.yaml", "c: 3\n"),
            ("web.yaml", WEB),
        ],
    );
    let plan = fx.plan_file(&one_step(
        "namespace: ns, manifests: [web.yaml], configmaps: [{ name: cfg, from_dir: cfg }]",
    ));
    let (code, out) = apply(&plan);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "cfg: cfg/runtime/x.yaml and cfg/trees/x.yaml have the same base name `x.yaml`"
        ),
        "{out}"
    );
    assert!(writes(&kube).is_empty(), "{:?}", writes(&kube));
}

#[test]
fn a_configmap_is_created_then_replaced_whole_and_never_deleted() {
    let (fx, kube) = local(
        &["ns"],
        &[
            ("cfg/trees/a.yaml", "a: 1\n"),
            ("cfg/b.yaml", "b: 2\n"),
            ("cfg/bin.dat", "\u{0}"),
        ],
    );
    std::fs::write(fx.path().join("cfg/bin.dat"), [0xff, 0x00, 0xfe]).expect("binary");
    let plan = fx.plan_file(
        &one_step("namespace: ns, configmaps: [{ name: cfg, from_dir: cfg }]")
            .replace("on: [config]", "always: true"),
    );
    let path = "/api/v1/namespaces/ns/configmaps/cfg";
    let (code, out) = apply(&plan);
    assert_eq!(code, 0, "{out}");
    {
        let k = kube.lock().expect("kube");
        let cm = &k.objects[path];
        assert_eq!(
            cm["data"],
            json!({ "a.yaml": "a: 1\n", "b.yaml": "b: 2\n" })
        );
        assert_eq!(cm["binaryData"], json!({ "bin.dat": "/wD+" }));
    }
    // A file goes, another changes: the next apply replaces the whole map in one PUT.
    std::fs::remove_file(fx.path().join("cfg/trees/a.yaml")).expect("rm");
    std::fs::write(fx.path().join("cfg/b.yaml"), "b: 3\n").expect("write");
    let (code, out) = apply(&plan);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ConfigMap ns/cfg: replaced (2 keys from cfg)"),
        "{out}"
    );
    let k = kube.lock().expect("kube");
    assert_eq!(k.objects[path]["data"], json!({ "b.yaml": "b: 3\n" }));
    assert_eq!(k.paths("POST"), ["/api/v1/namespaces/ns/configmaps"]);
    assert_eq!(k.paths("PUT"), [path]);
    assert!(k.paths("DELETE").is_empty());
}

#[test]
fn objects_outside_the_step_namespace_or_of_unknown_kinds_stop_the_step_before_any_write() {
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n";
    let elsewhere = WEB.replace("  name: web\n", "  name: web\n  namespace: other\n");
    let (fx, kube) = local(
        &["ns", "other"],
        &[
            ("web.yaml", WEB),
            ("widget.yaml", widget),
            ("elsewhere.yaml", &elsewhere),
        ],
    );
    let plan = fx.plan_file(&one_step(
        "namespace: ns, manifests: [web.yaml, widget.yaml]",
    ));
    let (code, out) = apply(&plan);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("widget.yaml:1: the cluster at 127.0.0.1:"),
        "{out}"
    );
    assert!(
        out.contains("does not serve example.com/v1 (GET /apis/example.com/v1: 404)"),
        "{out}"
    );
    let plan = fx.plan_file(&one_step(
        "namespace: ns, manifests: [web.yaml, elsewhere.yaml]",
    ));
    let (code, out) = apply(&plan);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "elsewhere.yaml:1: Deployment web is in namespace other, but the step deploys to ns"
        ),
        "{out}"
    );
    assert!(writes(&kube).is_empty(), "{:?}", writes(&kube));
}

fn refreshed_plan(plan: &std::path::Path) -> (i32, String) {
    let (code, out, err) = output(
        kcideploy()
            .args([
                "plan",
                "-refresh",
                "-detailed-exitcode",
                "--cycle",
                "partial",
                "-f",
            ])
            .arg(plan),
    );
    (code, format!("{out}{err}"))
}

#[test]
fn pins_come_from_a_registry_that_wants_a_bearer_token_and_refresh_sees_live_changes() {
    let (fx, kube) = local(&["ns"], &[("web.yaml", WEB), ("cfg/a.yaml", "a: 1\n")]);
    let digest = format!("sha256:{}", "ab".repeat(32));
    let registry = std::sync::Arc::new(std::sync::Mutex::new(registry::TokenRegistry {
        user: "deploy-bot".into(),
        password: "s3cret-registry-pw".into(),
        manifests: [("team/web:1".to_string(), digest.clone())].into(),
        ..Default::default()
    }));
    let host = registry::start_token_registry(registry.clone());
    let plan = fx.plan_file(&one_step(&format!(
        "namespace: ns, manifests: [web.yaml], configmaps: [{{ name: cfg, from_dir: cfg }}], pin_images: {{ web: \"{host}/team/web:1\" }}"
    )));
    // Without credentials the token service refuses, and the step says where and why.
    let (code, out) = apply(&plan);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("cannot resolve team/web:1 in registry {host}: the token service 127.0.0.1 answered 401 Unauthorized")),
        "{out}"
    );
    assert!(writes(&kube).is_empty());
    registry.lock().expect("registry").requests.clear();
    let (code, out, err) = output(
        kcideploy()
            .env("KCIDEPLOY_REGISTRY_USERNAME", "deploy-bot")
            .env("KCIDEPLOY_REGISTRY_PASSWORD", "s3cret-registry-pw")
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("s3cret") && !err.contains("s3cret"));
    {
        let reg = registry.lock().expect("registry");
        let seen: Vec<(String, bool)> = reg.requests.clone();
        assert_eq!(
            seen,
            [
                ("HEAD /v2/team/web/manifests/1".to_string(), false),
                ("GET /token".to_string(), true),
                ("HEAD /v2/team/web/manifests/1".to_string(), true),
            ]
        );
        for media_type in [
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ] {
            assert!(reg.accept[0].contains(media_type), "{}", reg.accept[0]);
        }
    }
    let path = deployment_path("ns", "web");
    {
        let k = kube.lock().expect("kube");
        let spec = &k.objects[&path]["spec"]["template"]["spec"];
        assert_eq!(
            spec["containers"][0]["image"],
            format!("{host}/team/web:1@{digest}")
        );
        assert_eq!(
            spec["containers"][1]["image"], "envoy:1",
            "only the container named"
        );
        assert_eq!(spec["initContainers"][0]["image"], "busybox");
    }

    let (code, out) = refreshed_plan(&plan);
    assert_eq!(code, 0, "as applied: nothing to do\n{out}");
    let edit = |f: &dyn Fn(&mut Value)| {
        f(kube
            .lock()
            .expect("kube")
            .objects
            .get_mut(&path)
            .expect("web"));
    };
    edit(&|d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2"));
    let (code, out) = refreshed_plan(&plan);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("drift: Deployment ns/web container web runs nginx:2 instead of the pinned {host}/team/web:1@{digest}")),
        "{out}"
    );
    edit(&|d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!(format!("{host}/team/web:1@{digest}"))
    });
    kube.lock()
        .expect("kube")
        .objects
        .get_mut("/api/v1/namespaces/ns/configmaps/cfg")
        .expect("cm")["data"]["a.yaml"] = json!("edited by hand\n");
    let (code, out) = refreshed_plan(&plan);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("drift: ConfigMap ns/cfg was changed since it was applied"),
        "{out}"
    );
    kube.lock().expect("kube").objects.clear();
    let (code, out) = refreshed_plan(&plan);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("drift: Deployment ns/web no longer exists"),
        "{out}"
    );
}

#[test]
fn credentials_from_an_exec_plugin_work_and_a_refused_token_is_not_shown() {
    let (fx, kube) = local(&["ns"], &[("web.yaml", WEB)]);
    let url = std::fs::read_to_string(fx.path().join("kubeconfig.yaml"))
        .expect("kubeconfig")
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("server: http://127.0.0.1:")
                .filter(|p| *p != "9")
                .map(str::to_string)
        })
        .expect("server");
    let url = format!("http://127.0.0.1:{url}");
    // A wrong token: refused by the server, never printed.
    std::fs::write(
        fx.path().join("kubeconfig.yaml"),
        kubeconfig(&url, "wrong-token-XYZ"),
    )
    .expect("write");
    let plan = fx.plan_file(&one_step("namespace: ns, manifests: [web.yaml]"));
    let (code, out) = apply(&plan);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("401 Unauthorized: Unauthorized: Unauthorized"),
        "{out}"
    );
    assert!(out.contains("GET /apis/apps/v1 on 127.0.0.1:"), "{out}");
    assert!(!out.contains("wrong-token-XYZ"), "{out}");
    // An exec plugin (as kubelogin is on AKS) that prints an ExecCredential.
    let script = format!(
        "#!/bin/sh\ntest \"$KUBERNETES_EXEC_INFO\" != \"\" || exit 3\necho '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{}\"}}}}'\n",
        fake_kube::TOKEN
    );
    let plugin = fx.path().join("bin/cred.sh");
    std::fs::create_dir_all(plugin.parent().expect("dir")).expect("mkdir");
    std::fs::write(&plugin, script).expect("plugin");
    let mut perms = std::fs::metadata(&plugin).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&plugin, perms).expect("chmod");
    let with_exec = kubeconfig(&url, "unused").replace(
        "    token: unused\n",
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ./bin/cred.sh\n      interactiveMode: Never\n",
    );
    std::fs::write(fx.path().join("kubeconfig.yaml"), with_exec).expect("write");
    let (code, out) = apply(&plan);
    assert_eq!(code, 0, "{out}");
    assert!(
        kube.lock()
            .expect("kube")
            .paths("PATCH")
            .contains(&deployment_path("ns", "web"))
    );
    assert!(!out.contains(fake_kube::TOKEN), "{out}");
}

#[test]
fn a_cluster_ca_and_a_client_certificate_from_the_kubeconfig_as_aks_gives_them() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (fx, _) = local(&["ns"], &[("web.yaml", WEB)]);
    let pki = tls::Pki::make(&fx.path().join("pki"));
    let mut cluster = Kube::with_namespaces(&["ns"]);
    cluster.token = None; // the client certificate is the credential
    let kube = std::sync::Arc::new(std::sync::Mutex::new(cluster));
    let url = tls::serve_tls(fake_kube::router(kube.clone()), &pki);
    let config = |ca: bool, cert: bool| {
        let mut text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: aks\nclusters:\n- name: aks\n  cluster:\n    server: {url}\n"
        );
        if ca {
            text.push_str(&format!(
                "    certificate-authority-data: {}\n",
                b64(&pki.ca)
            ));
        }
        text.push_str("contexts:\n- name: aks\n  context:\n    cluster: aks\n    user: admin\nusers:\n- name: admin\n  user:\n");
        if cert {
            text.push_str(&format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&pki.client_cert),
                b64(&pki.client_key)
            ));
        } else {
            text.push_str("    token: none\n");
        }
        std::fs::write(fx.path().join("kubeconfig.yaml"), text).expect("kubeconfig");
    };
    let plan = fx.plan_file(
        &one_step("namespace: ns, manifests: [web.yaml]").replace("context: kernelci-api-1, ", ""),
    );
    // The cluster's CA is not a public one: without it, the server is not trusted.
    config(false, true);
    let (code, out) = apply(&plan);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("GET /apis/apps/v1 on 127.0.0.1:"), "{out}");
    assert!(
        out.contains("invalid peer certificate: UnknownIssuer"),
        "{out}"
    );
    // Without a client certificate the server hangs up.
    config(true, false);
    let (code, out) = apply(&plan);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("received fatal alert: CertificateRequired"),
        "{out}"
    );
    assert!(
        kube.lock().expect("kube").calls.is_empty(),
        "no request got through"
    );
    config(true, true);
    let (code, out) = apply(&plan);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        kube.lock().expect("kube").paths("PATCH"),
        [deployment_path("ns", "web")]
    );
    assert!(!out.contains(&b64(&pki.client_key)[..40]), "{out}");
}

#[test]
fn settings_are_checked_when_the_plan_file_loads() {
    let fx = Fixture::new();
    let plan = fx.plan_file(
        r#"version: 1
name: k
repos:
  pipe: { url: repos/pipe.git }
steps:
  a: { kind: kubernetes, with: { manifests: [a.yaml], pin_images: { First_Container: "x:1" } } }
  b: { kind: kubernetes, with: { namespace: ns } }
  c: { kind: kubernetes, with: { configmaps: [{ name: Pipeline_Config, from_dir: config }] } }
  d: { kind: kubernetes, with: { manifests: [a.yaml], repo: nope } }
  e: { kind: kubernetes, with: { manifests: [a.yaml], rollout_timout: 5m } }
"#,
    );
    let (code, out, err) = output(kcideploy().args(["validate", "-f"]).arg(&plan));
    assert_eq!(code, 1, "{out}{err}");
    for expected in [
        "plan.yaml:7:32: step `a` (kubernetes): with.pin_images.First_Container: neither `first_container` nor a container name",
        "plan.yaml:8:32: step `b` (kubernetes): a kubernetes step needs with.manifests or with.configmaps (or both)",
        "with.configmaps[0].name: \"Pipeline_Config\" is not a valid ConfigMap name",
        "step `d`: with.repo names unknown repo `nope`",
        "step `e` (kubernetes): with.rollout_timout: unknown field `rollout_timout`",
    ] {
        assert!(
            err.contains(expected) || out.contains(expected),
            "{expected}\n{out}{err}"
        );
    }
}

#[test]
fn a_registry_or_api_server_that_does_not_answer_fails_within_its_timeout() {
    // Connections are accepted (by the kernel's backlog) and never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let (fx, _) = local(&["ns"], &[("web.yaml", WEB)]);
    let text = one_step(&format!(
        "namespace: ns, manifests: [web.yaml], pin_images: {{ web: \"127.0.0.1:{port}/team/web:1\" }}"
    ))
    .replace("steps:\n", "timeouts: { registry: 1s, kubernetes: 1s }\nsteps:\n");
    let plan = fx.plan_file(&text);
    let (code, out) = apply(&plan);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("cannot resolve team/web:1 in registry 127.0.0.1:{port}: timed out: no answer within 1s (timeouts.registry)")),
        "{out}"
    );
    let kubeconfig = kubeconfig(&format!("http://127.0.0.1:{port}"), fake_kube::TOKEN);
    std::fs::write(fx.path().join("kubeconfig.yaml"), kubeconfig).expect("kubeconfig");
    let plan = fx.plan_file(&text.replace(
        &format!(", pin_images: {{ web: \"127.0.0.1:{port}/team/web:1\" }}"),
        "",
    ));
    let (code, out) = apply(&plan);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("GET /apis/apps/v1 on 127.0.0.1:{port}: timed out: no answer within 1s (timeouts.kubernetes)")),
        "{out}"
    );
    drop(silent);
}

#[test]
fn a_saved_plan_deploys_the_digests_it_showed_even_when_the_tag_moved_since() {
    let s = setup("", &[]);
    let saved = s.fx.path().join("saved.json");
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "--cycle", "full", "-out"])
            .arg(&saved)
            .arg("-f")
            .arg(&s.plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    let planned = &s.digests["api"];
    assert!(
        out.contains(&format!("pin_images.first_container.digest: {planned}")),
        "{out}"
    );
    // The tag moves after the review (a rebuild pushed a new image).
    s.registry.push("kernelci/kernelci", "api-next", false);
    let moved = s.registry.retag("kernelci/kernelci", "api-next", "api");
    assert_ne!(&moved, planned);
    let (code, out, err) = output(kcideploy().args(["apply"]).arg(&saved));
    assert_eq!(code, 0, "{out}{err}");
    let image = |kube: &Shared| {
        kube.lock().expect("kube").objects[&deployment_path(API_NS, "api")]["spec"]["template"]
            ["spec"]["containers"][0]["image"]
            .clone()
    };
    assert_eq!(
        image(&s.kube),
        format!("{}/kernelci/kernelci:api@{planned}", s.registry.host),
        "what the plan showed is what deploys"
    );
    // A fresh plan-and-apply sees the moved tag, and shows it as the change it is; the
    // other steps' digests did not move and are no change.
    let (code, out) = apply(&s.plan);
    assert_eq!(code, 0, "{out}");
    let plan_text = out.split("Plan:").next().expect("the plan");
    assert!(
        plan_text.contains("~ with.pin_images.first_container.digest:")
            && plan_text.contains(moved.as_str())
            && plan_text.contains(planned.as_str()),
        "{out}"
    );
    assert_eq!(
        plan_text.matches("pin_images").count(),
        1,
        "only the api's pin changed: {plan_text}"
    );
    assert_eq!(
        image(&s.kube),
        format!("{}/kernelci/kernelci:api@{moved}", s.registry.host)
    );
}

#[test]
fn a_rollback_pins_the_digests_that_run_deployed_not_what_the_tag_names_now() {
    let s = setup("", &[]);
    let image = |kube: &Shared| {
        kube.lock().expect("kube").objects[&deployment_path(API_NS, "api")]["spec"]["template"]
            ["spec"]["containers"][0]["image"]
            .clone()
    };
    let first = s.digests["api"].clone();
    let (code, out) = apply(&s.plan);
    assert_eq!(code, 0, "{out}");
    let run1 = state_of(&s.fx, "prod")
        .history
        .last()
        .map(|r| r.id.clone())
        .expect("the first run");
    assert_eq!(
        state_of(&s.fx, "prod")
            .history
            .last()
            .map(|r| r.pins["api"]["first_container"].clone()),
        Some(first.clone()),
        "the run records what it pinned"
    );
    // A rebuild moves the tag; the next deploy pins the new digest.
    s.registry.push("kernelci/kernelci", "api-next", false);
    let moved = s.registry.retag("kernelci/kernelci", "api-next", "api");
    let (code, out) = apply(&s.plan);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        image(&s.kube),
        format!("{}/kernelci/kernelci:api@{moved}", s.registry.host)
    );
    // Back to the first run: its digest, although the tag names the new one.
    let (code, out, err) = output(
        kcideploy()
            .args(["rollback", &run1, "-auto-approve", "--cycle", "full", "-f"])
            .arg(&s.plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("pin_images.first_container.digest: {first}"))
            || out.contains(first.as_str()),
        "{out}"
    );
    assert_eq!(
        image(&s.kube),
        format!("{}/kernelci/kernelci:api@{first}", s.registry.host),
        "the rollback deploys what run {run1} deployed"
    );
}
