//! plans/staging.yaml against the real KernelCI repos: the three repos are built as git repos
//! from the snapshot (every path of each listing, the copied files' real content), and a table
//! of changes from every repo, alone and mixed, is planned. The images each change must
//! rebuild are computed from images.json (the templates each image is rendered from, the
//! revisions it clones), not typed here; then coverage: every file of the snapshot is in a
//! component or an `ignore:` group, and a new file in a new folder is reported.

mod common;
#[path = "common/snapshot.rs"]
mod snapshot;

use std::collections::BTreeSet;

use common::*;
use kcideploy::planner::{Action, CycleRequest, StepReason};
use snapshot::Image;

const CORE: &str = "kernelci-core";
const API: &str = "kernelci-api";
const PIPELINE: &str = "kernelci-pipeline";

fn staging_text() -> String {
    snapshot::staging_plan_text()
}

fn images() -> Vec<Image> {
    let images = snapshot::images();
    assert_eq!(images.len(), 29, "the real workflow builds 29 images");
    images
}

fn loads(image: &Image, template: &str) -> bool {
    image
        .templates_loaded
        .iter()
        .any(|t| t == &format!("config/docker/{template}"))
}

/// The images a change to `path` of `repo` changes, from images.json: the templates each is
/// rendered from; core's package and config/ in those with fragment/kernelci (it clones
/// core and copies config/); api and pipeline in those that clone them (their `*_rev`).
fn images_for(repo: &str, path: &str) -> BTreeSet<String> {
    let all = images();
    let pick = |f: &dyn Fn(&Image) -> bool| -> BTreeSet<String> {
        all.iter().filter(|i| f(i)).map(Image::key).collect()
    };
    match repo {
        CORE => {
            if path == "kernelci/docker.py" || path == "kernelci/cli/docker.py" {
                // The generator of every Dockerfile.
                pick(&|_| true)
            } else if let Some(t) = path.strip_prefix("config/docker/data/") {
                let _ = t;
                pick(&|i| loads(i, "base/host-tools.jinja2"))
            } else if let Some(template) = path.strip_prefix("config/docker/") {
                pick(&|i| loads(i, template))
            } else if path.starts_with("kernelci/")
                || path.starts_with("config/")
                || path == "pyproject.toml"
                || path == "requirements.txt"
            {
                pick(&|i| loads(i, "fragment/kernelci.jinja2"))
            } else {
                BTreeSet::new()
            }
        }
        API => {
            let package = ["api/", "migrations/", "docker/api/"]
                .iter()
                .any(|p| path.starts_with(p))
                || path == "pyproject.toml";
            if package {
                pick(&|i| i.declared_args.iter().any(|a| a == "api_rev"))
            } else {
                BTreeSet::new()
            }
        }
        _ => {
            let package = ["src/", "data/", "tools/"]
                .iter()
                .any(|p| path.starts_with(p))
                || path == "pyproject.toml"
                || path == "uv.lock";
            if package {
                pick(&|i| i.declared_args.iter().any(|a| a == "pipeline_rev"))
            } else if path == "requirements-lava-callback.txt" {
                pick(&|i| i.tag == "lava-callback")
            } else {
                BTreeSet::new()
            }
        }
    }
}

/// Every step a change to (`repo`, `path`) triggers, in a partial cycle (full-cycle steps
/// count when triggered: they are held for the next full cycle).
fn expected_steps(changes: &[(&str, &str)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let debos: Vec<String> = rootfs_configs()
        .into_iter()
        .filter(|(_, t)| t == "debos")
        .map(|(n, _)| n)
        .collect();
    for &(repo, path) in changes {
        let built = images_for(repo, path);
        out.extend(built.iter().map(|k| format!("build-image[{k}]")));
        let housekeeping = ["tests/", "doc/", ".github/"]
            .iter()
            .any(|p| path.starts_with(p));
        if !housekeeping {
            out.insert(format!("push[{repo}]"));
        }
        let restart_pipeline = (repo == PIPELINE
            && (path.starts_with("config/")
                || [
                    "docker-compose.yaml",
                    "docker-compose-kcidb.yaml",
                    "docker-compose-lava.yaml",
                    "docker-compose-production.yaml",
                ]
                .contains(&path)))
            || built.contains("kernelci/pipeline")
            || built.contains("kernelci/lava-callback");
        if restart_pipeline {
            out.extend(["pipeline-pull", "pipeline-down", "pipeline-up"].map(String::from));
        }
        if (repo == API && (path == "docker-compose.yaml" || path == "env.sample"))
            || built.contains("kernelci/api")
        {
            out.insert("restart-api".into());
        }
        if repo == CORE {
            let package = path.starts_with("kernelci/")
                || (path.starts_with("config/") && !path.starts_with("config/docker/"))
                || path == "pyproject.toml"
                || path == "requirements.txt";
            let kci_tool =
                path == "requirements-dev.txt" || path == "config/docker/requirements.txt";
            if package || kci_tool {
                out.insert("prepare-kci".into());
            }
            let all_rootfs =
                path == "config/core/rootfs-configs.yaml" || path.starts_with("kernelci/rootfs/");
            if all_rootfs {
                out.extend(
                    rootfs_configs()
                        .into_iter()
                        .map(|(n, _)| format!("build-rootfs[{n}]")),
                );
            } else if path.starts_with("config/rootfs/debos/") {
                out.extend(debos.iter().map(|n| format!("build-rootfs[{n}]")));
            }
        }
    }
    out
}

/// The rootfs configs of the snapshot (`config/core/rootfs-configs.yaml`), with their type.
fn rootfs_configs() -> Vec<(String, String)> {
    let text = String::from_utf8(snapshot::content(CORE, "config/core/rootfs-configs.yaml"))
        .expect("utf-8");
    let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("yaml");
    doc["rootfs_configs"]
        .as_object()
        .expect("rootfs_configs")
        .iter()
        .map(|(name, c)| {
            (
                name.clone(),
                c["rootfs_type"].as_str().unwrap_or("debos").to_string(),
            )
        })
        .collect()
}

/// The first path of `repo`'s listing that starts with `prefix` (the real file names).
fn first(repo: &str, prefix: &str) -> String {
    snapshot::listing(repo)
        .into_iter()
        .find(|p| p.starts_with(prefix))
        .unwrap_or_else(|| panic!("no path of {repo} starts with {prefix}"))
}

/// The table of changes: single files of every repo, and mixes.
fn changes() -> Vec<Vec<(&'static str, String)>> {
    let core = |p: &str| (CORE, p.to_string());
    let api = |p: &str| (API, p.to_string());
    let pipe = |p: &str| (PIPELINE, p.to_string());
    let mut table: Vec<Vec<(&str, String)>> = [
        "config/docker/fragment/kselftest.jinja2",
        "config/docker/base/clang.jinja2",
        "config/docker/clang-21.jinja2",
        "config/docker/gcc-14-arm64.jinja2",
        "config/docker/gcc-14-x86.jinja2",
        "config/docker/gcc-15-x86.jinja2",
        "config/docker/clang-21-mips.jinja2",
        "config/docker/base/debian.jinja2",
        "config/docker/base/host-tools.jinja2",
        "config/docker/base/python.jinja2",
        "config/docker/fragment/kernelci.jinja2",
        "config/docker/fragment/api.jinja2",
        "config/docker/fragment/pipeline.jinja2",
        "config/docker/fragment/gcloud.jinja2",
        "config/docker/fragment/lava-callback.jinja2",
        "config/docker/fragment/kunit.jinja2",
        "config/docker/fragment/coccinelle.jinja2",
        "config/docker/kernelci.jinja2",
        "config/docker/k8s.jinja2",
        "config/docker/qemu.jinja2",
        "config/docker/buildroot.jinja2",
        "config/docker/debos.jinja2",
        "config/docker/base/debos.jinja2",
        "config/docker/cvehound.jinja2",
        "config/docker/rustc-1.74.jinja2",
        "config/docker/README.md",
        "kernelci/docker.py",
        "config/core/rootfs-configs.yaml",
        "pyproject.toml",
        "requirements-dev.txt",
        "config/docker/requirements.txt",
    ]
    .iter()
    .map(|p| vec![core(p)])
    .collect();
    for prefix in [
        "config/docker/data/",
        "kernelci/api/",
        "kernelci/rootfs/",
        "config/runtime/",
        "config/rootfs/debos/",
        "tests/",
        "doc/",
        ".github/workflows/",
    ] {
        table.push(vec![core(&first(CORE, prefix))]);
    }
    for p in [
        "api/main.py",
        "docker-compose.yaml",
        "env.sample",
        "pyproject.toml",
    ] {
        table.push(vec![api(p)]);
    }
    for prefix in ["tests/", "kube/", "doc/", "migrations/"] {
        table.push(vec![api(&first(API, prefix))]);
    }
    for p in [
        "config/trees/kernelci.yaml",
        "docker-compose.yaml",
        "docker-compose-lava.yaml",
        "docker-compose-cron.yaml",
        "requirements-lava-callback.txt",
    ] {
        table.push(vec![pipe(p)]);
    }
    for prefix in ["src/", "config/runtime/", "kube/", "tests/", "tools/"] {
        table.push(vec![pipe(&first(PIPELINE, prefix))]);
    }
    // Mixes: several files of one repo, and of several repos.
    table.push(vec![
        core("config/docker/gcc-14-arm64.jinja2"),
        core("config/docker/clang-21-x86.jinja2"),
    ]);
    table.push(vec![
        core("config/docker/fragment/kselftest.jinja2"),
        api("api/main.py"),
    ]);
    table.push(vec![
        pipe(&first(PIPELINE, "src/")),
        pipe("config/trees/kernelci.yaml"),
    ]);
    table.push(vec![
        core(&first(CORE, "config/runtime/")),
        pipe("docker-compose.yaml"),
        api(&first(API, "tests/")),
    ]);
    table.push(vec![
        api(&first(API, "tests/")),
        pipe(&first(PIPELINE, "tests/")),
    ]);
    table
}

/// Triggered steps of `plan`: those that run, and those held for a full cycle.
fn triggered(plan: &kcideploy::planner::Plan) -> BTreeSet<String> {
    plan.steps
        .iter()
        .filter(|s| {
            s.action == Action::Run || s.because.first() == Some(&StepReason::FullCycleOnly)
        })
        .map(|s| s.name.clone())
        .collect()
}

#[test]
fn every_change_triggers_exactly_its_steps_and_images_from_images_json() {
    let fx = Fixture::new();
    let remotes = snapshot::repos(&fx, &[CORE, API, PIPELINE]);
    let config = fx.config(&staging_text());
    fx.deploy(
        &config,
        &[
            (CORE, remotes[CORE].main),
            (API, remotes[API].main),
            (PIPELINE, remotes[PIPELINE].main),
        ],
        Some(NOW - 3600),
    );
    let table = changes();
    assert!(table.len() >= 40, "{} changes", table.len());
    let mut failures = Vec::new();
    for (n, change) in table.iter().enumerate() {
        // Each case is one pending change per repo it touches; the branches of the case
        // before are removed.
        for remote in remotes.values() {
            for branch in remote
                .repo
                .branches(Some(git2::BranchType::Local))
                .expect("branches")
            {
                let (mut b, _) = branch.expect("branch");
                if b.name()
                    .ok()
                    .flatten()
                    .is_some_and(|n| n.starts_with("pr/"))
                {
                    b.delete().expect("delete");
                }
            }
        }
        for repo in [CORE, API, PIPELINE] {
            let texts: Vec<(&str, String)> = change
                .iter()
                .filter(|(r, _)| *r == repo)
                .map(|(_, path)| {
                    let mut content = snapshot::content(repo, path);
                    content.extend_from_slice(b"\n# changed by the test\n");
                    (
                        path.as_str(),
                        String::from_utf8_lossy(&content).into_owned(),
                    )
                })
                .collect();
            if texts.is_empty() {
                continue;
            }
            let edits: Vec<(&str, Option<&str>)> =
                texts.iter().map(|(p, t)| (*p, Some(t.as_str()))).collect();
            remotes[repo].branch(&format!("pr/{n}"), ALICE, &edits);
        }
        let plan = fx.plan(&config, CycleRequest::Partial);
        let pairs: Vec<(&str, &str)> = change.iter().map(|(r, p)| (*r, p.as_str())).collect();
        let want = expected_steps(&pairs);
        let got = triggered(&plan);
        if want != got {
            failures.push(format!(
                "{pairs:?}\n  missing: {:?}\n  extra:   {:?}",
                want.difference(&got).collect::<Vec<_>>(),
                got.difference(&want).collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_plan_names_every_image_of_the_real_workflow_under_both_registry_names() {
    // `plan --json` says, for every image build step, the names it will push: the resolved
    // command line (params), checked against images.json.
    let fx = Fixture::new();
    let remotes = snapshot::repos(&fx, &[CORE, API, PIPELINE]);
    let config = fx.config(&staging_text());
    let mut docker_py = snapshot::content(CORE, "kernelci/docker.py");
    docker_py.extend_from_slice(b"\n# changed\n");
    let docker_py = String::from_utf8(docker_py).expect("utf-8");
    remotes[CORE].branch("pr/1", ALICE, &[("kernelci/docker.py", Some(&docker_py))]);
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "--json", "--cycle", "partial", "--at", &at(), "-f"])
            .arg(&config.path),
    );
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    let core_sha = doc["repos"][CORE]["staging"]
        .as_str()
        .expect("staging")
        .to_string();
    for image in images() {
        let step = format!("build-image[{}]", image.key());
        let planned = doc["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["name"] == step.as_str())
            .unwrap_or_else(|| panic!("no step {step}"));
        assert_eq!(planned["action"], "run", "{step}");
        let shell = planned["params"]["shell"].as_str().expect("shell");
        for name in &image.staging_names {
            let expected = match name.strip_prefix("ghcr.io/kernelci/staging-") {
                // Built and pushed under ghcr.io, then re-tagged for Docker Hub.
                Some(rest) => format!("docker tag {name} kernelci/staging-{rest}"),
                None => format!("docker push {name}"),
            };
            assert!(shell.contains(&expected), "{step}: `{expected}` in {shell}");
        }
        assert!(
            shell.contains(&format!(" {} ", image.kci_command)),
            "{step}: `kci docker build {}` in {shell}",
            image.kci_command
        );
        assert!(
            shell.contains(&format!("core_rev={core_sha}")),
            "{step}: the staging revision resolved in {shell}"
        );
    }
}

#[test]
fn coverage_of_the_snapshot_is_complete_and_a_new_folder_is_reported() {
    let fx = Fixture::new();
    let remotes = snapshot::repos(&fx, &[CORE, API, PIPELINE]);
    let config = fx.config(&staging_text());
    let coverage = || output(kcideploy().args(["coverage", "-f"]).arg(&config.path));
    let (code, out, err) = coverage();
    assert_eq!(code, 0, "every file of the snapshot is covered\n{out}{err}");
    remotes[PIPELINE].branch(
        "pr/1",
        ALICE,
        &[("newfolder/thing.py", Some("print('new')\n"))],
    );
    let (code, out, err) = coverage();
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains("newfolder/thing.py"), "{out}");
}

#[test]
fn the_readme_table_is_what_explain_paths_prints() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let start = "<!-- explain-paths: plans/staging.yaml -->\n";
    let from = readme.find(start).expect("the README's table") + start.len();
    let to = readme[from..]
        .find("<!-- end explain-paths -->")
        .expect("its end")
        + from;
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "--explain-paths", "-f"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/plans/staging.yaml")),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        &readme[from..to],
        out,
        "regenerate the README table with `kcideploy plan --explain-paths -f plans/staging.yaml`"
    );
}

#[test]
fn rootfs_builds_are_valid_kci_rootfs_commands_one_per_real_config() {
    // `kci rootfs build NAME` needs `--arch A` (repeatable, each in the config's arch_list)
    // or `--all-arches`, never both (kernelci/cli/rootfs.py:130-196, IMAGES.md).
    let fx = Fixture::new();
    snapshot::write_included(&fx);
    let config = fx.config(&staging_text());
    let configs = rootfs_configs();
    let text = String::from_utf8(snapshot::content(CORE, "config/core/rootfs-configs.yaml"))
        .expect("utf-8");
    let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("yaml");
    let steps: Vec<&String> = config
        .file
        .steps
        .keys()
        .filter(|n| n.starts_with("build-rootfs["))
        .collect();
    assert_eq!(steps.len(), configs.len(), "{steps:?}");
    for (name, _) in &configs {
        let step = &config.file.steps[&format!("build-rootfs[{name}]")];
        // The build is one line of the step's script, the config in `$ROOTFS_NAME`.
        let env_name = step.with.value["env"]["ROOTFS_NAME"]
            .as_str()
            .expect("ROOTFS_NAME");
        assert_eq!(env_name, name);
        let line = step.with.value["shell"]
            .as_str()
            .expect("shell")
            .lines()
            .find(|l| l.contains("kci rootfs build"))
            .expect("kci rootfs build");
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| w.trim_matches('"').replace("$ROOTFS_NAME", env_name))
            .collect();
        let run: Vec<&str> = words.iter().map(String::as_str).collect();
        let at = run.iter().position(|w| *w == "rootfs").expect("kci rootfs");
        assert_eq!(
            &run[at..at + 3],
            ["rootfs", "build", name.as_str()],
            "{run:?}"
        );
        let all = run.contains(&"--all-arches");
        let arches: Vec<&str> = run
            .windows(2)
            .filter(|w| w[0] == "--arch")
            .map(|w| w[1])
            .collect();
        assert!(
            all == arches.is_empty(),
            "exactly one of --all-arches and --arch: {run:?}"
        );
        let known: Vec<&str> = doc["rootfs_configs"][name.as_str()]["arch_list"]
            .as_array()
            .expect("arch_list")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        assert!(
            arches.iter().all(|a| known.contains(a)),
            "{run:?} {known:?}"
        );
        assert!(!run.contains(&"all"), "`all` is no arch: {run:?}");
    }
}
