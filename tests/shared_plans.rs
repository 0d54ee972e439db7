//! One definition for every environment (#17, item 6): plans/staging.yaml and
//! plans/production.yaml read KernelCI's components and image table from one included file,
//! plans/kernelci.yaml, so an edit there changes both plans, and neither can drift.

mod common;
#[path = "common/snapshot.rs"]
mod snapshot;

use std::path::PathBuf;

use common::*;
use kcideploy::config::Config;

/// The two shipped plans and the shared file (with `shared` in place of plans/kernelci.yaml)
/// written into the fixture; the paths of staging and production.
fn plans(fx: &Fixture, shared: &str) -> (PathBuf, PathBuf) {
    let staging = fx.path().join("staging.yaml");
    let production = fx.path().join("production.yaml");
    std::fs::write(&staging, snapshot::staging_plan_text()).expect("write");
    std::fs::write(&production, snapshot::production_plan_text()).expect("write");
    std::fs::write(fx.path().join("kernelci.yaml"), shared).expect("write");
    (staging, production)
}

fn load(path: &std::path::Path) -> Config {
    match Config::load(path) {
        Ok(c) => c,
        Err(e) => panic!("{}: {:?}", path.display(), miette::Report::new(e)),
    }
}

fn build_steps(config: &Config) -> Vec<String> {
    config
        .file
        .steps
        .keys()
        .filter(|s| s.starts_with("build-image["))
        .cloned()
        .collect()
}

#[test]
fn both_plans_build_the_images_of_the_one_table_the_real_workflow_builds() {
    let fx = Fixture::new();
    let (staging, production) = plans(&fx, &snapshot::included_plan_text());
    let expected: Vec<String> = snapshot::images()
        .iter()
        .map(|i| format!("build-image[{}]", i.key()))
        .collect();
    for path in [&staging, &production] {
        let mut got = build_steps(&load(path));
        got.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(got, want, "{}", path.display());
    }
    // Neither plan carries a table of its own: the shipped files say it once.
    for plan in ["plans/staging.yaml", "plans/production.yaml"] {
        let text =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(plan))
                .expect("read");
        assert!(text.contains("include: [kernelci.yaml]"), "{plan}");
        assert!(
            !text.contains("templates: ["),
            "{plan} has an image table of its own"
        );
        assert!(
            !text.contains("  core-package:"),
            "{plan} defines a shared component"
        );
    }
}

#[test]
fn an_edit_of_the_shared_file_changes_both_plans() {
    let fx = Fixture::new();
    let shared = snapshot::included_plan_text();
    // One image less in the table.
    let qemu = shared
        .lines()
        .position(|l| l.contains("key: qemu/latest"))
        .expect("the qemu image");
    let lines: Vec<&str> = shared.lines().collect();
    let mut edited: Vec<&str> = lines[..qemu].to_vec();
    edited.extend(&lines[qemu + 3..]);
    // And the image generator gains a file.
    let edited = edited.join("\n").replace(
        "paths: [\"kernelci/docker.py\", \"kernelci/cli/docker.py\"]",
        "paths: [\"kernelci/docker.py\", \"kernelci/cli/docker.py\", \"kernelci/new_generator.py\"]",
    );
    assert_ne!(edited, shared, "the edit applies");
    let (staging, production) = plans(&fx, &shared);
    let before = [load(&staging), load(&production)];
    let (staging, production) = plans(&fx, &edited);
    let after = [load(&staging), load(&production)];
    for (b, a) in before.iter().zip(&after) {
        let name = &a.file.name;
        assert!(
            build_steps(b).contains(&"build-image[qemu/latest]".to_string()),
            "{name}"
        );
        assert!(
            !build_steps(a).contains(&"build-image[qemu/latest]".to_string()),
            "{name}"
        );
        assert_eq!(build_steps(a).len() + 1, build_steps(b).len(), "{name}");
        let paths = |c: &Config| -> Vec<String> {
            c.file.components["image-generator"]
                .paths
                .iter()
                .map(|p| p.value.clone())
                .collect()
        };
        assert!(
            !paths(b).contains(&"kernelci/new_generator.py".to_string()),
            "{name}"
        );
        assert!(
            paths(a).contains(&"kernelci/new_generator.py".to_string()),
            "{name}"
        );
        // The plan's identity covers the shared text: state sees a changed plan.
        assert_ne!(a.source, b.source, "{name}");
    }
    // And the CLI shows it: explain-paths of either plan names the new file.
    for path in [&staging, &production] {
        let (code, out, err) = output(
            kcideploy()
                .args(["plan", "--explain-paths", "-f"])
                .arg(path),
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("kernelci/new_generator.py"), "{out}");
    }
}
