//! `kcideploy plan --explain-paths`: what a change to each component triggers, from the plan
//! file alone, the same every time (a README section can be compared with it).

mod common;

use common::*;

const PLAN: &str = r#"
version: 1
name: explain
repos:
  core:
    url: repos/does-not-exist.git
    ignore:
      - paths: ["tests/**"]
        reason: "tests run in CI | not on staging"
components:
  template:
    repo: core
    for_each: [arm64, x86]
    paths: ["config/docker/gcc-14-${each.key}.jinja2"]
  fragment:
    repo: core
    paths: ["config/docker/fragment/**"]
    exclude: ["config/docker/fragment/README"]
  docs:
    repo: core
    paths: ["doc/**"]
steps:
  build:
    kind: command
    for_each: [arm64, x86]
    on: ["template[${each.key}]", fragment]
    with: { run: ["true"] }
  restart:
    kind: command
    needs: [build]
    with: { run: ["true"] }
  rootfs:
    kind: command
    cycle: full
    needs: ["build[x86]"]
    with: { run: ["true"] }
  kernel:
    kind: command
    cycle: full
    always: true
    after: [restart]
    with: { run: ["true"] }
"#;

const EXPECTED: &str = "\
| repo | component | paths | a change triggers |
|---|---|---|---|
| `core` | `template[arm64]` | `config/docker/gcc-14-arm64.jinja2` | `build[arm64]`, `restart` |
| `core` | `template[x86]` | `config/docker/gcc-14-x86.jinja2` | `build[x86]`, `restart`, `rootfs` (full cycles) |
| `core` | `fragment` | `config/docker/fragment/**` except `config/docker/fragment/README` | `build[arm64]`, `build[x86]`, `restart`, `rootfs` (full cycles) |
| `core` | `docs` | `doc/**` | nothing |
| `core` | ignored: tests run in CI \\| not on staging | `tests/**` | nothing |

Whatever changed, every cycle they belong to runs `kernel` (full cycles).
";

#[test]
fn explain_paths_prints_what_each_component_triggers_through_needs() {
    let fx = Fixture::new();
    let plan = fx.plan_file(PLAN);
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "-f"])
            .arg(&plan)
            .arg("--explain-paths"),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, EXPECTED);
    // Nothing was fetched (the repo does not exist), and the output is the same every time.
    let (code, again, _) = output(
        kcideploy()
            .args(["plan", "-explain-paths", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0);
    assert_eq!(again, out);
}

#[test]
fn explain_paths_does_not_mix_with_planning_options() {
    let fx = Fixture::new();
    let plan = fx.plan_file(PLAN);
    for flag in ["-out=x.json", "--json", "-detailed-exitcode", "--diff"] {
        let (code, _, err) = output(
            kcideploy()
                .args(["plan", "--explain-paths", flag, "-f"])
                .arg(&plan),
        );
        assert_eq!(code, 64, "{flag}: {err}");
        assert!(err.contains("cannot be used with"), "{err}");
    }
}
