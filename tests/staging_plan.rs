//! plans/staging.yaml against local mirrors of the three repos: representative changes
//! trigger just the steps KERNELCI.md says they need.

mod common;

use common::*;
use kcideploy::planner::CycleRequest;

fn staging_fixture(change: (&str, &str, &str)) -> (Fixture, kcideploy::planner::Plan) {
    let fx = Fixture::new();
    let core = fx.repo(
        "kernelci-core",
        &[
            ("kernelci/api.py", Some("api\n")),
            ("pyproject.toml", Some("[project]\n")),
            ("config/docker/gcc-14.jinja2", Some("gcc\n")),
            ("config/docker/fragment/kselftest.jinja2", Some("k\n")),
            ("config/rootfs/debos.yaml", Some("r\n")),
        ],
    );
    let api = fx.repo(
        "kernelci-api",
        &[
            ("api/main.py", Some("m\n")),
            ("tests/test.py", Some("t\n")),
            ("docker-compose.yaml", Some("c\n")),
        ],
    );
    let pipeline = fx.repo(
        "kernelci-pipeline",
        &[
            ("src/trigger.py", Some("t\n")),
            ("config/pipeline.yaml", Some("p\n")),
        ],
    );
    let (repo, path, content) = change;
    let remote = match repo {
        "kernelci-core" => &core,
        "kernelci-api" => &api,
        _ => &pipeline,
    };
    remote.branch("pr/1", ALICE, &[(path, Some(content))]);

    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plans/staging.yaml"))
        .expect("plans/staging.yaml")
        .replace("forge: github", "forge: git")
        .replace("https://github.com/kernelci/", "repos/")
        .replace(
            "trusted: [nuclearcat, JenySadadia, pawiecz, padovan, gctucker, a-wai]",
            "trusted: [alice@example.org]",
        );
    let config = fx.config(&text);
    fx.deploy(
        &config,
        &[
            ("kernelci-core", core.main),
            ("kernelci-api", api.main),
            ("kernelci-pipeline", pipeline.main),
        ],
        Some(NOW - 3600),
    );
    let plan = fx.plan(&config, CycleRequest::Partial);
    (fx, plan)
}

#[test]
fn pipeline_config_change_restarts_only() {
    let (_fx, plan) = staging_fixture(("kernelci-pipeline", "config/pipeline.yaml", "p2\n"));
    assert_eq!(
        runs(&plan),
        ["push-pipeline", "pipeline-down", "pipeline-up"]
    );
}

#[test]
fn compiler_template_change_rebuilds_that_image_only() {
    let (_fx, plan) = staging_fixture((
        "kernelci-core",
        "config/docker/gcc-14-arm64.jinja2",
        "arm64\n",
    ));
    assert_eq!(runs(&plan), ["push-core", "build-gcc-14"]);
}

#[test]
fn core_package_change_rebuilds_service_images_and_restarts() {
    let (_fx, plan) = staging_fixture(("kernelci-core", "kernelci/api.py", "api v2\n"));
    assert_eq!(
        runs(&plan),
        [
            "push-core",
            "install-kci",
            "build-kernelci",
            "build-api",
            "build-pipeline",
            "build-lava-callback",
            "build-gcc-14",
            "build-clang-21",
            "pipeline-down",
            "api-up",
            "pipeline-up",
        ]
    );
}

#[test]
fn api_tests_change_does_nothing() {
    let (_fx, plan) = staging_fixture(("kernelci-api", "tests/test.py", "t2\n"));
    assert_eq!(runs(&plan), Vec::<&str>::new());
    assert_eq!(plan.repos["kernelci-api"].included.len(), 1);
}

#[test]
fn rootfs_change_waits_for_a_full_cycle() {
    let (_fx, plan) = staging_fixture(("kernelci-core", "config/rootfs/debos.yaml", "r2\n"));
    assert_eq!(runs(&plan), ["push-core"]);
    let rootfs = plan
        .steps
        .iter()
        .find(|s| s.name == "build-rootfs")
        .expect("step");
    assert_eq!(
        rootfs.because[0],
        kcideploy::planner::StepReason::FullCycleOnly
    );
}

/// plans/production.yaml against local mirrors: every release goes through the pause, the
/// update and the pipe-cleaner; images and rootfs only when their files changed.
fn production(change: (&str, &str, &str)) -> Vec<String> {
    let fx = Fixture::new();
    let core = fx.repo(
        "kernelci-core",
        &[
            ("kernelci/api.py", Some("api\n")),
            ("config/rootfs/debos.yaml", Some("r\n")),
            ("config/docker/kernelci.jinja2", Some("k\n")),
        ],
    );
    let api = fx.repo("kernelci-api", &[("api/main.py", Some("m\n"))]);
    let mut pipeline = fx.repo(
        "kernelci-pipeline",
        &[
            ("config/pipeline.yaml", Some("p\n")),
            ("kube/aks/api.yaml", Some("a\n")),
        ],
    );
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/plans/production.yaml"
    ))
    .expect("plans/production.yaml")
    .replace("https://github.com/kernelci/", "repos/");
    let config = fx.config(&text);
    fx.deploy(
        &config,
        &[
            ("kernelci-core", core.main),
            ("kernelci-api", api.main),
            ("kernelci-pipeline", pipeline.main),
        ],
        Some(NOW - 3600),
    );
    let (repo, path, content) = change;
    let mut remote = match repo {
        "kernelci-core" => core,
        "kernelci-api" => api,
        _ => {
            pipeline.advance_main(&[(path, Some(content))]);
            let plan = fx.plan(&config, CycleRequest::Partial);
            return runs(&plan).into_iter().map(String::from).collect();
        }
    };
    remote.advance_main(&[(path, Some(content))]);
    let plan = fx.plan(&config, CycleRequest::Partial);
    runs(&plan).into_iter().map(String::from).collect()
}

const RUNBOOK: [&str; 7] = [
    "pause-trigger",
    "drain",
    "update-config",
    "apply-manifests",
    "wait-api",
    "apply-trigger",
    "pipe-cleaner",
];

#[test]
fn production_config_change_runs_the_runbook_without_images() {
    let steps = production(("kernelci-pipeline", "config/pipeline.yaml", "p2\n"));
    let expected: Vec<&str> = ["tag-pipeline"].into_iter().chain(RUNBOOK).collect();
    assert_eq!(steps, expected);
}

#[test]
fn production_core_change_builds_images_and_rootfs_only_for_theirs() {
    let steps = production(("kernelci-core", "kernelci/api.py", "api v2\n"));
    let expected: Vec<&str> = ["tag-core", "build-images"]
        .into_iter()
        .chain(RUNBOOK)
        .collect();
    assert_eq!(steps, expected);
    let steps = production(("kernelci-core", "config/rootfs/debos.yaml", "r2\n"));
    let expected: Vec<&str> = ["tag-core", "build-rootfs"]
        .into_iter()
        .chain(RUNBOOK)
        .collect();
    assert_eq!(steps, expected);
}
