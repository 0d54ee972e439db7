//! `include:` and `lists:`: components and item tables written once and read by several plan
//! files; every error names the file it is in, with that file's own line and column.

use std::path::{Path, PathBuf};

use kcideploy::config::{Config, ConfigError};

const PLAN: &str = r#"version: 1
name: t
include: [shared/kernelci.yaml]
repos:
  pipe:
    url: repos/pipe.git
components:
  local:
    repo: pipe
    paths: ["local/**"]
steps:
  build:
    kind: command
    for_each: ${lists.images}
    on: ["image[${each.key}]"]
    with: { run: ["echo", "${each.value.name}"] }
"#;

const SHARED: &str = r#"# What KernelCI is made of: read by both plans.
lists:
  images:
    - { key: api, name: "kernelci:api", dir: api }
    - { key: pipeline, name: "kernelci:pipeline", dir: pipeline }
components:
  image:
    for_each: ${lists.images}
    repo: pipe
    paths: ["docker/${each.value.dir}/**"]
"#;

/// A plan file and its shared file in a temp dir.
fn files(plan: &str, shared: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("shared")).expect("mkdir");
    std::fs::write(dir.path().join("shared/kernelci.yaml"), shared).expect("write");
    let path = dir.path().join("plan.yaml");
    std::fs::write(&path, plan).expect("write");
    (dir, path)
}

fn load(plan: &str, shared: &str) -> Result<Config, ConfigError> {
    let (dir, path) = files(plan, shared);
    let result = Config::load(&path);
    drop(dir);
    result
}

/// Every error message, with the temp dir's path cut off.
fn errors(plan: &str, shared: &str) -> Vec<String> {
    let (dir, path) = files(plan, shared);
    let prefix = format!("{}/", dir.path().display());
    match Config::load(&path) {
        Ok(_) => panic!("accepted"),
        Err(e) => e
            .errors()
            .iter()
            .map(|e| e.message.replace(&prefix, ""))
            .collect(),
    }
}

#[test]
fn components_and_lists_of_an_included_file_are_used_as_if_written_here() {
    let config = match load(PLAN, SHARED) {
        Ok(c) => c,
        Err(e) => panic!("{:?}", miette::Report::new(e)),
    };
    let components: Vec<&str> = config.file.components.keys().map(String::as_str).collect();
    assert_eq!(components, ["image[api]", "image[pipeline]", "local"]);
    let steps: Vec<&str> = config.file.steps.keys().map(String::as_str).collect();
    assert_eq!(steps, ["build[api]", "build[pipeline]"]);
    let on: Vec<&str> = config.file.steps["build[pipeline]"]
        .on
        .iter()
        .map(|o| o.value.as_str())
        .collect();
    assert_eq!(on, ["image[pipeline]"]);
    assert_eq!(
        config.file.components["image[api]"].paths[0].value,
        "docker/api/**"
    );
    // The plan's identity covers the included text: a change there is a change of the plan.
    assert!(config.source.contains("kernelci:pipeline"), "combined text");
}

#[test]
fn an_error_in_an_included_file_names_that_file_and_its_own_line() {
    let shared = SHARED.replace("    repo: pipe", "    repo: pipes");
    assert_eq!(
        errors(PLAN, &shared),
        [
            "shared/kernelci.yaml:9:11: component `image[api]` names unknown repo `pipes` (and 1 more from the same text)"
        ]
    );
    let shared = SHARED.replace("components:", "componets:");
    let errs = errors(PLAN, &shared);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("shared/kernelci.yaml:6:1: unknown field `componets`"),
        "{errs:?}"
    );
    // A plan file's section that an included file cannot hold.
    let shared = format!("{SHARED}steps: {{}}\n");
    let errs = errors(PLAN, &shared);
    assert!(
        errs.len() == 1 && errs[0].starts_with("shared/kernelci.yaml:11:1: unknown field `steps`"),
        "{errs:?}"
    );
    // Nothing includes further.
    let shared = format!("include: [other.yaml]\n{SHARED}");
    let errs = errors(PLAN, &shared);
    assert!(
        errs.len() == 1 && errs[0].starts_with("shared/kernelci.yaml:1:1: unknown field `include`"),
        "{errs:?}"
    );
    // YAML syntax in the included file.
    let shared = SHARED.replace("key: api,", "key: [api,");
    let errs = errors(PLAN, &shared);
    assert!(
        errs.len() == 1 && errs[0].starts_with("shared/kernelci.yaml:4:"),
        "{errs:?}"
    );
}

#[test]
fn errors_in_the_plan_file_keep_its_own_lines() {
    let plan = PLAN.replace(
        "    repo: pipe\n    paths: [\"local/**\"]",
        "    repo: pip\n    paths: [\"local/**\"]",
    );
    assert_eq!(
        errors(&plan, SHARED),
        ["plan.yaml:9:11: component `local` names unknown repo `pip`"]
    );
}

#[test]
fn a_missing_included_file_is_named_where_it_is_included() {
    let plan = PLAN.replace("shared/kernelci.yaml", "shared/kernelci.yml");
    let errs = errors(&plan, SHARED);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(
            "plan.yaml:3:11: cannot include `shared/kernelci.yml`: cannot read plan file"
        ),
        "{errs:?}"
    );
    let plan = PLAN.replace(
        "include: [shared/kernelci.yaml]",
        "include: [shared/kernelci.yaml, shared/kernelci.yaml]",
    );
    let errs = errors(&plan, SHARED);
    assert!(
        errs.len() == 1
            && errs[0].starts_with("plan.yaml:3:33: `shared/kernelci.yaml` is included twice"),
        "{errs:?}"
    );
}

#[test]
fn a_name_defined_twice_is_refused() {
    let plan = PLAN.replace("  local:", "  image:");
    let errs = errors(&plan, SHARED);
    assert_eq!(
        errs,
        [
            "plan.yaml:3:11: component `image` is defined in `shared/kernelci.yaml` and again in the plan file"
        ]
    );
}

#[test]
fn an_unknown_list_is_an_error_with_the_definition_named() {
    let plan = PLAN.replace("${lists.images}", "${lists.imgs}");
    let errs = errors(&plan, SHARED);
    assert_eq!(
        errs,
        ["plan.yaml:14:15: step `build`: `for_each` names no list `imgs`"]
    );
    let plan = PLAN.replace("${lists.images}", "images");
    let errs = errors(&plan, SHARED);
    assert!(
        errs.len() == 1 && errs[0].contains("`for_each` is a list, a matrix or `${lists.<name>}`"),
        "{errs:?}"
    );
}

#[test]
fn a_plan_without_include_reads_lists_of_its_own() {
    let plan = PLAN.replace("include: [shared/kernelci.yaml]\n", "")
        + "lists:\n  images: [a, b]\n"
        + "  unused: []\n";
    let plan = plan
        .replace("image[${each.key}]", "local")
        .replace("${each.value.name}", "${each.key}");
    let config = Config::from_str(Path::new("p.yaml"), plan).expect("valid");
    assert_eq!(
        config.file.steps.keys().collect::<Vec<_>>(),
        ["build[a]", "build[b]"]
    );
}
