//! `state adopt` of a `kubernetes` step against the fake API server (tests/common/fake_kube.rs):
//! what it reads back from the cluster is what an apply records (the pinned images with their
//! digests, the ConfigMaps' contents), so `plan -refresh` after it finds nothing; a container
//! not pinned to a digest is `unknown`.

mod common;
#[path = "common/fake_kube.rs"]
mod fake_kube;
#[path = "common/registry.rs"]
mod registry;

use common::*;
use fake_kube::Kube;
use serde_json::json;

const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n        - name: web\n          image: nginx:1\n        - name: sidecar\n          image: envoy:1\n";

fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: aks\nclusters:\n- name: aks\n  cluster:\n    server: {url}\ncontexts:\n- name: aks\n  context:\n    cluster: aks\n    user: deployer\nusers:\n- name: deployer\n  user:\n    token: {}\n",
        fake_kube::TOKEN
    )
}

#[test]
fn an_adopted_kubernetes_step_records_what_an_apply_records() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    kcideploy::gitops::scratch::set_branch(&remote.repo, "staging.kernelci.org", remote.main)
        .expect("staging");
    let kube = std::sync::Arc::new(std::sync::Mutex::new(Kube::with_namespaces(&["ns"])));
    let url = fake_kube::start(kube.clone());
    std::fs::write(fx.path().join("kubeconfig.yaml"), kubeconfig(&url)).expect("kubeconfig");
    std::fs::write(fx.path().join("web.yaml"), WEB).expect("manifest");
    std::fs::create_dir_all(fx.path().join("cfg")).expect("mkdir");
    std::fs::write(fx.path().join("cfg/a.yaml"), "a: 1\n").expect("cfg");
    let digest = format!("sha256:{}", "cd".repeat(32));
    let registry = std::sync::Arc::new(std::sync::Mutex::new(registry::TokenRegistry {
        user: "bot".into(),
        password: "pw".into(),
        manifests: [("team/web:1".to_string(), digest.clone())].into(),
        ..Default::default()
    }));
    let host = registry::start_token_registry(registry);
    let plan = fx.plan_file(&format!(
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
    with: {{ kubeconfig: kubeconfig.yaml, interval: 100ms, namespace: ns, manifests: [web.yaml],
             configmaps: [{{ name: cfg, from_dir: cfg }}], pin_images: {{ web: "{host}/team/web:1" }} }}
"#
    ));
    // What an apply records.
    let (code, out, err) = output(
        kcideploy()
            .env("KCIDEPLOY_REGISTRY_USERNAME", "bot")
            .env("KCIDEPLOY_REGISTRY_PASSWORD", "pw")
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{out}{err}");
    let applied = state_of(&fx, "k").steps["deploy"]
        .outputs
        .clone()
        .expect("outputs");

    // The same cluster, adopted from nothing.
    std::fs::remove_file(fx.path().join(".kcideploy/k.state.json")).expect("forget");
    let adopt = |extra: &[&str]| {
        output(
            kcideploy()
                .args(["state", "adopt", "-auto-approve"])
                .args(extra)
                .arg("-f")
                .arg(&plan),
        )
    };
    let (code, out, err) = adopt(&[]);
    assert_eq!(code, 0, "{out}{err}");
    let adopted = state_of(&fx, "k").steps["deploy"]
        .outputs
        .clone()
        .expect("outputs");
    assert!(adopted.get("unknown").is_none(), "{adopted}");
    assert_eq!(adopted["images"], applied["images"]);
    assert_eq!(adopted["images"][0]["digest"], digest.as_str());
    assert_eq!(
        adopted["configmaps"][0]["sha256"],
        applied["configmaps"][0]["sha256"]
    );
    assert_eq!(adopted["server"], applied["server"]);
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
            .arg(&plan),
    );
    assert_eq!(code, 0, "nothing to do, no drift\n{out}{err}");

    // A container running an image by tag, not pinned: unknown.
    kube.lock()
        .expect("kube")
        .objects
        .get_mut("/apis/apps/v1/namespaces/ns/deployments/web")
        .expect("web")["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    let (code, out, err) = adopt(&["-replace-state"]);
    assert_eq!(code, 0, "{out}{err}");
    let outputs = state_of(&fx, "k").steps["deploy"]
        .outputs
        .clone()
        .expect("outputs");
    assert_eq!(
        outputs["unknown"],
        "Deployment ns/web container web runs nginx:2, not pinned to a digest"
    );
}
