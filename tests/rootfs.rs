//! Rootfs images built ahead, tested on staging, then promoted (#23 item 2). Command steps
//! stand in for the rootfs builder (a shell script that "builds" by writing a file and
//! publishes its URL to `$KCIDEPLOY_OUTPUT`), a stage step points a copy of staging's
//! `rootfs.yaml` at the URLs it reads from `$KCIDEPLOY_STEP_OUTPUTS`, per-config tests read
//! their URL through `${steps.<build>.outputs.url}`. `kcideploy promote-rootfs` then opens a
//! PR on the fake GitHub, from a branch pushed to the real configuration repo, with only the
//! configs that passed; a killed build resumes at the config it was building.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fake_github::{Fake, Shared};

const CONFIGS: [&str; 5] = ["c1", "c2", "c3", "c4", "c5"];
const OLD: &str = "20260101.0";
const NEW: &str = "20261130.0";

const BUILD_SH: &str = r#"set -e
key=$1
echo "$key" >> builds.log
if [ -e "slow-$key" ]; then touch "started-$key"; sleep 60; fi
if [ -e "fail-$key" ]; then echo "build of $key failed" >&2; exit 1; fi
mkdir -p "storage/$key/20261130.0/amd64"
echo "rootfs $key" > "storage/$key/20261130.0/amd64/rootfs.cpio.gz"
echo "url=https://storage.example.org/images/rootfs/debian/$key/20261130.0" >> "$KCIDEPLOY_OUTPUT"
"#;

/// Points staging's copy of the configuration at every URL the builds published.
const STAGE_SH: &str = r#"set -e
tab=$(printf '\t')
while IFS="$tab" read -r step key url; do
  [ "$key" = url ] || continue
  stem=${url%/*}; stem=${stem#*://}; version=${url##*/}
  sed -i "s#$stem/[0-9]\{8\}\.[0-9]*#$stem/$version#g" staging/rootfs.yaml
  echo "$step $url" >> staged.log
done < "$KCIDEPLOY_STEP_OUTPUTS"
"#;

/// Tests one config on staging: its URL is what staging uses, unless `badtest-<key>`.
const TEST_SH: &str = r#"key=$1; url=$2
[ -n "$url" ] || exit 2
grep -q "$url" staging/rootfs.yaml || { echo "staging does not use $url" >&2; exit 3; }
if [ -e "badtest-$key" ]; then echo "tests on $key failed" >&2; exit 1; fi
echo "$key $url" >> tested.log
"#;

fn rootfs_yaml(version_of: impl Fn(&str) -> &'static str) -> String {
    let mut text = String::from("# rootfs URLs\nrootfs:\n");
    for c in CONFIGS {
        text.push_str(&format!(
            "  {c}:\n    nfsroot: 'https://storage.example.org/images/rootfs/debian/{c}/{}/{{debarch}}'\n",
            version_of(c)
        ));
    }
    text
}

fn plan_text(api: &str) -> String {
    format!(
        r#"version: 1
name: staging
github: {{ api_url: "{api}", token_env: KCI_TEST_TOKEN, max_wait: 30s }}
repos:
  config: {{ url: repos/config.git, github_repo: kernelci/core }}
components:
  recipe: {{ repo: config, for_each: [c1, c2, c3, c4, c5], paths: ["recipes/${{each.key}}/**"] }}
steps:
  build-rootfs:
    kind: command
    for_each: [c1, c2, c3, c4, c5]
    on: ["recipe[${{each.key}}]"]
    timeout: 2m
    with: {{ run: [sh, build.sh, "${{each.key}}"] }}
  stage-rootfs:
    kind: command
    always: true
    after: [build-rootfs]
    run_after_failures: true
    with: {{ run: [sh, stage.sh] }}
  test-rootfs:
    kind: command
    for_each: [c1, c2, c3, c4, c5]
    always: true
    needs: ["build-rootfs[${{each.key}}]"]
    after: [stage-rootfs]
    with: {{ run: [sh, test.sh, "${{each.key}}", "${{steps.build-rootfs[${{each.key}}].outputs.url}}"] }}
  check-kernel:
    kind: command
    always: true
    after: [test-rootfs]
    run_after_failures: true
    with: {{ run: ["true"] }}
rootfs:
  build: build-rootfs
  stage: stage-rootfs
  tests: test-rootfs
  checks: [check-kernel]
  repo: config
  file: config/rootfs.yaml
"#
    )
}

struct Setup {
    fx: Fixture,
    remote: Remote,
    github: Shared,
    plan: std::path::PathBuf,
}

fn setup() -> Setup {
    let fx = Fixture::new();
    let old = rootfs_yaml(|_| OLD);
    let mut files: Vec<(String, String)> = vec![("config/rootfs.yaml".into(), old.clone())];
    for c in CONFIGS {
        files.push((format!("recipes/{c}/recipe.yaml"), format!("name: {c}\n")));
    }
    let edits: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), Some(t.as_str())))
        .collect();
    let remote = fx.repo("config", &edits);
    let github: Shared = Arc::new(Mutex::new(Fake::default()));
    let api = fake_github::start(github.clone());
    let dir = fx.path();
    for (name, text) in [
        ("build.sh", BUILD_SH),
        ("stage.sh", STAGE_SH),
        ("test.sh", TEST_SH),
    ] {
        std::fs::write(dir.join(name), text).expect("script");
    }
    std::fs::create_dir_all(dir.join("staging")).expect("staging dir");
    std::fs::write(dir.join("staging/rootfs.yaml"), old).expect("staging config");
    let plan = fx.plan_file(&plan_text(&api));
    Setup {
        fx,
        remote,
        github,
        plan,
    }
}

fn touch(dir: &Path, name: &str) {
    std::fs::write(dir.join(name), "").expect("touch");
}

fn apply(s: &Setup) -> (i32, String, String) {
    output(kcideploy().current_dir(s.fx.path()).args([
        "apply",
        "-f",
        s.plan.to_str().expect("utf-8"),
        "-auto-approve",
        "--parallelism",
        "1",
    ]))
}

fn promote(s: &Setup) -> (i32, String, String) {
    output(
        kcideploy()
            .current_dir(s.fx.path())
            .env("KCI_TEST_TOKEN", fake_github::TOKEN)
            .args(["promote-rootfs", "-f", s.plan.to_str().expect("utf-8")]),
    )
}

/// How many times each config was built.
fn builds(dir: &Path) -> Vec<(String, usize)> {
    let log = std::fs::read_to_string(dir.join("builds.log")).unwrap_or_default();
    CONFIGS
        .iter()
        .map(|c| (c.to_string(), log.lines().filter(|l| l == c).count()))
        .collect()
}

fn counts(list: &[(&str, usize)]) -> Vec<(String, usize)> {
    list.iter().map(|(c, n)| (c.to_string(), *n)).collect()
}

#[test]
fn promotion_pr_holds_only_the_rootfs_that_passed_staging() {
    let s = setup();
    let dir = s.fx.path();
    touch(dir, "fail-c3"); // its build fails
    touch(dir, "badtest-c2"); // built and staged, but its tests fail on staging
    let (code, out, err) = apply(&s);
    assert_eq!(code, 1, "two configs fail: {out}\n{err}");
    assert_eq!(
        builds(dir),
        counts(&[("c1", 1), ("c2", 1), ("c3", 1), ("c4", 1), ("c5", 1)])
    );
    let staged = std::fs::read_to_string(dir.join("staging/rootfs.yaml")).expect("staged");
    for (c, v) in [
        ("c1", NEW),
        ("c2", NEW),
        ("c3", OLD),
        ("c4", NEW),
        ("c5", NEW),
    ] {
        assert!(
            staged.contains(&format!("debian/{c}/{v}/")),
            "staging uses {c} {v}:\n{staged}"
        );
    }
    let tested = std::fs::read_to_string(dir.join("tested.log")).expect("tested");
    assert!(
        tested.contains(&format!(
            "c1 https://storage.example.org/images/rootfs/debian/c1/{NEW}"
        )),
        "{tested}"
    );
    let state = state_of(&s.fx, "staging");
    assert_eq!(
        state.steps["build-rootfs[c4]"]
            .outputs
            .as_ref()
            .expect("outputs")["outputs"]["url"],
        format!("https://storage.example.org/images/rootfs/debian/c4/{NEW}")
    );

    // A dry run shows the PR and opens nothing.
    let (code, out, err) = output(kcideploy().current_dir(dir).args([
        "promote-rootfs",
        "--dry-run",
        "-f",
        s.plan.to_str().expect("utf-8"),
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("Dry run: nothing pushed") && out.contains("| `c4` |"),
        "{out}"
    );
    assert!(s.github.lock().expect("fake").opened.is_empty());

    let (code, out, err) = promote(&s);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains(fake_github::TOKEN) && !err.contains(fake_github::TOKEN));
    assert!(
        out.contains("Opened PR #1 against `kernelci/core` main from `kcideploy/rootfs-"),
        "{out}"
    );
    for c in ["c1", "c4", "c5"] {
        assert!(
            out.contains(&format!("  + {c} https://")),
            "{c} promoted:\n{out}"
        );
    }
    assert!(
        out.contains("  - c2: `test-rootfs[c2]` failed in run"),
        "{out}"
    );
    assert!(
        out.contains("  - c3: its last build failed: `build-rootfs[c3]` failed"),
        "{out}"
    );
    let opened = s.github.lock().expect("fake").opened.clone();
    assert_eq!(opened.len(), 1, "one PR: {opened:?}");
    let pr = &opened[0];
    assert_eq!(pr["base"], "main");
    let branch = pr["head"].as_str().expect("head").to_string();
    assert!(branch.starts_with("kcideploy/rootfs-"), "{branch}");
    let body = pr["body"].as_str().expect("body");
    for c in ["c1", "c4", "c5"] {
        assert!(
            body.contains(&format!(
                "| `{c}` | https://storage.example.org/images/rootfs/debian/{c}/{NEW} | {OLD} |"
            )),
            "{c} in the body:\n{body}"
        );
        assert!(
            body.contains(&format!("`test-rootfs[{c}]` ✓ run")),
            "{body}"
        );
    }
    assert!(
        body.contains("`check-kernel` ✓ run") && body.contains("`stage-rootfs` ✓ run"),
        "{body}"
    );
    assert!(
        body.contains("- `c2`: `test-rootfs[c2]` failed")
            && body.contains("- `c3`: its last build failed"),
        "{body}"
    );
    assert!(
        pr["title"].as_str().expect("title").contains("c1, c4, c5"),
        "{pr}"
    );

    // The branch is in the real configuration repo: only the passed URLs moved.
    let head = s
        .remote
        .repo
        .refname_to_id(&format!("refs/heads/{branch}"))
        .expect("the branch is pushed");
    let promoted =
        Remote::file_at(&s.remote.path, &head.to_string(), "config/rootfs.yaml").expect("file");
    let want = rootfs_yaml(|c| {
        if ["c1", "c4", "c5"].contains(&c) {
            NEW
        } else {
            OLD
        }
    });
    assert_eq!(promoted, want);
    let main = s
        .remote
        .repo
        .refname_to_id("refs/heads/main")
        .expect("main");
    assert_eq!(main, s.remote.main, "main is left to the PR");

    // Again: the same URLs, the same branch, the PR open already.
    let (code, out, _) = promote(&s);
    assert_eq!(code, 0);
    assert!(out.contains("is open from `kcideploy/rootfs-"), "{out}");
    assert_eq!(s.github.lock().expect("fake").opened.len(), 1);
}

#[test]
fn a_failed_build_is_built_alone_in_the_next_run_and_then_passes() {
    let s = setup();
    let dir = s.fx.path();
    touch(dir, "fail-c3");
    assert_eq!(apply(&s).0, 1);
    std::fs::remove_file(dir.join("fail-c3")).expect("rm");
    // The next cycle (a new run: `always` steps run again) builds c3 alone, then stages and
    // tests every config.
    let (code, out, err) = apply(&s);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        builds(dir),
        counts(&[("c1", 1), ("c2", 1), ("c3", 2), ("c4", 1), ("c5", 1)])
    );
    let (code, out, err) = promote(&s);
    assert_eq!(code, 0, "{out}\n{err}");
    for c in CONFIGS {
        assert!(
            out.contains(&format!("  + {c} https://")),
            "{c} promoted:\n{out}"
        );
    }
}

#[test]
fn a_killed_build_resumes_at_the_config_it_was_building() {
    let s = setup();
    let dir = s.fx.path();
    touch(dir, "slow-c3");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("kcideploy"))
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .args([
            "apply",
            "-f",
            s.plan.to_str().expect("utf-8"),
            "-auto-approve",
            "--parallelism",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("apply");
    let started = Instant::now();
    while !dir.join("started-c3").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "c3 never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    std::fs::remove_file(dir.join("slow-c3")).expect("rm");
    assert_eq!(
        builds(dir),
        counts(&[("c1", 1), ("c2", 1), ("c3", 1), ("c4", 0), ("c5", 0)])
    );
    let (code, out, err) = apply(&s);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        builds(dir),
        counts(&[("c1", 1), ("c2", 1), ("c3", 2), ("c4", 1), ("c5", 1)]),
        "c1 and c2 are not rebuilt:\n{out}"
    );
    let state = state_of(&s.fx, "staging");
    for c in CONFIGS {
        let url = &state.steps[&format!("build-rootfs[{c}]")]
            .outputs
            .as_ref()
            .expect("outputs")["outputs"]["url"];
        assert_eq!(
            url,
            &format!("https://storage.example.org/images/rootfs/debian/{c}/{NEW}")
        );
    }
}

#[test]
fn step_output_references_are_checked_when_the_plan_loads() {
    let fx = Fixture::new();
    fx.repo("config", &[("a", Some("a\n"))]);
    let plan = fx.plan_file(
        "version: 1\nname: t\nrepos:\n  config: { url: repos/config.git }\nsteps:\n  build: { kind: command, with: { run: [\"true\"] } }\n  use:\n    kind: command\n    needs: [build]\n    with: { run: [echo, \"${steps.biuld.outputs.url}\"] }\n  early:\n    kind: command\n    with: { shell: \"echo ${steps.build.outputs.url}\" }\n  odd:\n    kind: command\n    needs: [build]\n    with: { run: [\"true\"], cwd: \"${steps.build.outputs.dir}\" }\n",
    );
    let (code, _, err) =
        output(kcideploy().args(["validate", "-f", plan.to_str().expect("utf-8")]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("plan.yaml:11:26: step `use` reads outputs of unknown step `biuld`"),
        "{err}"
    );
    assert!(err.contains("did you mean `build`?"), "{err}");
    assert!(err.contains("plan.yaml:14:26: step `early` reads outputs of step `build`, which it neither `needs` nor runs `after`"), "{err}");
    assert!(
        err.contains("step `odd`: `${steps.build.outputs.dir}` in with.cwd: other steps' outputs are read in `run`, `shell` and `env` only"),
        "{err}"
    );
}
