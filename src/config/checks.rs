//! Semantic checks of a parsed plan file: names that point nowhere, globs, cycles.

use std::collections::{BTreeSet, HashMap};

use miette::{LabeledSpan, SourceSpan};
use petgraph::graph::{DiGraph, NodeIndex};
use serde_saphyr::Spanned;

use super::errors::Source;
use super::{Config, PLAN_FILE_VERSION, SemanticError, byte_offset, kinds, quote, suggest};

/// Collects the errors of one plan file.
struct Checker<'a> {
    config: &'a Config,
    src: Source,
    errors: Vec<SemanticError>,
}

impl Config {
    /// Every semantic error, in file order.
    pub fn semantic_errors(&self) -> Vec<SemanticError> {
        let mut c = Checker {
            config: self,
            src: Source::combined(self.source.clone(), self.segments.clone()),
            errors: Vec::new(),
        };
        c.version_and_policy();
        c.repos_and_components();
        c.steps();
        c.cycles();
        let mut errors = c.errors;
        errors.extend(super::docker::errors(self, &c.src));
        errors.extend(super::step_refs::check(self, &c.src));
        errors.extend(super::rootfs::check(self, &c.src));
        errors.sort_by_key(|e| (e.line, e.column));
        errors
    }

    /// Names of the environment variables that hold kcideploy's secrets, each with the
    /// setting that names it.
    pub fn secret_envs(&self) -> Vec<(&str, &'static str)> {
        let f = &self.file;
        let mut out = vec![
            (f.github.token_env.as_str(), "github.token_env"),
            (f.server.secret_env.as_str(), "server.secret_env"),
            ("KCIDEPLOY_REGISTRY_PASSWORD", "docker_push credentials"),
        ];
        if let Some(k) = &f.kernelci.token_env {
            out.push((k.as_str(), "kernelci.token_env"));
        }
        out
    }

    /// What `validate` warns about: a step that runs code of a repo's staging revision (pull
    /// requests merged in) and names a secret in `pass_env`.
    pub fn warnings(&self) -> Vec<String> {
        let secrets = self.secret_envs();
        let mut out = Vec::new();
        for (name, step) in &self.file.steps {
            let settings = self.settings(name);
            let Some((repo, pass)) = settings.runs_repo_code() else {
                continue;
            };
            for (var, what) in secrets.iter().filter(|(v, _)| pass.iter().any(|p| p == v)) {
                out.push(format!(
                    "{}:{}: step {} runs code of {}'s staging revision, pull requests included, and passes it the secret {var} ({what}) in with.pass_env: every change merged into staging can read it",
                    self.path.display(),
                    step.with.referenced.line(),
                    quote(name),
                    quote(repo),
                ));
            }
        }
        out
    }
}

impl Checker<'_> {
    fn version_and_policy(&mut self) {
        let f = &self.config.file;
        if f.version.value != PLAN_FILE_VERSION {
            let e = self.src.error_at(
                &f.version.referenced,
                f.version.value.to_string().len(),
                format!(
                    "unsupported plan file version {}: this kcideploy reads version {PLAN_FILE_VERSION}",
                    f.version.value
                ),
                "unsupported version",
            );
            self.errors.push(e);
        }
        if let Some(cron) = &f.policy.schedule
            && let Err(message) = crate::support::cron::Cron::parse(&cron.value)
        {
            let e = self
                .src
                .error_at(
                    &cron.referenced,
                    cron.value.len(),
                    message,
                    "not a cron expression",
                )
                .with_help(
                    "five fields in UTC: minute hour day-of-month month day-of-week, e.g. `0 */6 * * *`",
                );
            self.errors.push(e);
        }
    }

    fn repos_and_components(&mut self) {
        let f = &self.config.file;
        for (name, repo) in &f.repos {
            self.glob(&repo.pending.branches, "pending.branches");
            for skip in &repo.pending.skip {
                self.glob(skip, "pending.skip");
            }
            self.ignore_rules(name, &repo.ignore);
        }
        for (name, component) in &f.components {
            let repo = &component.repo;
            if !f.repos.contains_key(&repo.value) {
                let e = self
                    .src
                    .error_at(
                        &repo.referenced,
                        repo.value.len(),
                        format!(
                            "component {} names unknown repo {}",
                            quote(name),
                            quote(&repo.value)
                        ),
                        "not a key of `repos`",
                    )
                    .with_help(suggest(&repo.value, f.repos.keys(), "repos"));
                self.errors.push(e);
            }
            if component.paths.is_empty() {
                let e = self
                    .src
                    .error_at(
                        &repo.referenced,
                        repo.value.len(),
                        format!("component {} has no `paths`", quote(name)),
                        "component without paths",
                    )
                    .with_help("list the glob patterns of the files it is made of");
                self.errors.push(e);
            }
            for p in component.paths.iter().chain(&component.exclude) {
                self.glob(p, "component path");
            }
            let gated = f
                .repos
                .get(&repo.value)
                .is_some_and(|r| r.pending.require_checks.is_some());
            if component.ci_covers && !gated {
                let e = self
                    .src
                    .error_at(
                        &repo.referenced,
                        repo.value.len(),
                        format!(
                            "component {} is `ci_covers` but repo {} has no `pending.require_checks`",
                            quote(name),
                            quote(&repo.value)
                        ),
                        "its CI is not checked",
                    )
                    .with_help("name the checks that cover it in the repo's `pending.require_checks`");
                self.errors.push(e);
            }
        }
    }

    /// Each `ignore:` group has globs and a reason.
    fn ignore_rules(&mut self, repo: &str, rules: &[super::IgnoreRule]) {
        for rule in rules {
            let reason = &rule.reason;
            if reason.value.trim().is_empty() {
                let e = self
                    .src
                    .error_at(
                        &reason.referenced,
                        1,
                        format!("repo {}: an `ignore` group without a reason", quote(repo)),
                        "empty reason",
                    )
                    .with_help("say why a change to these files needs no deploy step");
                self.errors.push(e);
            }
            if rule.paths.is_empty() {
                let e = self
                    .src
                    .error_at(
                        &reason.referenced,
                        1,
                        format!("repo {}: an `ignore` group without `paths`", quote(repo)),
                        "no paths",
                    )
                    .with_help("list the glob patterns of the files it leaves out");
                self.errors.push(e);
            }
            for p in &rule.paths {
                self.glob(p, "ignore paths");
            }
        }
    }

    fn steps(&mut self) {
        let f = &self.config.file;
        for (name, step) in &f.steps {
            for on in &step.on {
                if !f.components.contains_key(&on.value) {
                    let e = self
                        .src
                        .error_at(
                            &on.referenced,
                            on.value.len(),
                            format!(
                                "step {} is triggered by unknown component {}",
                                quote(name),
                                quote(&on.value)
                            ),
                            "not a key of `components`",
                        )
                        .with_help(suggest(&on.value, f.components.keys(), "components"));
                    self.errors.push(e);
                }
            }
            self.settings(name, step);
            for (field, need) in step.order_deps() {
                if !f.steps.contains_key(&need.value) {
                    let e = self
                        .src
                        .error_at(
                            &need.referenced,
                            need.value.len(),
                            format!(
                                "step {} {field} unknown step {}",
                                quote(name),
                                quote(&need.value)
                            ),
                            "not a key of `steps`",
                        )
                        .with_help(suggest(&need.value, f.steps.keys(), "steps"));
                    self.errors.push(e);
                }
            }
        }
    }

    /// The step's `with:` settings, and the repo they name.
    fn settings(&mut self, name: &str, step: &super::StepConfig) {
        let f = &self.config.file;
        match kinds::parse_with(step.kind.value, &step.with.value) {
            Err(message) => {
                let loc = if step.with.referenced.line() > 0 {
                    &step.with.referenced
                } else {
                    &step.kind.referenced
                };
                let e = self.src.error_at(
                    loc,
                    1,
                    format!(
                        "step {} ({}): {message}",
                        quote(name),
                        step.kind.value.as_str()
                    ),
                    "invalid settings",
                );
                self.errors.push(e);
            }
            Ok(settings) => {
                if let kinds::KindSettings::PipeCleaner(p) = &settings {
                    self.pipe_cleaner(name, step, p);
                }
                if let Some(repo) = settings.repo()
                    && !f.repos.contains_key(repo)
                {
                    let e = self
                        .src
                        .error_at(
                            &step.with.referenced,
                            1,
                            format!(
                                "step {}: with.repo names unknown repo {}",
                                quote(name),
                                quote(repo)
                            ),
                            "not a key of `repos`",
                        )
                        .with_help(suggest(repo, f.repos.keys(), "repos"));
                    self.errors.push(e);
                }
            }
        }
    }

    /// A check step names a push step it `needs`; `watched_by` names a known repo.
    fn pipe_cleaner(&mut self, name: &str, step: &super::StepConfig, p: &kinds::PipeCleanerWith) {
        let f = &self.config.file;
        let mut problems = Vec::new();
        if let Some(w) = &p.watched_by
            && !f.repos.contains_key(&w.repo)
        {
            problems.push(format!(
                "with.watched_by.repo names unknown repo {}",
                quote(&w.repo)
            ));
        }
        if let Some(push) = &p.push_step {
            let settings = f
                .steps
                .get(push)
                .and_then(|s| kinds::parse_with(s.kind.value, &s.with.value).ok());
            let pushes = matches!(settings, Some(kinds::KindSettings::PipeCleaner(q))
                if q.phase == kinds::PipeCleanerPhase::Push);
            if !pushes {
                problems.push(format!(
                    "with.push_step {} is not a pipe_cleaner step with phase: push",
                    quote(push)
                ));
            } else if !step.needs.iter().any(|n| n.value == *push) {
                problems.push(format!(
                    "with.push_step {} must also be in `needs` (the check reads what it pushed in the same run)",
                    quote(push)
                ));
            }
        }
        for message in problems {
            let e = self.src.error_at(
                &step.with.referenced,
                1,
                format!("step {}: {message}", quote(name)),
                "invalid settings",
            );
            self.errors.push(e);
        }
    }

    fn glob(&mut self, pattern: &Spanned<String>, what: &str) {
        if let Some((why, help)) = never_matches(&pattern.value) {
            let e = self
                .src
                .error_at(
                    &pattern.referenced,
                    pattern.value.len().max(1),
                    format!(
                        "glob {} in {what} can never match: {why}",
                        quote(&pattern.value)
                    ),
                    "matches nothing",
                )
                .with_help(help);
            self.errors.push(e);
        } else if let Err(err) = super::glob(&pattern.value) {
            let e = self.src.error_at(
                &pattern.referenced,
                pattern.value.len(),
                format!(
                    "invalid glob {} in {what}: {}",
                    quote(&pattern.value),
                    err.kind()
                ),
                "invalid glob",
            );
            self.errors.push(e);
        }
    }

    /// Dependency cycles among steps, one error per cycle naming every step in it.
    fn cycles(&mut self) {
        let steps = &self.config.file.steps;
        let mut graph: DiGraph<&str, ()> = DiGraph::new();
        let index: HashMap<&str, NodeIndex> = steps
            .keys()
            .map(|name| (name.as_str(), graph.add_node(name.as_str())))
            .collect();
        for (name, step) in steps {
            for (_, need) in step.order_deps() {
                if let (Some(&from), Some(&to)) =
                    (index.get(need.value.as_str()), index.get(name.as_str()))
                {
                    graph.add_edge(from, to, ());
                }
            }
        }
        for scc in petgraph::algo::tarjan_scc(&graph) {
            let cyclic = scc.len() > 1 || graph.contains_edge(scc[0], scc[0]);
            if !cyclic {
                continue;
            }
            let members: BTreeSet<usize> = scc.iter().map(|n| n.index()).collect();
            // Steps in plan file order, and every `needs` entry that closes the cycle.
            let names: Vec<&str> = members.iter().map(|&i| graph[NodeIndex::new(i)]).collect();
            let mut labels = Vec::new();
            let mut first: Option<(u64, u64)> = None;
            for name in &names {
                let Some(step) = steps.get(*name) else {
                    continue;
                };
                for (field, need) in step.order_deps() {
                    if names.contains(&need.value.as_str()) {
                        let offset = byte_offset(self.src.text(), &need.referenced);
                        labels.push(LabeledSpan::new_with_span(
                            Some(format!("{} {field} {}", quote(name), quote(&need.value))),
                            SourceSpan::new(offset.into(), need.value.len()),
                        ));
                        first.get_or_insert((need.referenced.line(), need.referenced.column()));
                    }
                }
            }
            let (line, column) = first.unwrap_or((0, 0));
            let chain = names
                .iter()
                .map(|n| quote(n))
                .collect::<Vec<_>>()
                .join(", ");
            let e = self
                .src
                .error_with_labels(
                    line,
                    column,
                    format!("dependency cycle among steps {chain}"),
                    labels,
                )
                .with_help(
                    "remove one of these `needs` or `after` entries so the steps can run in order",
                );
            self.errors.push(e);
        }
    }
}

/// Why a glob cannot match any path in a repo, or any branch name (both are relative,
/// `/`-separated, without `.` or `..` components), and what to write instead.
pub(crate) fn never_matches(pattern: &str) -> Option<(&'static str, String)> {
    let relative = pattern.trim_start_matches("./").trim_start_matches('/');
    let relative = relative.trim_start_matches("./");
    let instead = |p: &str| format!("write {}", quote(p));
    if pattern.is_empty() {
        return Some(("it is empty", "write a pattern such as `config/**`".into()));
    }
    if pattern.starts_with('/') || pattern.starts_with("./") {
        return Some((
            "paths are relative to the repo root",
            instead(if relative.is_empty() { "**" } else { relative }),
        ));
    }
    if pattern.contains('\\') {
        return Some((
            "paths are separated by `/`, and a backslash only escapes",
            format!(
                "{}; match a special character with a class such as `[*]`",
                instead(&pattern.replace('\\', "/"))
            ),
        ));
    }
    if let Some(dir) = pattern.strip_suffix('/') {
        return Some((
            "paths name files, never a directory ending in `/`",
            instead(&format!("{dir}/**")),
        ));
    }
    let parts: Vec<&str> = pattern.split('/').collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Some((
            "paths have no `.` or `..` components",
            "name the files from the repo root".into(),
        ));
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Some((
            "paths have no empty `//` components",
            instead(&pattern.replace("//", "/")),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::never_matches;

    #[test]
    fn globs_that_can_never_match() {
        for (pattern, help) in [
            ("", "write a pattern such as `config/**`"),
            ("/config/**", "write `config/**`"),
            ("./config/*.yaml", "write `config/*.yaml`"),
            ("/", "write `**`"),
            (
                "config\\*.yaml",
                "write `config/*.yaml`; match a special character with a class such as `[*]`",
            ),
            ("config/", "write `config/**`"),
            ("config/../src/**", "name the files from the repo root"),
            ("src/./x", "name the files from the repo root"),
            ("config//x", "write `config/x`"),
        ] {
            let found = never_matches(pattern);
            assert_eq!(found.map(|f| f.1), Some(help.to_string()), "{pattern}");
        }
        for pattern in [
            "config/**",
            "**",
            "*.py",
            "src/[a-z]*/x",
            "pr/*",
            ".github/**",
            "a..b",
        ] {
            assert_eq!(never_matches(pattern), None, "{pattern}");
        }
    }
}
