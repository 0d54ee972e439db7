//! plans/production.yaml against the real KernelCI repos (built from the snapshot, as in
//! tests/staging_plan.rs): it loads, every file of the three repos is covered, a change to
//! the pipeline's code plans the Kubernetes steps in the order and namespaces of the real
//! `api-production-update.sh workflow` (DEPLOY.md 2.2), the trigger last; and `git_push`
//! makes the real production tag format.

mod common;
#[path = "common/registry.rs"]
mod registry;
#[path = "common/snapshot.rs"]
mod snapshot;

use common::*;

const CORE: &str = "kernelci-core";
const API: &str = "kernelci-api";
const PIPELINE: &str = "kernelci-pipeline";

/// The acceptance order: DEPLOY.md 2.2, "Apply order" (api-production-update.sh:129-154),
/// each `kubectl apply -f` as (namespace, repo, manifest). The `sleep 10` before the trigger
/// is replaced by readiness (checked apart).
const REAL_ORDER: [(&str, &str, &str); 10] = [
    ("kernelci-api", API, "kube/aks/api.yaml"),
    ("kernelci-pipeline", PIPELINE, "kube/aks/lava-callback.yaml"),
    ("kernelci-pipeline", PIPELINE, "kube/aks/monitor.yaml"),
    ("kernelci-pipeline", PIPELINE, "kube/aks/nodehandlers.yaml"),
    ("kernelci-pipeline", PIPELINE, "kube/aks/scheduler-k8s.yaml"),
    (
        "kernelci-pipeline",
        PIPELINE,
        "kube/aks/scheduler-lava.yaml",
    ),
    (
        "kernelci-pipeline",
        PIPELINE,
        "kube/aks/scheduler-shell.yaml",
    ),
    ("kernelci-pipeline", PIPELINE, "kube/aks/tarball.yaml"),
    (
        "kernelci-pipeline",
        PIPELINE,
        "kube/aks/pipeline-kcidb.yaml",
    ),
    ("kernelci-pipeline", PIPELINE, "kube/aks/trigger.yaml"),
];

#[test]
fn the_production_plan_validates() {
    let (code, out, err) = output(kcideploy().args(["validate", "-f"]).arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/plans/production.yaml"
    )));
    assert_eq!(code, 0, "{out}{err}");
    let text = snapshot::production_plan_text();
    assert!(
        !text.contains("production-mainline") && !text.contains("push_url"),
        "the production trigger runs with --trees=!kernelci: no pipe-cleaner branch"
    );
    // The result check watches trees that trigger polls: not `kernelci`, after the trigger.
    let fx = Fixture::new();
    snapshot::write_included(&fx);
    let config = fx.config(&text);
    let check = &config.file.steps["check-results"];
    assert!(
        check.needs.iter().any(|n| n.value == "trigger"),
        "the check waits for the trigger"
    );
    let watch = check.with.value["watch"].as_array().expect("with.watch");
    assert!(!watch.is_empty());
    assert!(
        watch.iter().all(|w| w["tree"] != "kernelci"),
        "production's trigger never builds the kernelci tree: {watch:?}"
    );
    assert_eq!(check.with.value["phase"], "watch");
    // Stop the line: only when that check fails, the trigger is scaled to zero.
    let stop = &config.file.steps["stop-the-line"];
    let watched: Vec<&str> = stop.when_failed.iter().map(|w| w.value.as_str()).collect();
    assert_eq!(watched, ["check-results"]);
    assert_eq!(stop.with.value["namespace"], "kernelci-pipeline");
    assert_eq!(
        stop.with.value["scale"],
        serde_json::json!({"deployments": ["trigger"], "replicas": 0})
    );
    assert!(!text.contains("--arch all"), "not a kci rootfs command");
}

#[test]
fn coverage_of_the_snapshot_is_complete() {
    let fx = Fixture::new();
    let remotes = snapshot::repos(&fx, &[CORE, API, PIPELINE]);
    let config = fx.config(&snapshot::production_plan_text());
    let coverage = || output(kcideploy().args(["coverage", "-f"]).arg(&config.path));
    let (code, out, err) = coverage();
    assert_eq!(code, 0, "every file of the snapshot is covered\n{out}{err}");
    // And it can fail: a new manifest nobody placed is reported.
    let mut pipeline = remotes
        .into_iter()
        .find(|(n, _)| n == PIPELINE)
        .expect("pipeline")
        .1;
    pipeline.advance_main(&[("kube/aks/new.yaml", Some("kind: Deployment\n"))]);
    let (code, out, err) = coverage();
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains("kube/aks/new.yaml"), "{out}");
}

/// `plan --json` of the production plan after `edit` lands on the pipeline's main.
fn plan_after_pipeline_change(path: &str) -> serde_json::Value {
    let fx = Fixture::new();
    plan_in(
        &fx,
        &snapshot::production_plan_text(),
        (PIPELINE, path),
        &["--json"],
    )
    .0
}

/// `plan` of `text` in `fx` after a file changed on a repo's main: the JSON (with `--json`
/// in `args`, else null) and the whole output.
fn plan_in(
    fx: &Fixture,
    text: &str,
    (repo, path): (&str, &str),
    args: &[&str],
) -> (serde_json::Value, String) {
    let mut remotes = snapshot::repos(fx, &[CORE, API, PIPELINE]);
    let config = fx.config(text);
    fx.deploy(
        &config,
        &[
            (CORE, remotes[CORE].main),
            (API, remotes[API].main),
            (PIPELINE, remotes[PIPELINE].main),
        ],
        Some(NOW - 3600),
    );
    let mut content = snapshot::content(repo, path);
    content.extend_from_slice(b"\n# changed\n");
    let content = String::from_utf8(content).expect("utf-8");
    remotes
        .get_mut(repo)
        .expect("repo")
        .advance_main(&[(path, Some(&content))]);
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "--cycle", "partial", "--at", &at()])
            .args(args)
            .arg("-f")
            .arg(&config.path),
    );
    assert_eq!(code, 0, "{err}");
    let json = match args.contains(&"--json") {
        true => serde_json::from_str(&out).expect("json"),
        false => serde_json::Value::Null,
    };
    (json, format!("{out}{err}"))
}

/// A change to core's package: every image, so every Deployment.
const CHANGE: (&str, &str) = (CORE, "kernelci/__init__.py");

#[test]
fn every_deployment_shows_its_tag_and_the_digest_the_registry_reports() {
    let fx = Fixture::new();
    let reg = registry::Registry::start(fx.path());
    let digest = |tag: &str| reg.push("kernelci/kernelci", tag, tag == "pipeline");
    let digests = [
        ("api", digest("api")),
        ("pipeline", digest("pipeline")),
        ("lava-callback", digest("lava-callback")),
    ];
    let text = snapshot::production_plan_text().replace(
        "\"kernelci/kernelci:",
        &format!("\"{}/kernelci/kernelci:", reg.host),
    );
    let (doc, _) = plan_in(&fx, &text, CHANGE, &["--json"]);
    let steps = doc["steps"].as_array().expect("steps");
    let step = |n: &str| {
        steps
            .iter()
            .find(|s| s["name"] == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    let digest_of = |tag: &str| {
        digests
            .iter()
            .find(|(t, _)| *t == tag)
            .expect("tag")
            .1
            .clone()
    };
    for (name, key, tag) in [
        ("api", "first_container", "api"),
        ("pipeline", "first_container", "pipeline"),
        ("pipeline", "lava-callback", "lava-callback"),
        ("trigger", "first_container", "pipeline"),
    ] {
        let s = step(name);
        assert_eq!(s["action"], "run", "{name}");
        let p = &s["params"];
        assert_eq!(
            p[format!("pin_images.{key}")],
            format!("{}/kernelci/kernelci:{tag}", reg.host),
            "{name}"
        );
        assert_eq!(
            p[format!("pin_images.{key}.digest")],
            digest_of(tag),
            "{name}"
        );
        assert!(
            !s["because"].as_array().expect("because").is_empty(),
            "{name}: the reason chain"
        );
    }
    // The text plan shows them under each step, and a saved plan keeps them.
    let (_, out) = plan_in(&Fixture::new(), &text, CHANGE, &[]);
    assert!(
        out.contains(&format!(
            "pin_images.first_container.digest: {}",
            digest_of("api")
        )),
        "{out}"
    );
    // A registry that does not answer is a warning, not a failed plan: apply resolves it.
    let offline = snapshot::production_plan_text()
        .replace("\"kernelci/kernelci:", "\"127.0.0.1:9/kernelci/kernelci:");
    let (doc, out) = plan_in(&Fixture::new(), &offline, CHANGE, &["--json"]);
    assert!(
        out.contains("warning: api: pin_images.first_container: cannot resolve kernelci/kernelci:api in registry 127.0.0.1:9"),
        "{out}"
    );
    let api = doc["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "api"))
        .expect("api");
    assert!(
        api["params"]
            .get("pin_images.first_container.digest")
            .is_none()
    );
}

/// A flattened `params` list (`[a, b]`) as its items.
fn list(v: &serde_json::Value) -> Vec<String> {
    let text = v.as_str().expect("a list");
    let inner = text.trim_start_matches('[').trim_end_matches(']');
    inner.split(", ").map(str::to_string).collect()
}

#[test]
fn a_pipeline_change_applies_the_manifests_in_the_real_order_and_namespaces_trigger_last() {
    let doc = plan_after_pipeline_change("src/trigger.py");
    let steps = doc["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    let running: Vec<&str> = steps
        .iter()
        .filter(|s| s["action"] == "run")
        .filter_map(|s| s["name"].as_str())
        .collect();
    // Every kubernetes step, in the plan's (execution) order, as the manifests it applies.
    let kube: Vec<&serde_json::Value> = steps
        .iter()
        .filter(|s| s["kind"] == "kubernetes" && s["params"].get("manifests").is_some())
        .collect();
    let applied: Vec<(String, String, String)> = kube
        .iter()
        .flat_map(|s| {
            let p = &s["params"];
            let ns = p["namespace"].as_str().expect("namespace").to_string();
            let repo = p["repo"].as_str().expect("repo").to_string();
            list(&p["manifests"])
                .into_iter()
                .map(move |m| (ns.clone(), repo.clone(), m))
        })
        .collect();
    let want: Vec<(String, String, String)> = REAL_ORDER
        .iter()
        .map(|(n, r, m)| (n.to_string(), r.to_string(), m.to_string()))
        .collect();
    assert_eq!(applied, want, "steps: {names:?}");
    for s in &kube {
        assert_eq!(s["params"]["context"], "kernelci-api-1", "{}", s["name"]);
    }
    let by_name = |n: &str| {
        *kube
            .iter()
            .find(|s| s["name"] == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    // Pins: the API's first container, the pipeline's first containers, lava-callback's own.
    let pin = |step: &str, key: &str| by_name(step)["params"][format!("pin_images.{key}")].clone();
    assert_eq!(pin("api", "first_container"), "kernelci/kernelci:api");
    assert_eq!(
        pin("pipeline", "first_container"),
        "kernelci/kernelci:pipeline"
    );
    assert_eq!(
        pin("pipeline", "lava-callback"),
        "kernelci/kernelci:lava-callback"
    );
    assert_eq!(
        pin("trigger", "first_container"),
        "kernelci/kernelci:pipeline"
    );
    // The whole config/ as pipeline-configmap (replaced before the pipeline's manifests).
    let pipeline = &by_name("pipeline")["params"];
    assert_eq!(pipeline["configmaps.0.name"], "pipeline-configmap");
    assert_eq!(pipeline["configmaps.0.from_dir"], "config");
    assert!(pipeline.get("configmaps.1.name").is_none());
    // The trigger: after the others by readiness (needs), not a sleep, and after the API
    // answers.
    let needs: Vec<&str> = by_name("trigger")["needs"]
        .as_array()
        .expect("needs")
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert_eq!(needs, ["api", "pipeline", "wait-api"]);
    let pos = |n: &str| names.iter().position(|x| *x == n).expect("step");
    assert!(pos("trigger") > pos("pipeline") && pos("trigger") > pos("wait-api"));
    // What this change runs: the images with the pipeline's code, its tag, the pipeline's
    // Deployments and the trigger; not the API (its image did not change).
    for n in [
        "tag[kernelci-pipeline]",
        "build-image[kernelci/pipeline]",
        "build-image[kernelci/lava-callback]",
        "pipeline",
        "trigger",
    ] {
        assert!(running.contains(&n), "{n} in {running:?}");
    }
    for n in ["api", "build-image[kernelci/api]", "tag[kernelci-core]"] {
        assert!(!running.contains(&n), "{n} in {running:?}");
    }
}

#[test]
fn git_push_timestamp_tags_name_the_run_clock_on_main_and_delete_nothing() {
    // Production's tags: `production-YYYYmmddHHMMSS` on `main` as it is (no pending
    // change, so no branch moves), lightweight, never pruned.
    let fx = Fixture::new();
    let mut remote = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let old = [
        "production-20200101000000",
        "production-20200102000000",
        "production-20200102.1",
    ];
    for tag in old {
        remote
            .repo
            .reference(&format!("refs/tags/{tag}"), remote.main, true, "t")
            .expect("tag");
    }
    let main = remote.advance_main(&[("config/a.yaml", Some("a: 2\n"))]);
    let plan = fx.plan_file(
        r#"version: 1
name: t
repos:
  pipe: { url: repos/pipe.git, base: main, staging_branch: main, pending: { branches: "kcideploy/none" } }
components:
  config: { repo: pipe, paths: ["config/**"] }
steps:
  tag: { kind: git_push, on: [config], with: { repo: pipe, tag_prefix: production-, tag_format: timestamp, tag_keep: 1 } }
"#,
    );
    let stamp = |t: jiff::Timestamp| t.strftime("%Y%m%d%H%M%S").to_string();
    let before = stamp(jiff::Timestamp::now());
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan),
    );
    let after = stamp(jiff::Timestamp::now());
    assert_eq!(code, 0, "{out}{err}");
    let state = fx
        .backend("t")
        .read()
        .expect("state parses")
        .expect("state exists");
    // The run's one clock reading, in UTC, to the second (read between `before` and `after`).
    let want = remote
        .repo
        .tag_names(Some("production-*"))
        .expect("tags")
        .iter()
        .flatten()
        .flatten()
        .find(|t| !old.contains(t))
        .expect("a new tag")
        .to_string();
    let digits = want.strip_prefix("production-").expect("prefix");
    assert!(
        digits.len() == 14 && digits.bytes().all(|b| b.is_ascii_digit()),
        "{want}"
    );
    assert!(
        before.as_str() <= digits && digits <= after.as_str(),
        "{before} <= {want} <= {after}"
    );
    let mut tags: Vec<String> = remote
        .repo
        .tag_names(None)
        .expect("tags")
        .iter()
        .flatten()
        .flatten()
        .map(String::from)
        .collect();
    tags.sort();
    let mut expected: Vec<String> = old.iter().map(|t| t.to_string()).collect();
    expected.push(want.clone());
    expected.sort();
    assert_eq!(tags, expected, "nothing pruned, whatever tag_keep says");
    assert_eq!(
        remote
            .repo
            .refname_to_id(&format!("refs/tags/{want}"))
            .expect("new tag"),
        main
    );
    let tag = remote
        .repo
        .find_reference(&format!("refs/tags/{want}"))
        .expect("ref");
    assert!(
        tag.peel_to_tag().is_err(),
        "a lightweight tag, as `git tag NAME`"
    );
    assert_eq!(
        remote.repo.refname_to_id("refs/heads/main").expect("main"),
        main,
        "main is where it was"
    );
    assert_eq!(state.repos["pipe"].deployed, main.to_string());
    let outputs = state.steps["tag"].outputs.as_ref().expect("outputs");
    assert_eq!(outputs["tag"], want.as_str(), "recorded for -refresh");
}
