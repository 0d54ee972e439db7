//! The real KernelCI repositories as test data (tests/fixtures/kernelci-snapshot, a copy of
//! ../shared/kernelci-snapshot): bare git repos holding every path of each repo's listing
//! (`files.txt`), with the real content of the copied files and a placeholder naming the
//! path for the others; and the 29 images of the real build workflow (`images.json`), from
//! which tests derive what a change must rebuild.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use kcideploy::gitops::scratch;

use crate::common::*;

/// The four repos of the snapshot.
pub const REPOS: [&str; 4] = [
    "kernelci-core",
    "kernelci-api",
    "kernelci-pipeline",
    "kernelci-deploy",
];

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kernelci-snapshot")
}

/// Every path of `repo` at the snapshot commit.
pub fn listing(repo: &str) -> Vec<String> {
    let path = dir().join(repo).join("files.txt");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The content of `path` in `repo`: the copied file when the snapshot has it, else a
/// placeholder that names it.
pub fn content(repo: &str, path: &str) -> Vec<u8> {
    std::fs::read(dir().join(repo).join("tree").join(path))
        .unwrap_or_else(|_| format!("{repo}:{path}\n").into_bytes())
}

/// A bare repo `repos/<repo>.git` in the fixture whose `main` holds the whole listing.
pub fn repo(fx: &Fixture, repo: &str) -> Remote {
    let path = fx.path().join("repos").join(format!("{repo}.git"));
    let git = git2::Repository::init_bare(&path).expect("init bare");
    let files: Vec<(String, Vec<u8>)> = listing(repo)
        .into_iter()
        .map(|p| {
            let c = content(repo, &p);
            (p, c)
        })
        .collect();
    let edits: Vec<(&str, Option<&[u8]>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_slice())))
        .collect();
    let main =
        scratch::commit(&git, None, &edits, ALICE, NOW - 10 * DAY, "snapshot").expect("commit");
    scratch::set_branch(&git, "main", main).expect("branch");
    Remote {
        repo: git,
        path,
        main,
    }
}

/// The snapshot repos named, built in the fixture.
///
/// The file the shipped plans include (plans/kernelci.yaml) is written beside the fixture's
/// plan file, pointed at the same repos, so that the plans' `include:` finds it.
pub fn repos(fx: &Fixture, names: &[&str]) -> BTreeMap<String, Remote> {
    write_included(fx);
    names
        .iter()
        .map(|name| (name.to_string(), repo(fx, name)))
        .collect()
}

/// One of the 29 images of the real build workflow (images.json).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Image {
    pub image: String,
    pub tag: String,
    pub arch: Option<String>,
    pub template: String,
    pub templates_loaded: Vec<String>,
    pub declared_args: Vec<String>,
    pub staging_names: Vec<String>,
    pub production_names: Vec<String>,
    pub kci_command: String,
    pub cli_fragments: Vec<String>,
}

impl Image {
    /// `image:tag` (`kernelci` for the untagged `latest`), as the images' own names say.
    pub fn name(&self) -> String {
        if self.untagged() {
            self.image.clone()
        } else {
            format!("{}:{}", self.image, self.tag)
        }
    }

    /// Built without a tag: Docker calls it `latest`.
    pub fn untagged(&self) -> bool {
        self.tag.is_empty() || self.tag.starts_with('(')
    }

    /// `image/tag` (`latest` when untagged): the key of the plan's build step for it.
    pub fn key(&self) -> String {
        let tag = if self.untagged() { "latest" } else { &self.tag };
        format!("{}/{tag}", self.image)
    }
}

pub fn images() -> Vec<Image> {
    #[derive(serde::Deserialize)]
    struct File {
        images: Vec<Image>,
    }
    let path = dir().join("images.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str::<File>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .images
}

/// plans/staging.yaml pointed at a fixture's repos: the git forge, a trusted test author
/// instead of the ini file.
pub fn staging_plan_text() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plans/staging.yaml"))
        .expect("plans/staging.yaml");
    let trusted = text
        .lines()
        .find(|l| l.trim_start().starts_with("trusted_file:"))
        .expect("the plan reads the trusted list from a file")
        .to_string();
    let indent = &trusted[..trusted.len() - trusted.trim_start().len()];
    text.replace("forge: github", "forge: git")
        .replace("https://github.com/kernelci/", "repos/")
        .replace(&trusted, &format!("{indent}trusted: [alice@example.org]"))
}

/// plans/production.yaml pointed at a fixture's repos (`repos/<name>.git`).
pub fn production_plan_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/plans/production.yaml"
    ))
    .expect("plans/production.yaml")
    .replace("https://github.com/kernelci/", "repos/")
}

/// plans/kernelci.yaml beside the fixture's plan file (for a test without repos).
pub fn write_included(fx: &Fixture) {
    std::fs::write(fx.path().join("kernelci.yaml"), included_plan_text())
        .expect("write kernelci.yaml");
}

/// plans/kernelci.yaml (what staging and production share) pointed at a fixture's repos.
pub fn included_plan_text() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plans/kernelci.yaml"))
        .expect("plans/kernelci.yaml")
        .replace("https://github.com/kernelci/", "repos/")
}
