//! Stop the line on a production regression (#23 item 3): a `when_failed` step runs only
//! when the result check failed; it scales the trigger to zero through the fake Kubernetes
//! API (the `scale` subresource, as `kubectl scale`), the chat is told with the way back
//! (`rollback`, `resume`), and `kcideploy resume` gives the trigger its replicas again.

mod common;
#[path = "common/fake_kernelci.rs"]
mod fake_kernelci;
#[path = "common/fake_kube.rs"]
mod fake_kube;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use fake_kernelci::{FakeKci, SharedKci};
use serde_json::json;

const TRIGGER: &str = "/apis/apps/v1/namespaces/kernelci-pipeline/deployments/trigger";

struct Setup {
    fx: Fixture,
    kci: SharedKci,
    kube: fake_kube::Shared,
    chat: Arc<Mutex<Vec<serde_json::Value>>>,
    chat_url: String,
    plan: std::path::PathBuf,
}

fn setup() -> Setup {
    let fx = Fixture::new();
    fx.repo("core", &[("README", Some("core\n"))]);
    let kci: SharedKci = Arc::new(Mutex::new(FakeKci::default()));
    let api = fake_kernelci::start(kci.clone());
    {
        let mut k = kci.lock().expect("kci");
        let before = k.tree("mainline", "master", "aaaa0000", (38, 2));
        k.backdate(
            &before,
            jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24),
        );
    }
    let mut kube = fake_kube::Kube::with_namespaces(&["kernelci-pipeline"]);
    kube.objects.insert(
        TRIGGER.into(),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "trigger", "namespace": "kernelci-pipeline", "generation": 1},
               "spec": {"replicas": 1}}),
    );
    let kube = Arc::new(Mutex::new(kube));
    let url = fake_kube::start(kube.clone());
    std::fs::write(
        fx.path().join("kubeconfig.yaml"),
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: aks\nclusters:\n- name: aks\n  cluster:\n    server: {url}\ncontexts:\n- name: aks\n  context:\n    cluster: aks\n    user: deployer\nusers:\n- name: deployer\n  user:\n    token: {}\n",
            fake_kube::TOKEN
        ),
    )
    .expect("kubeconfig");
    let chat = Arc::new(Mutex::new(Vec::new()));
    let got = chat.clone();
    let chat_url = serve(
        axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let got = got.clone();
            async move {
                got.lock()
                    .expect("chat")
                    .push(serde_json::from_slice(&body).unwrap_or_default());
                "{}"
            }
        }),
    );
    let plan = fx.plan_file(&format!(
        r#"version: 1
name: prod
kernelci: {{ api_url: "{api}" }}
repos:
  core: {{ url: repos/core.git }}
notify:
  webhooks: [{{ kind: discord, url_env: KCI_TEST_DISCORD }}]
steps:
  check-results:
    kind: pipe_cleaner
    always: true
    timeout: 30s
    with:
      phase: watch
      watch: [{{ tree: mainline, branch: master }}]
      checkout_timeout: 5s
      interval: 50ms
  stop-the-line:
    kind: kubernetes
    when_failed: [check-results]
    with:
      kubeconfig: kubeconfig.yaml
      namespace: kernelci-pipeline
      scale: {{ deployments: [trigger], replicas: 0 }}
"#
    ));
    Setup {
        fx,
        kci,
        kube,
        chat,
        chat_url,
        plan,
    }
}

fn replicas(s: &Setup) -> i64 {
    s.kube.lock().expect("kube").objects[TRIGGER]["spec"]["replicas"]
        .as_i64()
        .expect("replicas")
}

/// Apply while the production pipeline makes a checkout with `tests` results.
fn apply_with_results(s: &Setup, tests: (usize, usize)) -> (i32, String) {
    let kci = s.kci.clone();
    let maker = std::thread::spawn(move || {
        fake_kernelci::wait_for_watch(&kci, Duration::from_secs(30));
        kci.lock()
            .expect("kci")
            .tree("mainline", "master", "bbbb0000", tests);
    });
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "-f"])
            .arg(&s.plan)
            .env(
                "KCI_TEST_DISCORD",
                format!("{}/api/webhooks/1/secret", s.chat_url),
            ),
    );
    maker.join().expect("maker");
    (code, format!("{out}{err}"))
}

#[test]
fn a_regression_pauses_the_trigger_tells_the_chat_and_resume_restores_it() {
    let s = setup();
    let (code, out) = apply_with_results(&s, (20, 20));
    assert_ne!(code, 0, "a regression fails the run: {out}");
    assert!(out.contains("regression on mainline master"), "{out}");
    assert_eq!(replicas(&s), 0, "the trigger is paused: {out}");
    assert!(
        out.contains("the line is stopped (stop-the-line ran)")
            && out.contains("kcideploy rollback -f"),
        "{out}"
    );
    let chat = s.chat.lock().expect("chat").clone();
    assert_eq!(chat.len(), 1, "{chat:?}");
    let told = chat[0]["embeds"][0]["description"].as_str().unwrap_or("");
    assert!(
        told.contains("the line is stopped") && told.contains("kcideploy resume -f"),
        "{told}"
    );
    // The scale went through the subresource, as kubectl scale does.
    let patched = s.kube.lock().expect("kube").calls.iter().any(|c| {
        c.method == "PATCH"
            && c.path == format!("{TRIGGER}/scale")
            && c.content_type == "application/merge-patch+json"
    });
    assert!(patched);

    let (code, out, err) = output(kcideploy().args(["resume", "-f"]).arg(&s.plan));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("stop-the-line: Deployment kernelci-pipeline/trigger: 0 → 1 replica(s)"),
        "{out}"
    );
    assert_eq!(replicas(&s), 1);
    let (code, out, _) = output(kcideploy().args(["resume", "-f"]).arg(&s.plan));
    assert_eq!(code, 0);
    assert!(out.contains("Nothing is paused."), "{out}");
    drop(s.fx);
}

#[test]
fn without_a_regression_the_stop_step_is_not_needed() {
    let s = setup();
    let (code, out) = apply_with_results(&s, (39, 1));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("stop-the-line (not needed"), "{out}");
    assert_eq!(replicas(&s), 1);
    assert!(!out.contains("the line is stopped"), "{out}");
    let state = state_of(&s.fx, "prod");
    let run = state.history.last().expect("the run's record");
    let stop = run
        .steps
        .iter()
        .find(|st| st.name == "stop-the-line")
        .expect("the stop step in the run's record");
    assert_eq!(stop.result.to_string(), "not_needed", "{run:?}");
    assert_eq!(run.result.to_string(), "success");
}

#[test]
fn when_failed_names_are_checked_and_shown_in_the_plan() {
    let s = setup();
    let text = std::fs::read_to_string(&s.plan).expect("plan");
    let bad = s.fx.plan_file(&text.replace(
        "when_failed: [check-results]",
        "when_failed: [check-result]",
    ));
    let (code, _, err) = output(kcideploy().args(["validate", "-f"]).arg(&bad));
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown step `check-result`")
            && err.contains("did you mean `check-results`?"),
        "{err}"
    );
    let plan = s.fx.plan_file(&text);
    let (code, out, err) = output(kcideploy().args(["plan", "-f"]).arg(&plan));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("runs only if check-results fails"), "{out}");
}
