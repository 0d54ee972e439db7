//! A cycle of plans/staging.yaml applied against the snapshot's repos, with `python3`,
//! `docker` and `docker-compose` replaced on PATH by stubs that check their arguments as the
//! real tools would (DEPLOY.md, IMAGES.md): `kci docker build` names a template and fragments
//! that exist in core's staging checkout, `--arch` only where a per-arch template exists,
//! `--prefix` and `key=value` build arguments; the re-push under Docker Hub's name is the
//! ghcr.io name with its prefix swapped; compose gets the four files in the real order and
//! the sub-commands in the real script's order.

mod common;
#[path = "common/fake_kernelci.rs"]
mod fake_kernelci;
#[path = "common/snapshot.rs"]
mod snapshot;

use std::os::unix::fs::PermissionsExt;

use common::*;

const CORE: &str = "kernelci-core";
const API: &str = "kernelci-api";
const PIPELINE: &str = "kernelci-pipeline";

/// `python3`: `-m pip install …` and `./kci docker build …`, checked; everything logged.
const PYTHON3: &str = r#"#!/bin/sh
log="$STUB_LOG"
echo "python3 $*" >> "$log"
fail() { echo "stub python3: $*" >&2; echo "BAD python3: $*" >> "$log"; exit 2; }
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  for f in requirements-dev.txt config/docker/requirements.txt; do [ -f "$f" ] || fail "no $f in $(pwd)"; done
  exit 0
fi
[ "$1" = "./kci" ] || fail "expected ./kci, got $1"
[ -f kernelci/cli/docker.py ] || fail "not in a kernelci-core checkout: $(pwd)"
shift
if [ "$1 $2" = "rootfs build" ]; then
  # kci rootfs build NAME (--arch A ... | --all-arches): kernelci/cli/rootfs.py:130-196
  name="$3"; shift 3
  grep -q "^  $name:\$" config/core/rootfs-configs.yaml || fail "no rootfs config $name"
  all=; arch=
  for a in "$@"; do
    case "$a" in
      --all-arches) all=1 ;;
      --arch) arch=1 ;;
      --output-dir|--cache-dir|--pull|--verbose) ;;
      -*) fail "rootfs option $a" ;;
    esac
  done
  # doc/rootfs.md: artifacts go to <output-dir>/<configuration>/<architecture>/.
  mkdir -p "output/$name/amd64" && echo rootfs > "output/$name/amd64/rootfs.cpio.gz"
  [ -n "$all$arch" ] || fail "rootfs build $name without --arch or --all-arches"
  [ "$all$arch" != 11 ] || fail "rootfs build $name with both --arch and --all-arches"
  echo "ROOTFS $name" >> "$log"
  exit 0
fi
[ "$1 $2" = "docker build" ] || fail "expected docker build, got $1 $2"
shift 2
image=; arch=; prefix=; frags=
while [ $# -gt 0 ]; do
  case "$1" in
    --verbose|--push) ;;
    --prefix) prefix="$2"; shift ;;
    --arch) arch="$2"; shift ;;
    --build-arg) case "$2" in *=*) ;; *) fail "build arg without =: $2" ;; esac; shift ;;
    -*) fail "unknown option $1" ;;
    *) if [ -z "$image" ]; then image="$1"; else frags="$frags $1"; fi ;;
  esac
  shift
done
[ "$prefix" = "ghcr.io/kernelci/staging-" ] || fail "prefix $prefix"
if [ -n "$arch" ]; then t="config/docker/$image-$arch.jinja2"; else t="config/docker/$image.jinja2"; fi
[ -f "$t" ] || fail "no template $t"
for f in $frags; do [ -f "config/docker/fragment/$f.jinja2" ] || fail "no fragment $f"; done
echo "BUILT $image${arch:+ --arch $arch}$frags" >> "$log"
"#;

/// `rsync -a --mkpath SRC DEST`: a rootfs published (rootfs.yml's `<type>/<name>/<version>/`).
const RSYNC: &str = r#"#!/bin/sh
log="$STUB_LOG"
fail() { echo "stub rsync: $*" >&2; echo "BAD rsync: $*" >> "$log"; exit 2; }
[ "$1 $2" = "-a --mkpath" ] || fail "options $1 $2"
[ -d "$3" ] || fail "no $3 in $(pwd)"
case "$4" in */debian/*/[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9].0/|*/buildroot/*/[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9].0/) ;; *) fail "destination $4" ;; esac
echo "PUBLISHED $4" >> "$log"
"#;

/// `docker`: `tag ghcr.io/kernelci/staging-X kernelci/staging-X` and `push kernelci/staging-X`.
const DOCKER: &str = r#"#!/bin/sh
log="$STUB_LOG"
echo "docker $*" >> "$log"
fail() { echo "stub docker: $*" >&2; echo "BAD docker: $*" >> "$log"; exit 2; }
case "$1" in
  tag) [ "$#" = 3 ] || fail "tag takes 2 names"
       [ "kernelci/staging-${2#ghcr.io/kernelci/staging-}" = "$3" ] || fail "tag $2 as $3"
       case "$2" in ghcr.io/kernelci/staging-*) ;; *) fail "source $2" ;; esac ;;
  push) case "$2" in kernelci/staging-*) ;; *) fail "push $2" ;; esac ;;
  *) fail "unexpected docker $1" ;;
esac
"#;

/// `docker-compose`: the project's files in the real order, then one sub-command.
const COMPOSE: &str = r#"#!/bin/sh
log="$STUB_LOG"
fail() { echo "stub docker-compose: $*" >&2; echo "BAD docker-compose: $*" >> "$log"; exit 2; }
[ "$1" = "version" ] && { echo "docker-compose version 1.29.2"; exit 0; }
files=; project=
while [ $# -gt 0 ]; do
  case "$1" in
    -f) files="$files $2"; shift ;;
    -p|--project-name) project="$2"; shift ;;
    *) break ;;
  esac
  shift
done
case "$project" in
  kernelci-pipeline)
    [ "$files" = " docker-compose.yaml docker-compose-kcidb.yaml docker-compose-lava.yaml docker-compose-production.yaml" ] || fail "pipeline files:$files"
    [ -n "$KCI_SETTINGS" ] || fail "no KCI_SETTINGS" ;;
  kernelci-api) [ -z "$files" ] || fail "api files:$files" ;;
  *) fail "project $project" ;;
esac
for f in $files; do [ -f "$f" ] || fail "no $f in $(pwd)"; done
if [ "$project $1" = "kernelci-pipeline up" ] && [ -n "__KERNEL__" ]; then
  # The trigger polls once at start-up: the pipe-cleaner branch must be there already.
  git --git-dir "__KERNEL__" rev-parse --verify -q refs/heads/staging-next >/dev/null \
    || fail "pipeline up before the kernel was pushed"
  echo "KERNEL-PUSHED-BEFORE-UP" >> "$log"
fi
echo "COMPOSE $project $*" >> "$log"
"#;

/// A stub on PATH; it logs to `log` (steps start from a clean environment, so the path is
/// written into the stub), and knows the kernel repo the pipe-cleaner pushes to, if any.
fn stub(dir: &std::path::Path, name: &str, text: &str, log: &std::path::Path, kernel: &str) {
    let path = dir.join(name);
    let text = text
        .replace("\"$STUB_LOG\"", &format!("'{}'", log.display()))
        .replace("__KERNEL__", kernel);
    std::fs::write(&path, text).expect("write stub");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn a_cycle_runs_the_real_tools_with_the_arguments_they_accept() {
    let fx = Fixture::new();
    let remotes = snapshot::repos(&fx, &[CORE, API, PIPELINE]);
    let checkouts = fx.path().join("checkout");
    let text = snapshot::staging_plan_text().replace(
        "/home/kernelci/checkout/",
        &format!("{}/", checkouts.display()),
    );
    let config = fx.config(&text);
    fx.deploy(
        &config,
        &[
            (CORE, remotes[CORE].main),
            (API, remotes[API].main),
            (PIPELINE, remotes[PIPELINE].main),
        ],
        Some(NOW - 3600),
    );
    // kci docker itself changes: every image is rebuilt, and the services restart.
    let mut docker_py = snapshot::content(CORE, "kernelci/docker.py");
    docker_py.extend_from_slice(b"\n# changed\n");
    let docker_py = String::from_utf8(docker_py).expect("utf-8");
    remotes[CORE].branch("pr/1", ALICE, &[("kernelci/docker.py", Some(&docker_py))]);

    let stubs = fx.path().join("stubs");
    std::fs::create_dir_all(&stubs).expect("stubs");
    let log = fx.path().join("calls.log");
    stub(&stubs, "python3", PYTHON3, &log, "");
    stub(&stubs, "docker", DOCKER, &log, "");
    stub(&stubs, "docker-compose", COMPOSE, &log, "");
    let path = format!(
        "{}:{}",
        stubs.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (code, out, err) = output(
        kcideploy()
            .env("PATH", &path)
            .args([
                "apply",
                "-auto-approve",
                "--cycle",
                "partial",
                "--no-notify",
                "--at",
                &at(),
                "-f",
            ])
            .arg(&config.path),
    );
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, 0, "{out}{err}\n{calls}");
    assert!(!calls.contains("BAD "), "{calls}");

    // Every image of the real workflow, built as the workflow builds it.
    let images = snapshot::images();
    let built: Vec<&str> = calls
        .lines()
        .filter_map(|l| l.strip_prefix("BUILT "))
        .collect();
    assert_eq!(built.len(), images.len(), "{calls}");
    for image in &images {
        // `gcc-14 kselftest kernelci --arch arm64` as the stub logs it: image, arch, fragments.
        let mut words = image.kci_command.split_whitespace();
        let name = words.next().expect("image");
        let rest: Vec<&str> = words.collect();
        let (frags, arch) = match rest.iter().position(|w| *w == "--arch") {
            Some(i) => (rest[..i].join(" "), Some(rest[i + 1])),
            None => (rest.join(" "), None),
        };
        let expected = format!(
            "{name}{}{}",
            arch.map(|a| format!(" --arch {a}")).unwrap_or_default(),
            if frags.is_empty() {
                String::new()
            } else {
                format!(" {frags}")
            }
        );
        assert!(built.contains(&expected.as_str()), "{expected}\n{calls}");
        for staging in &image.staging_names {
            let hub = staging.replace("ghcr.io/kernelci/staging-", "kernelci/staging-");
            assert!(
                calls.contains(&format!("docker push {hub}")),
                "{hub}\n{calls}"
            );
        }
    }

    // The restart in the real script's order.
    let compose: Vec<&str> = calls
        .lines()
        .filter_map(|l| l.strip_prefix("COMPOSE "))
        .collect();
    let order: Vec<String> = compose
        .iter()
        .map(|c| {
            let mut w = c.split_whitespace();
            format!("{} {}", w.next().unwrap_or(""), w.next().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        order,
        [
            "kernelci-pipeline pull",
            "kernelci-pipeline down",
            "kernelci-api pull",
            "kernelci-api down",
            "kernelci-api up",
            "kernelci-pipeline up",
        ],
        "{calls}"
    );
    assert!(
        compose.contains(&"kernelci-pipeline down --remove-orphans"),
        "{calls}"
    );
    assert!(
        compose.contains(&"kernelci-api up -d api db redis"),
        "{calls}"
    );
}

#[test]
fn a_full_cycle_builds_rootfs_pushes_the_kernel_before_the_restart_and_checks_it() {
    use std::sync::{Arc, Mutex};
    let fx = Fixture::new();
    let remotes = snapshot::repos(&fx, &[CORE, API, PIPELINE]);
    // The upstream trees and the kernelci/linux repo, local.
    for (tree, branch) in [
        ("next", "master"),
        ("mainline", "master"),
        ("stable", "linux-6.13.y"),
    ] {
        let repo = git2::Repository::init_bare(fx.path().join(format!("repos/up-{tree}.git")))
            .expect("init");
        let tip = kcideploy::gitops::scratch::commit(
            &repo,
            None,
            &[("Makefile", Some(format!("# {tree}\n").as_str()))],
            ALICE,
            NOW - DAY,
            tree,
        )
        .expect("commit");
        kcideploy::gitops::scratch::set_branch(&repo, branch, tip).expect("branch");
    }
    let linux = fx.path().join("repos/linux.git");
    git2::Repository::init_bare(&linux).expect("linux");
    let kci: fake_kernelci::SharedKci = Arc::new(Mutex::new(fake_kernelci::FakeKci::default()));
    kci.lock().expect("kci").kernel = Some(linux.clone());
    let api = fake_kernelci::start(kci.clone());
    let checkouts = fx.path().join("checkout");
    let text = snapshot::staging_plan_text()
        .replace("https://staging.kernelci.org:9000", &api)
        .replace("git@github.com:kernelci/linux.git", "repos/linux.git")
        .replace(
            "https://git.kernel.org/pub/scm/linux/kernel/git/next/linux-next.git",
            "repos/up-next.git",
        )
        .replace(
            "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
            "repos/up-mainline.git",
        )
        .replace(
            "https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux-stable.git",
            "repos/up-stable.git",
        )
        .replace("interval: 1m", "interval: 1s")
        .replace(
            "/home/kernelci/checkout/",
            &format!("{}/", checkouts.display()),
        );
    let config = fx.config(&text);
    fx.deploy(
        &config,
        &[
            (CORE, remotes[CORE].main),
            (API, remotes[API].main),
            (PIPELINE, remotes[PIPELINE].main),
        ],
        Some(NOW - 7 * DAY),
    );
    // A change to the rootfs configs: every rootfs, and the images that copy config/.
    let mut rootfs = snapshot::content(CORE, "config/core/rootfs-configs.yaml");
    rootfs.extend_from_slice(b"\n# changed\n");
    let rootfs = String::from_utf8(rootfs).expect("utf-8");
    remotes[CORE].branch(
        "pr/1",
        ALICE,
        &[("config/core/rootfs-configs.yaml", Some(&rootfs))],
    );
    let stubs = fx.path().join("stubs");
    std::fs::create_dir_all(&stubs).expect("stubs");
    let log = fx.path().join("calls.log");
    let kernel = linux.display().to_string();
    stub(&stubs, "python3", PYTHON3, &log, &kernel);
    stub(&stubs, "docker", DOCKER, &log, &kernel);
    stub(&stubs, "docker-compose", COMPOSE, &log, &kernel);
    stub(&stubs, "rsync", RSYNC, &log, &kernel);
    let path = format!(
        "{}:{}",
        stubs.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (code, out, err) = output(
        kcideploy()
            .env("PATH", &path)
            .args([
                "apply",
                "-auto-approve",
                "--cycle",
                "full",
                "--no-notify",
                "--at",
                &at(),
                "-f",
            ])
            .arg(&config.path),
    );
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, 0, "{out}{err}\n{calls}");
    assert!(!calls.contains("BAD "), "{calls}");
    // A valid `kci rootfs build` for every config of the snapshot.
    let configs = String::from_utf8(snapshot::content(CORE, "config/core/rootfs-configs.yaml"))
        .expect("utf-8");
    let doc: serde_json::Value = serde_saphyr::from_str(&configs).expect("yaml");
    let names: Vec<&String> = doc["rootfs_configs"]
        .as_object()
        .expect("configs")
        .keys()
        .collect();
    for name in &names {
        assert!(
            calls.contains(&format!("ROOTFS {name}\n")),
            "{name}\n{calls}"
        );
    }
    // Each rootfs published where rootfs.yml publishes it, and its URL kept in state.
    assert!(calls.contains("PUBLISHED /debian/trixie-ltp/"), "{calls}");
    assert!(
        calls.contains("PUBLISHED /buildroot/buildroot-baseline/"),
        "{calls}"
    );
    // The kernel branch was there when the pipeline came up, and the check took that kernel.
    assert!(calls.contains("KERNEL-PUSHED-BEFORE-UP"), "{calls}");
    let state = kcideploy::state::LocalState::new(config.state_path())
        .read()
        .expect("state parses")
        .expect("state");
    let pushed = state.steps["push-kernel"].outputs.clone().expect("pushed");
    let checked = state.steps["check-kernel"]
        .outputs
        .clone()
        .expect("checked");
    let url = &state.steps["build-rootfs[trixie]"]
        .outputs
        .as_ref()
        .expect("built")["outputs"]["url"];
    let url = url.as_str().expect("a url");
    assert!(
        url.starts_with("https://storage.kernelci.org/images/rootfs/debian/trixie/"),
        "{url}"
    );
    assert_eq!(
        state.steps["stage-rootfs"].result,
        kcideploy::state::StepResult::Success
    );
    assert_eq!(pushed["tree"], "next");
    assert_eq!(checked["commit"], pushed["commit"]);
    let head = git2::Repository::open_bare(&linux)
        .expect("linux")
        .refname_to_id("refs/heads/staging-next")
        .expect("pushed");
    assert_eq!(pushed["commit"], head.to_string().as_str());
}
