//! `for_each` on steps and components: one definition, one step or component per item, named
//! `<name>[<key>]`, the item substituted in globs, `with:`, descriptions and references; and
//! what plan, graph, apply and state show.

mod common;

use std::path::Path;

use common::*;
use kcideploy::config::{Config, ConfigError};
use kcideploy::planner::CycleRequest;

const PLAN: &str = r#"
version: 1
name: fe
repos:
  core:
    url: repos/core.git
    pending: { branches: "pr/*" }
components:
  template:
    repo: core
    for_each:
      compiler: [clang-21, gcc-14]
      arch: [arm64, x86]
      exclude: [{ compiler: clang-21, arch: x86 }]
    paths: ["config/docker/${each.value.compiler}-${each.value.arch}.jinja2"]
    description: "${each.value.compiler} template for ${each.value.arch}"
  fragment:
    repo: core
    paths: ["config/docker/fragment/*.jinja2"]
steps:
  install:
    kind: command
    for_each: [arm64, x86]
    on: [fragment]
    with: { shell: "echo install ${each.value}" }
  build:
    kind: command
    for_each:
      compiler: [clang-21, gcc-14]
      arch: [arm64, x86]
      exclude: [{ compiler: clang-21, arch: x86 }]
    on: ["template[${each.key}]"]
    needs: ["install[${each.value.arch}]"]
    description: "build ${each.value.compiler} for ${each.value.arch}"
    with:
      run: [sh, -c, 'echo "built $0 $*"', "${each.value.compiler}", --arch, "${each.value.arch}"]
      env: { ARCH: "${each.value.arch}", LITERAL: "$${each.key}" }
  misc:
    kind: command
    for_each:
      - { key: api, image: kernelci, fragments: [api] }
      - { image: k8s, fragments: [kernelci, gcloud] }
    with: { run: [echo, "${each.value.image}", "${each.value.fragments}"] }
  restart:
    kind: command
    needs: [build]
    after: [misc]
    with: { run: ["true"] }
"#;

fn values(list: &[kcideploy::config::SpannedString]) -> Vec<&str> {
    list.iter().map(|s| s.value.as_str()).collect()
}

#[test]
fn one_definition_expands_into_one_step_per_item_with_the_item_substituted() {
    let config = Config::from_str(Path::new("plan.yaml"), PLAN.to_string()).expect("valid");
    let f = &config.file;
    let steps: Vec<&str> = f.steps.keys().map(String::as_str).collect();
    assert_eq!(
        steps,
        [
            "install[arm64]",
            "install[x86]",
            "build[clang-21/arm64]",
            "build[gcc-14/arm64]",
            "build[gcc-14/x86]",
            "misc[api]",
            "misc[k8s]",
            "restart",
        ]
    );
    let components: Vec<&str> = f.components.keys().map(String::as_str).collect();
    assert_eq!(
        components,
        [
            "template[clang-21/arm64]",
            "template[gcc-14/arm64]",
            "template[gcc-14/x86]",
            "fragment"
        ]
    );
    let t = &f.components["template[gcc-14/x86]"];
    assert_eq!(values(&t.paths), ["config/docker/gcc-14-x86.jinja2"]);
    assert_eq!(t.description.as_deref(), Some("gcc-14 template for x86"));
    assert!(t.for_each.is_none());

    let b = &f.steps["build[gcc-14/x86]"];
    assert_eq!(values(&b.on), ["template[gcc-14/x86]"]);
    assert_eq!(values(&b.needs), ["install[x86]"]);
    assert_eq!(b.description.as_deref(), Some("build gcc-14 for x86"));
    assert_eq!(
        b.with.value["run"],
        serde_json::json!([
            "sh",
            "-c",
            "echo \"built $0 $*\"",
            "gcc-14",
            "--arch",
            "x86"
        ])
    );
    assert_eq!(b.with.value["env"]["ARCH"], "x86");
    assert_eq!(b.with.value["env"]["LITERAL"], "${each.key}");
    // A string item is its own key and value.
    assert_eq!(
        f.steps["install[x86]"].with.value["shell"],
        "echo install x86"
    );
    // A list spliced into a list; a mapping item keyed by `key`, else by its strings.
    assert_eq!(
        f.steps["misc[k8s]"].with.value["run"],
        serde_json::json!(["echo", "k8s", "kernelci", "gcloud"])
    );
    assert_eq!(
        f.steps["misc[api]"].with.value["run"],
        serde_json::json!(["echo", "kernelci", "api"])
    );
    // The name of a `for_each` definition stands for all its steps.
    let r = &f.steps["restart"];
    assert_eq!(
        values(&r.needs),
        [
            "build[clang-21/arm64]",
            "build[gcc-14/arm64]",
            "build[gcc-14/x86]"
        ]
    );
    assert_eq!(values(&r.after), ["misc[api]", "misc[k8s]"]);
}

fn fixture() -> (Fixture, Remote, Config) {
    let fx = Fixture::new();
    let remote = fx.repo(
        "core",
        &[
            ("config/docker/clang-21-arm64.jinja2", Some("clang arm64\n")),
            ("config/docker/gcc-14-arm64.jinja2", Some("gcc arm64\n")),
            ("config/docker/gcc-14-x86.jinja2", Some("gcc x86\n")),
            (
                "config/docker/fragment/kselftest.jinja2",
                Some("kselftest\n"),
            ),
        ],
    );
    let config = fx.config(PLAN);
    fx.deploy(&config, &[("core", remote.main)], Some(NOW - 3600));
    (fx, remote, config)
}

#[test]
fn a_per_arch_template_triggers_only_its_own_build() {
    let (fx, remote, config) = fixture();
    remote.branch(
        "pr/1",
        ALICE,
        &[("config/docker/gcc-14-x86.jinja2", Some("gcc x86 v2\n"))],
    );
    let plan = fx.plan(&config, CycleRequest::Partial);
    assert_eq!(runs(&plan), ["build[gcc-14/x86]", "restart"]);
    // A fragment: every install, then every build through `needs`.
    remote.branch(
        "pr/2",
        ALICE,
        &[("config/docker/fragment/kselftest.jinja2", Some("v2\n"))],
    );
    let plan = fx.plan(&config, CycleRequest::Partial);
    assert_eq!(
        runs(&plan),
        [
            "install[arm64]",
            "install[x86]",
            "build[clang-21/arm64]",
            "build[gcc-14/arm64]",
            "build[gcc-14/x86]",
            "restart"
        ]
    );
}

#[test]
fn plan_graph_apply_and_state_show_the_expanded_names() {
    let (fx, remote, config) = fixture();
    remote.branch(
        "pr/1",
        ALICE,
        &[("config/docker/gcc-14-x86.jinja2", Some("gcc x86 v2\n"))],
    );
    let plan = &config.path;
    let (code, out, err) = output(kcideploy().args(["plan", "-f"]).arg(plan).args([
        "--at",
        at().as_str(),
        "--cycle",
        "partial",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("+ build[gcc-14/x86] (command)"), "{out}");
    assert!(
        out.contains("config/docker/gcc-14-x86.jinja2 → template[gcc-14/x86]"),
        "{out}"
    );
    let (code, out, err) = output(kcideploy().args(["graph", "-f"]).arg(plan));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"install[x86]\" -> \"build[gcc-14/x86]\";"),
        "{out}"
    );
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = output(kcideploy().args(["state", "history", "-f"]).arg(plan));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("build[gcc-14/x86]"), "{out}");
    // The log file: `/` of the key is `,` in a file name.
    let log = find_file(fx.path(), "build[gcc-14,x86].log").expect("the step's log");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("built gcc-14 --arch x86"), "{text}");
}

fn find_file(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir()
            && let Some(found) = find_file(&path, name)
        {
            return Some(found);
        }
    }
    None
}

/// The messages of a plan file that does not load.
fn errors(text: &str) -> Vec<String> {
    match Config::from_str(Path::new("plans/bad.yaml"), text.to_string()) {
        Ok(_) => panic!("plan file was accepted:\n{text}"),
        Err(e @ (ConfigError::Syntax(_) | ConfigError::Invalid(_))) => e
            .errors()
            .iter()
            .map(|e| format!("{} [{}]", e.message, e.help.as_deref().unwrap_or("")))
            .collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

const HEAD: &str = "version: 1\nname: t\nrepos:\n  core: { url: repos/core.git }\nsteps:\n";

#[test]
fn a_bad_for_each_is_an_error_at_its_position() {
    let mut missing = Vec::new();
    for (steps, expected) in [
        (
            "  b:\n    kind: command\n    for_each: { arch: arm64 }\n    with: { run: [x] }\n",
            "plans/bad.yaml:8:23: step `b`: matrix axis `arch` is not a list of strings",
        ),
        (
            "  b:\n    kind: command\n    for_each: []\n    with: { run: [x] }\n",
            "plans/bad.yaml:8:15: step `b`: `for_each` gives no items",
        ),
        (
            "  b:\n    kind: command\n    for_each: [x, [y]]\n    with: { run: [x] }\n",
            "plans/bad.yaml:8:19: step `b`: a `for_each` item is a string or a mapping",
        ),
        (
            "  b:\n    kind: command\n    for_each: { a: [x, y], exclude: [{ b: x }] }\n    with: { run: [x] }\n",
            "plans/bad.yaml:8:37: step `b`: `exclude` names unknown axis `b`",
        ),
        (
            "  b:\n    kind: command\n    for_each: { a: [x, y], exclude: [{ a: z }] }\n    with: { run: [x] }\n",
            "step `b`: this `exclude` entry matches no combination",
        ),
        (
            "  b:\n    kind: command\n    for_each: [\"a b\"]\n    with: { run: [x] }\n",
            "plans/bad.yaml:8:16: step `b`: item key `a b` cannot be part of a name",
        ),
        (
            "  b:\n    kind: command\n    for_each: [{ arch: x }]\n    with: { run: [\"${each.value.arhc}\"] }\n",
            "plans/bad.yaml:9:11: `${each.value.arhc}`: the `for_each` item has no field `arhc` [did you mean `arch`?]",
        ),
        (
            "  b:\n    kind: command\n    for_each: [x]\n    needs: [\"a[${each.value.arch}]\"]\n    with: { run: [x] }\n",
            "plans/bad.yaml:9:13: `${each.value.arch}`: the `for_each` items are strings",
        ),
        (
            "  b:\n    kind: command\n    needs: [\"a[${each.key}]\"]\n    with: { run: [x] }\n",
            "plans/bad.yaml:8:13: `${each.key}` is only defined in a step or component with `for_each`",
        ),
        (
            "  b:\n    kind: command\n    for_each: [x]\n    with: { run: [\"${each.key\"] }\n",
            "plans/bad.yaml:9:11: unterminated reference",
        ),
        (
            "  b:\n    kind: command\n    for_each: [{ f: [a] }]\n    with: { run: [x] }\n",
            "plans/bad.yaml:8:16: step `b`: the item has no string field to key it by [add `key: <name>` to the item]",
        ),
        (
            "  b:\n    kind: command\n    for_each: \"oops\"\n    with: { run: [x] }\n",
            "plans/bad.yaml:8:15: `for_each` is a list, a matrix or `${lists.<name>}`, not `oops`",
        ),
    ] {
        let all = errors(&format!("{HEAD}{steps}"));
        if !all.iter().any(|e| e.contains(expected)) {
            missing.push(format!("{expected}\nnot in {all:#?}"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn two_items_with_the_same_key_are_an_error_naming_both_lines() {
    let all = errors(&format!(
        "{HEAD}  b:\n    kind: command\n    for_each:\n      - {{ image: kernelci, fragments: [api] }}\n      - {{ image: kernelci, fragments: [pipeline] }}\n    with: {{ run: [x] }}\n"
    ));
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0].starts_with(
            "plans/bad.yaml:10:9: `for_each` of step `b` gives `b[kernelci]` twice (the first at line 9)"
        ),
        "{all:?}"
    );
    assert!(all[0].contains("distinct `key:`"), "{all:?}");
    // The same name twice in a matrix.
    let all = errors(&format!(
        "{HEAD}  b:\n    kind: command\n    for_each: {{ arch: [x86, x86] }}\n    with: {{ run: [x] }}\n"
    ));
    assert!(all[0].contains("gives `b[x86]` twice"), "{all:?}");
}

#[test]
fn checks_run_on_the_expanded_steps() {
    // An instance names an instance that does not exist: the error names both, at the
    // reference's position, with the closest existing name.
    let text = format!(
        "{HEAD}  a:\n    kind: command\n    for_each: [arm64]\n    with: {{ run: [x] }}\n  b:\n    kind: command\n    for_each: [arm64, x86]\n    needs: [\"a[${{each.key}}]\"]\n    with: {{ run: [x] }}\n"
    );
    let all = errors(&text);
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0].starts_with("plans/bad.yaml:13:13: step `b[x86]` needs unknown step `a[x86]`"),
        "{all:?}"
    );
    // One mistake in the definition is one error, however many steps it makes.
    let text = format!(
        "{HEAD}  b:\n    kind: command\n    for_each: [arm64, x86, arc]\n    on: [nope]\n    with: {{ run: [x] }}\n"
    );
    let all = errors(&text);
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0].starts_with(
            "plans/bad.yaml:9:10: step `b[arm64]` is triggered by unknown component `nope` (and 2 more from the same text)"
        ),
        "{all:?}"
    );
    // `with:` is checked per expanded step, after substitution.
    let text = format!(
        "{HEAD}  b:\n    kind: git_push\n    for_each: [core, api]\n    with: {{ repo: \"${{each.key}}\" }}\n"
    );
    let all = errors(&text);
    assert!(
        all.iter()
            .any(|e| e.contains("step `b[api]`: with.repo names unknown repo `api`")),
        "{all:?}"
    );
}

/// The README's example: the 19 compiler images of KernelCI's image workflow
/// (`docker-compiler-build` in the snapshot's images.json) from one component and one step.
#[test]
fn the_readme_example_expands_into_the_19_compiler_images() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("read");
    let section = &readme[readme.find("### `for_each`").expect("the for_each section")..];
    let start = section.find("```yaml\n").expect("an example") + "```yaml\n".len();
    let example = &section[start..start + section[start..].find("```").expect("its end")];
    // The example's steps follow its components: the component it names goes between.
    let (components, steps) = example
        .split_once("steps:\n")
        .expect("components, then steps");
    let text = format!(
        "version: 1\nname: readme\nrepos:\n  kernelci-core: {{ url: core.git }}\n{components}  fragment-kselftest: {{ repo: kernelci-core, paths: [\"config/docker/fragment/kselftest.jinja2\"] }}\nsteps:\n{steps}"
    );
    let config = Config::from_str(Path::new("README.md"), text).expect("the example loads");
    let built: Vec<&str> = config
        .file
        .steps
        .keys()
        .filter_map(|k| k.strip_prefix("build-compiler[")?.strip_suffix(']'))
        .collect();
    let images: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kernelci-snapshot/images.json"
        ))
        .expect("images.json"),
    )
    .expect("json");
    let mut expected: Vec<String> = images["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter(|i| i["workflow_job"] == "docker-compiler-build")
        .map(|i| {
            format!(
                "{}/{}",
                i["image"].as_str().expect("image"),
                i["arch"].as_str().expect("arch")
            )
        })
        .collect();
    assert_eq!(expected.len(), 19);
    let mut built: Vec<String> = built.into_iter().map(String::from).collect();
    built.sort();
    expected.sort();
    assert_eq!(built, expected);
    let step = &config.file.steps["build-compiler[gcc-15/arm64]"];
    assert_eq!(
        values(&step.on),
        ["compiler-template[gcc-15/arm64]", "fragment-kselftest"]
    );
    assert_eq!(
        values(&config.file.components["compiler-template[gcc-15/arm64]"].paths),
        ["config/docker/gcc-15-arm64.jinja2"]
    );
    assert_eq!(
        config.file.steps["misc-image[api]"].with.value["run"],
        serde_json::json!(["kci", "docker", "build", "kernelci", "api"])
    );
    assert_eq!(config.file.steps["restart"].needs.len(), 21);
}

#[test]
fn a_step_triggered_by_a_for_each_component_name_is_triggered_by_each_of_them() {
    let text = "version: 1\nname: t\nrepos:\n  core: { url: repos/core.git }\ncomponents:\n  template:\n    repo: core\n    for_each: [arm64, x86]\n    paths: [\"config/${each.key}/**\"]\n    exclude: [\"config/${each.key}/README\"]\nsteps:\n  lint:\n    kind: command\n    on: [template]\n    with: { run: [x] }\n";
    let config = Config::from_str(Path::new("plan.yaml"), text.to_string()).expect("valid");
    assert_eq!(
        values(&config.file.steps["lint"].on),
        ["template[arm64]", "template[x86]"]
    );
    assert_eq!(
        values(&config.file.components["template[x86]"].exclude),
        ["config/x86/README"]
    );
}
