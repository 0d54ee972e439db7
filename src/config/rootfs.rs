//! Plan file v1: `rootfs:`, rootfs images built ahead, tested on staging, then promoted into
//! the configuration by `kcideploy promote-rootfs` (README "Rootfs images"). The section names
//! steps of the plan, checked when it loads.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::errors::Source;
use super::{Config, SemanticError, SpannedString, quote, suggest};

/// Which steps build, stage and test rootfs images, and where their URLs are promoted.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RootfsConfig {
    /// The `for_each` step building one rootfs config per item (`build-rootfs[trixie]`: the
    /// item's key is the config's name). Each publishes `url=<base URL>` to `$KCIDEPLOY_OUTPUT`,
    /// the URL of the directory of the version it published, ending in that version
    /// (`YYYYMMDD.N`).
    #[schemars(with = "String")]
    pub build: SpannedString,
    /// The step that points staging's configuration at the built URLs (it reads them from
    /// `$KCIDEPLOY_STEP_OUTPUTS`): a config passes only once this step succeeded after its
    /// build, and the checks after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub stage: Option<SpannedString>,
    /// Steps that must have succeeded after the build (and `stage`) for a config to pass: the
    /// pipe-cleaner's check of the staging results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub checks: Vec<SpannedString>,
    /// A `for_each` step with the same keys as `build` testing one config each: `<tests>[<config>]`
    /// must have succeeded after that config's build (and `stage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub tests: Option<SpannedString>,
    /// The configuration repo (a key of `repos`) the promotion PR is opened against (its
    /// `base`, its `github_repo`).
    #[schemars(with = "String")]
    pub repo: SpannedString,
    /// The file of that repo holding the rootfs URLs (KernelCI: the pipeline's
    /// `config/rootfs.yaml`).
    pub file: String,
}

impl RootfsConfig {
    /// The expansions of the `build` step: `(config, step name)`, in order.
    pub fn builds<'a>(&'a self, config: &'a Config) -> Vec<(&'a str, &'a str)> {
        expansions(config, &self.build.value)
    }
}

/// The expansions of `for_each` step `name`: `(key, step name)`, in order.
pub fn expansions<'a>(config: &'a Config, name: &str) -> Vec<(&'a str, &'a str)> {
    config
        .file
        .steps
        .keys()
        .filter_map(|step| {
            let key = step
                .strip_prefix(name)?
                .strip_prefix('[')?
                .strip_suffix(']')?;
            Some((key, step.as_str()))
        })
        .collect()
}

/// The errors of `rootfs:`: steps and the repo it names must exist.
pub(crate) fn check(config: &Config, src: &Source) -> Vec<SemanticError> {
    let f = &config.file;
    let Some(r) = &f.rootfs else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let mut unknown = |name: &SpannedString, what: &str, for_each: bool| {
        let found = match for_each {
            true => !expansions(config, &name.value).is_empty(),
            false => f.steps.contains_key(&name.value),
        };
        if found {
            return;
        }
        let message = match for_each {
            true => format!(
                "rootfs.{what} names {}, which is no `for_each` step of this plan",
                quote(&name.value)
            ),
            false => format!("rootfs.{what} names unknown step {}", quote(&name.value)),
        };
        let e = src
            .error_at(&name.referenced, name.value.len(), message, "not a step")
            .with_help(suggest(&name.value, f.steps.keys(), "steps"));
        errors.push(e);
    };
    unknown(&r.build, "build", true);
    if let Some(t) = &r.tests {
        unknown(t, "tests", true);
    }
    if let Some(s) = &r.stage {
        unknown(s, "stage", false);
    }
    for c in &r.checks {
        unknown(c, "checks", false);
    }
    if !f.repos.contains_key(&r.repo.value) {
        let e = src
            .error_at(
                &r.repo.referenced,
                r.repo.value.len(),
                format!("rootfs.repo names unknown repo {}", quote(&r.repo.value)),
                "not a key of `repos`",
            )
            .with_help(suggest(&r.repo.value, f.repos.keys(), "repos"));
        errors.push(e);
    }
    errors
}
