//! What each step would have produced, read back from the live system for `state adopt`: in
//! the shape the step kind records after a run (so `plan -refresh` and the next run read it
//! as theirs), or `unknown` with the reason when it cannot be read.

use bollard::Docker;
use serde_json::{Value, json};

use crate::apply::kinds::docker;
use crate::config::Config;
use crate::config::kinds::{
    ContainerRestartWith, DockerBuildWith, DockerPushWith, GitPushWith, KindSettings,
    PipeCleanerPhase, PipeCleanerWith,
};
use crate::planner::params::Vars;
use crate::support::text::short;

/// One step's outcome as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadBack {
    /// What state records as the step's outputs (`None`: the kind records none).
    pub outputs: Option<Value>,
    /// One line for people: what was found.
    pub found: String,
    /// What could not be read, and why (the step is then listed by `plan`).
    pub unknown: Option<String>,
}

impl ReadBack {
    fn nothing(found: &str) -> ReadBack {
        ReadBack {
            outputs: None,
            found: found.to_string(),
            unknown: None,
        }
    }

    fn unknown(why: String) -> ReadBack {
        ReadBack {
            outputs: None,
            found: String::new(),
            unknown: Some(why),
        }
    }
}

/// Reads the live system, connecting to each step's Docker daemon on first use.
pub struct Reader<'a> {
    pub config: &'a Config,
    pub vars: Vars<'a>,
    /// The repos' caches (manifests are read at the adopted revision).
    pub cache_dir: &'a std::path::Path,
    daemons: docker::Daemons,
}

impl<'a> Reader<'a> {
    pub fn new(config: &'a Config, vars: Vars<'a>, cache_dir: &'a std::path::Path) -> Reader<'a> {
        Reader {
            config,
            vars,
            cache_dir,
            daemons: docker::Daemons::default(),
        }
    }

    async fn docker(&mut self, step: &str) -> Result<&Docker, String> {
        self.daemons.of_step(self.config, step).await
    }

    /// Step `name`'s outcome, read back.
    pub async fn step(&mut self, name: &str) -> ReadBack {
        match self.config.settings(name) {
            KindSettings::DockerBuild(with) => {
                let daemon = docker::Daemon::of(self.config, name).name();
                match self.docker(name).await {
                    Ok(d) => docker_build(d, &daemon, &with).await,
                    Err(e) => ReadBack::unknown(e),
                }
            }
            KindSettings::ContainerRestart(with) => {
                let wanted = match with.image.as_deref().map(|i| self.vars.substitute(i)) {
                    Some(Err(e)) => return ReadBack::unknown(format!("with.image: {e}")),
                    Some(Ok(i)) => Some(i),
                    None => None,
                };
                match self.docker(name).await {
                    Ok(d) => containers(d, &with, wanted.as_deref()).await,
                    Err(e) => ReadBack::unknown(e),
                }
            }
            KindSettings::DockerPush(with) => {
                let tags: Result<Vec<String>, String> =
                    with.tags.iter().map(|t| self.vars.substitute(t)).collect();
                let tags = match tags {
                    Ok(t) => t,
                    Err(e) => return ReadBack::unknown(format!("with.tags: {e}")),
                };
                let registry = self.config.file.timeouts.registry.0;
                match self.docker(name).await {
                    Ok(d) => pushed(d, &with, &tags, registry).await,
                    Err(e) => ReadBack::unknown(e),
                }
            }
            KindSettings::GitPush(with) => git_push(self.config, &self.vars, &with),
            KindSettings::PipeCleaner(with) => pipe_cleaner(self.config, &with),
            KindSettings::Kubernetes(with) => {
                crate::apply::kinds::kubernetes_adopt(
                    &with,
                    self.config,
                    &self.vars,
                    self.cache_dir,
                )
                .await
            }
            KindSettings::GithubWorkflow(_) | KindSettings::KernelciDrain(_) => {
                ReadBack::nothing("nothing to read back (it records what one run did)")
            }
            KindSettings::Command(_)
            | KindSettings::HttpWait(_)
            | KindSettings::Compose(_)
            | KindSettings::DockerPrune(_)
            | KindSettings::Unchecked => ReadBack::nothing("nothing to read back"),
        }
    }
}

/// `docker_build`: the image its first moving tag names, and the other tags on the same
/// image. No content tag is recorded (a build by hand has none): the next build of changed
/// inputs makes one.
async fn docker_build(d: &Docker, daemon: &str, with: &DockerBuildWith) -> ReadBack {
    let Some(first) = with.tags.first() else {
        return ReadBack::unknown(
            "the step moves no tag (with.tags), so the image it made cannot be found".into(),
        );
    };
    let reference = format!("{}:{first}", with.image);
    let id = match d.inspect_image(&reference).await {
        Ok(image) => image.id.unwrap_or_default(),
        Err(e) => {
            return ReadBack::unknown(format!(
                "no image {reference} on the Docker daemon at {}: {}",
                daemon,
                crate::support::text::error_chain(&e)
            ));
        }
    };
    let outputs = json!({ "image": with.image, "content_tag": null, "id": id, "tags": with.tags });
    let mut unknown = None;
    for tag in &with.tags[1..] {
        let other = format!("{}:{tag}", with.image);
        match d.inspect_image(&other).await {
            Ok(i) if i.id.as_deref() == Some(id.as_str()) => {}
            Ok(_) => unknown = Some(format!("{other} names another image than {reference}")),
            Err(_) => unknown = Some(format!("no image {other}")),
        }
    }
    ReadBack {
        outputs: Some(outputs),
        found: format!("image {reference} {}", short_id(&id)),
        unknown,
    }
}

/// `container_restart`: each container's id and the image it runs (the one `wanted` names
/// when the step sets `with.image`).
async fn containers(d: &Docker, with: &ContainerRestartWith, wanted: Option<&str>) -> ReadBack {
    let names = match &with.label {
        Some(label) => match labelled(d, label).await {
            Ok(n) if n.is_empty() => {
                return ReadBack::unknown(format!("no container carries the label {label}"));
            }
            Ok(n) => n,
            Err(e) => return ReadBack::unknown(e),
        },
        None => with.names.clone(),
    };
    let wanted_id = match wanted {
        Some(reference) => match d.inspect_image(reference).await {
            Ok(i) => i.id,
            Err(_) => return ReadBack::unknown(format!("no image {reference} (with.image)")),
        },
        None => None,
    };
    let mut list = Vec::new();
    let mut found = Vec::new();
    for name in &names {
        let info = match d.inspect_container(name, None).await {
            Ok(i) => i,
            Err(_) => return ReadBack::unknown(format!("no container {name}")),
        };
        if !info.state.and_then(|s| s.running).unwrap_or(false) {
            return ReadBack::unknown(format!("container {name} is not running"));
        }
        if let (Some(w), Some(runs)) = (&wanted_id, &info.image)
            && w != runs
        {
            return ReadBack::unknown(format!(
                "container {name} runs image {}, not {} ({})",
                short_id(runs),
                wanted.unwrap_or_default(),
                short_id(w)
            ));
        }
        let image = info.image.clone().unwrap_or_default();
        found.push(format!("{name} runs {}", short_id(&image)));
        list.push(json!({ "name": name, "id": info.id, "image": info.image }));
    }
    ReadBack {
        outputs: Some(json!({ "containers": list })),
        found: found.join(", "),
        unknown: None,
    }
}

async fn labelled(d: &Docker, label: &str) -> Result<Vec<String>, String> {
    use bollard::query_parameters::ListContainersOptions;
    let filters = std::collections::HashMap::from([("label".to_string(), vec![label.into()])]);
    let list = d
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| format!("cannot list containers: {e}"))?;
    let mut names: Vec<String> = list
        .into_iter()
        .filter_map(|c| {
            c.names
                .and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_string()))
        })
        .collect();
    names.sort();
    Ok(names)
}

/// `docker_push`: the manifest digest the registry has for each tag.
async fn pushed(
    d: &Docker,
    with: &DockerPushWith,
    tags: &[String],
    limit: std::time::Duration,
) -> ReadBack {
    let auth = match docker::credentials_within(&with.image, limit).await {
        Ok(a) => a,
        Err(e) => return ReadBack::unknown(e),
    };
    let mut list = Vec::new();
    let mut found = Vec::new();
    for tag in tags {
        let reference = format!("{}:{tag}", with.image);
        let ask = d.inspect_registry_image(&reference, auth.clone());
        let digest = match tokio::time::timeout(limit, ask).await {
            Ok(Ok(info)) => info.descriptor.digest.unwrap_or_default(),
            Ok(Err(e)) => {
                return ReadBack::unknown(format!(
                    "cannot look up {reference} in its registry: {}",
                    crate::support::text::error_chain(&e)
                ));
            }
            Err(_) => {
                return ReadBack::unknown(format!(
                    "cannot look up {reference} in its registry: no answer within {} (timeouts.registry)",
                    crate::support::text::age(limit.as_secs() as i64)
                ));
            }
        };
        found.push(format!("{reference} {}", short_id(&digest)));
        list.push(json!({ "tag": tag, "digest": digest }));
    }
    ReadBack {
        outputs: Some(json!({ "image": with.image, "pushed": list })),
        found: found.join(", "),
        unknown: None,
    }
}

/// `git_push`: the staging branch on the remote (it must be at the adopted revision) and
/// the newest tag with the step's prefix on that revision.
fn git_push(config: &Config, vars: &Vars<'_>, with: &GitPushWith) -> ReadBack {
    let Some(repo) = config.file.repos.get(&with.repo) else {
        return ReadBack::unknown(format!("no repo `{}`", with.repo));
    };
    let Some(sha) = vars.repos.get(&with.repo).map(|r| r.staging.clone()) else {
        return ReadBack::unknown(format!("repo `{}` was not adopted", with.repo));
    };
    let url = with.url.clone().unwrap_or_else(|| config.repo_url(repo));
    let branch = &repo.staging_branch;
    let head = format!("refs/heads/{branch}");
    let tags = with.tag_prefix.as_ref().map(|p| format!("refs/tags/{p}*"));
    let mut patterns = vec![head.as_str()];
    patterns.extend(tags.as_deref());
    let listing = match crate::gitops::remote::ls_remote(&url, &patterns, &config.file.timeouts) {
        Ok(l) => l,
        Err(e) => return ReadBack::unknown(e.to_string()),
    };
    let refs = parse_refs(&listing);
    let tag = with.tag_prefix.as_ref().and_then(|prefix| {
        refs.iter()
            .filter_map(|(r, s)| Some((r.strip_prefix("refs/tags/")?, s)))
            .filter(|(name, s)| name.starts_with(prefix.as_str()) && *s == &sha)
            .map(|(name, _)| name.to_string())
            .max_by(|a, b| alphanumeric_sort::compare_str(a, b))
    });
    let outputs = json!({ "branch": branch, "sha": sha, "tag": tag });
    let remote = crate::gitops::remote::redact_url(&url);
    let at = refs
        .iter()
        .find(|(r, _)| *r == head)
        .map(|(_, s)| s.clone());
    let unknown = match &at {
        None => Some(format!("no branch {branch} on {remote}")),
        Some(s) if *s != sha => Some(format!(
            "{branch} on {remote} is at {}, not at the adopted revision {}",
            short(s),
            short(&sha)
        )),
        Some(_) => None,
    };
    let unknown = unknown.or_else(|| match (&with.tag_prefix, &tag) {
        (Some(prefix), None) => Some(format!(
            "no tag {prefix}* on {remote} points at {}",
            short(&sha)
        )),
        _ => None,
    });
    ReadBack {
        outputs: Some(outputs),
        found: format!(
            "{branch} at {}{}",
            at.as_deref().map(short).unwrap_or("nothing"),
            tag.as_deref()
                .map(|t| format!(", tag {t}"))
                .unwrap_or_default()
        ),
        unknown,
    }
}

/// `ls-remote` lines as (ref, commit): an annotated tag's peeled `^{}` line wins over the
/// tag object's.
fn parse_refs(listing: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in listing.lines() {
        let Some((sha, name)) = line.split_once('\t') else {
            continue;
        };
        match name.strip_suffix("^{}") {
            Some(tag) => match out.iter_mut().find(|(r, _)| r == tag) {
                Some(entry) => entry.1 = sha.to_string(),
                None => out.push((tag.to_string(), sha.to_string())),
            },
            None => out.push((name.to_string(), sha.to_string())),
        }
    }
    out
}

/// The pipe-cleaner's push phase: its last `staging-<tree>-YYYYMMDD.N` tag on `push_url`
/// (the newest of all trees), hence the tree pushed last and the next in the rotation. The
/// check and watch phases record the results of one run: nothing to read back.
fn pipe_cleaner(config: &Config, with: &PipeCleanerWith) -> ReadBack {
    match with.phase {
        PipeCleanerPhase::Push | PipeCleanerPhase::Both => {}
        PipeCleanerPhase::Check | PipeCleanerPhase::Watch => {
            return ReadBack::nothing(
                "nothing to read back (the next check has no previous results to compare with)",
            );
        }
    }
    let Some(push_url) = &with.push_url else {
        return ReadBack::unknown("no with.push_url".into());
    };
    let url = config.resolve_url(push_url);
    let listing = match crate::gitops::remote::ls_remote(
        &url,
        &["refs/tags/staging-*"],
        &config.file.timeouts,
    ) {
        Ok(l) => l,
        Err(e) => return ReadBack::unknown(e.to_string()),
    };
    let refs = parse_refs(&listing);
    let mut newest: Option<(String, u32, usize, String, String)> = None;
    for (index, tree) in with.trees.iter().enumerate() {
        let prefix = format!("refs/tags/staging-{}-", tree.name);
        for (name, sha) in &refs {
            let Some((date, n)) = name.strip_prefix(&prefix).and_then(|r| r.split_once('.')) else {
                continue;
            };
            let (Ok(n), true) = (
                n.parse::<u32>(),
                date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()),
            ) else {
                continue;
            };
            let tag = name.trim_start_matches("refs/tags/").to_string();
            let candidate = (date.to_string(), n, index, tag, sha.clone());
            if newest
                .as_ref()
                .is_none_or(|b| (&candidate.0, candidate.1) > (&b.0, b.1))
            {
                newest = Some(candidate);
            }
        }
    }
    let Some((_, _, index, tag, commit)) = newest else {
        return ReadBack::unknown(format!(
            "no staging-<tree>-YYYYMMDD.N tag of with.trees on {}",
            crate::gitops::remote::redact_url(&url)
        ));
    };
    let tree = &with.trees[index].name;
    ReadBack {
        outputs: Some(json!({
            "tree": tree,
            "next_index": index + 1,
            "branch": format!("staging-{tree}"),
            "commit": commit,
            "tag": tag,
        })),
        found: format!(
            "last tag {tag} ({}), next tree in the rotation after {tree}",
            short(&commit)
        ),
        unknown: None,
    }
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::parse_refs;

    #[test]
    fn peeled_tags_name_the_commit() {
        let listing = "aaa\trefs/heads/staging\nt1\trefs/tags/s-20261124.1\nc1\trefs/tags/s-20261124.1^{}\nc2\trefs/tags/s-20261124.2\n";
        assert_eq!(
            parse_refs(listing),
            [
                ("refs/heads/staging".to_string(), "aaa".to_string()),
                ("refs/tags/s-20261124.1".to_string(), "c1".to_string()),
                ("refs/tags/s-20261124.2".to_string(), "c2".to_string()),
            ]
        );
    }
}
