//! Plan file: loading, YAML errors with locations, semantic validation.

mod duration;
pub mod kinds;
mod maintainer;
pub mod schema;
mod types;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{Glob, GlobBuilder};
use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};
use petgraph::graph::{DiGraph, NodeIndex};
use serde_saphyr::{Location, Spanned};

pub use duration::HumanDuration;
pub use maintainer::Maintainer;
pub use types::*;

/// The only plan file format version this build reads.
pub const PLAN_FILE_VERSION: u32 = 1;

pub(crate) fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(value, Location::UNKNOWN, Location::UNKNOWN)
}

/// Build a glob with the plan file's rules: `*` stays inside one directory, `**` crosses them.
pub fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

/// A plan file that parsed and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Path as given by the user (used in messages).
    pub path: PathBuf,
    /// Directory that relative paths in the plan file are resolved against.
    pub dir: PathBuf,
    /// The plan file's text.
    pub source: Arc<String>,
    pub file: PlanFile,
}

impl Config {
    /// The checked `with:` settings of a step (validated when the plan file loaded).
    pub fn settings(&self, step: &str) -> kinds::KindSettings {
        self.file
            .steps
            .get(step)
            .and_then(|s| kinds::parse_with(s.kind.value, &s.with.value).ok())
            .unwrap_or(kinds::KindSettings::Unchecked)
    }

    /// Read, parse and validate a plan file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_str(path, text)
    }

    /// Parse and validate plan file text; `path` names it in messages and anchors relative paths.
    pub fn from_str(path: &Path, text: String) -> Result<Config, ConfigError> {
        let source = Arc::new(text);
        let file: PlanFile = serde_saphyr::from_str(&source)
            .map_err(|e| ConfigError::Syntax(Box::new(YamlError::new(path, &source, &e))))?;
        let dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let config = Config {
            path: path.to_path_buf(),
            dir,
            source,
            file,
        };
        let errors = config.semantic_errors();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(PlanFileErrors {
                path: config.path.clone(),
                errors,
            }))
        }
    }

    /// Where the state file lives.
    pub fn state_path(&self) -> PathBuf {
        match &self.file.state.path {
            Some(p) => self.dir.join(p),
            None => self
                .dir
                .join(".kcideploy")
                .join(format!("{}.state.json", self.file.name)),
        }
    }

    /// Resolve a repo URL: local relative paths are taken relative to the plan file.
    pub fn repo_url(&self, repo: &RepoConfig) -> String {
        self.resolve_url(&repo.url)
    }

    /// A URL or a path; relative paths are taken relative to the plan file.
    pub fn resolve_url(&self, url: &str) -> String {
        let remote = url.contains("://") || is_scp_like(url);
        if remote || Path::new(url).is_absolute() {
            url.to_string()
        } else {
            self.dir.join(url).to_string_lossy().into_owned()
        }
    }

    fn named_source(&self) -> NamedSource<Arc<String>> {
        NamedSource::new(self.path.display().to_string(), self.source.clone())
    }

    fn error_at(&self, loc: &Location, len: usize, message: String, label: &str) -> SemanticError {
        let (line, column) = (loc.line(), loc.column());
        let offset = byte_offset(&self.source, loc);
        SemanticError {
            message: format!("{}:{line}:{column}: {message}", self.path.display()),
            line,
            column,
            src: self.named_source(),
            labels: vec![LabeledSpan::new_with_span(
                Some(label.to_string()),
                SourceSpan::new(offset.into(), len),
            )],
            help: None,
        }
    }

    /// Every semantic error, in file order.
    pub fn semantic_errors(&self) -> Vec<SemanticError> {
        let f = &self.file;
        let mut errors = Vec::new();
        if f.version.value != PLAN_FILE_VERSION {
            errors.push(self.error_at(
                &f.version.referenced,
                f.version.value.to_string().len(),
                format!(
                    "unsupported plan file version {}: this kcideploy reads version {PLAN_FILE_VERSION}",
                    f.version.value
                ),
                "unsupported version",
            ));
        }
        if let Some(cron) = &f.policy.schedule
            && let Err(message) = crate::support::cron::Cron::parse(&cron.value)
        {
            let mut e = self.error_at(
                &cron.referenced,
                cron.value.len(),
                message,
                "not a cron expression",
            );
            e.help = Some("five fields in UTC: minute hour day-of-month month day-of-week, e.g. `0 */6 * * *`".into());
            errors.push(e);
        }
        for repo in f.repos.values() {
            self.check_glob(&repo.pending.branches, "pending.branches", &mut errors);
            for skip in &repo.pending.skip {
                self.check_glob(skip, "pending.skip", &mut errors);
            }
        }
        for (name, component) in &f.components {
            if !f.repos.contains_key(&component.repo.value) {
                let mut e = self.error_at(
                    &component.repo.referenced,
                    component.repo.value.len(),
                    format!(
                        "component `{name}` names unknown repo `{}`",
                        component.repo.value
                    ),
                    "not a key of `repos`",
                );
                e.help = Some(suggest(&component.repo.value, f.repos.keys(), "repos"));
                errors.push(e);
            }
            if component.paths.is_empty() {
                let mut e = self.error_at(
                    &component.repo.referenced,
                    component.repo.value.len(),
                    format!("component `{name}` has no `paths`"),
                    "component without paths",
                );
                e.help = Some("list the glob patterns of the files it is made of".into());
                errors.push(e);
            }
            for p in component.paths.iter().chain(&component.exclude) {
                self.check_glob(p, "component path", &mut errors);
            }
        }
        for (name, step) in &f.steps {
            for on in &step.on {
                if !f.components.contains_key(&on.value) {
                    let mut e = self.error_at(
                        &on.referenced,
                        on.value.len(),
                        format!(
                            "step `{name}` is triggered by unknown component `{}`",
                            on.value
                        ),
                        "not a key of `components`",
                    );
                    e.help = Some(suggest(&on.value, f.components.keys(), "components"));
                    errors.push(e);
                }
            }
            match kinds::parse_with(step.kind.value, &step.with.value) {
                Err(message) => {
                    let loc = if step.with.referenced.line() > 0 {
                        &step.with.referenced
                    } else {
                        &step.kind.referenced
                    };
                    errors.push(self.error_at(
                        loc,
                        1,
                        format!("step `{name}` ({}): {message}", step.kind.value.as_str()),
                        "invalid settings",
                    ));
                }
                Ok(settings) => {
                    if let Some(repo) = settings.repo()
                        && !f.repos.contains_key(repo)
                    {
                        let mut e = self.error_at(
                            &step.with.referenced,
                            1,
                            format!("step `{name}`: with.repo names unknown repo `{repo}`"),
                            "not a key of `repos`",
                        );
                        e.help = Some(suggest(repo, f.repos.keys(), "repos"));
                        errors.push(e);
                    }
                }
            }
            let deps = step.needs.iter().map(|n| ("needs", n));
            for (field, need) in deps.chain(step.after.iter().map(|n| ("runs after", n))) {
                if !f.steps.contains_key(&need.value) {
                    let mut e = self.error_at(
                        &need.referenced,
                        need.value.len(),
                        format!("step `{name}` {field} unknown step `{}`", need.value),
                        "not a key of `steps`",
                    );
                    e.help = Some(suggest(&need.value, f.steps.keys(), "steps"));
                    errors.push(e);
                }
            }
        }
        errors.extend(self.cycle_errors());
        errors.sort_by_key(|e| (e.line, e.column));
        errors
    }

    fn check_glob(&self, pattern: &Spanned<String>, what: &str, errors: &mut Vec<SemanticError>) {
        if let Err(err) = glob(&pattern.value) {
            errors.push(self.error_at(
                &pattern.referenced,
                pattern.value.len(),
                format!("invalid glob `{}` in {what}: {}", pattern.value, err.kind()),
                "invalid glob",
            ));
        }
    }

    /// Dependency cycles among steps, one error per cycle naming every step in it.
    fn cycle_errors(&self) -> Vec<SemanticError> {
        let steps = &self.file.steps;
        let mut graph: DiGraph<&str, ()> = DiGraph::new();
        let index: HashMap<&str, NodeIndex> = steps
            .keys()
            .map(|name| (name.as_str(), graph.add_node(name.as_str())))
            .collect();
        for (name, step) in steps {
            for need in step.needs.iter().chain(&step.after) {
                if let Some(&from) = index.get(need.value.as_str()) {
                    graph.add_edge(from, index[name.as_str()], ());
                }
            }
        }
        let mut errors = Vec::new();
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
                let step = &steps[*name];
                let deps = step.needs.iter().map(|n| ("needs", n));
                for (field, need) in deps.chain(step.after.iter().map(|n| ("runs after", n))) {
                    if names.contains(&need.value.as_str()) {
                        let offset = byte_offset(&self.source, &need.referenced);
                        labels.push(LabeledSpan::new_with_span(
                            Some(format!("`{name}` {field} `{}`", need.value)),
                            SourceSpan::new(offset.into(), need.value.len()),
                        ));
                        first.get_or_insert((need.referenced.line(), need.referenced.column()));
                    }
                }
            }
            let (line, column) = first.unwrap_or((0, 0));
            let chain = names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            errors.push(SemanticError {
                message: format!(
                    "{}:{line}:{column}: dependency cycle among steps {chain}",
                    self.path.display()
                ),
                line,
                column,
                src: self.named_source(),
                labels,
                help: Some(
                    "remove one of these `needs` or `after` entries so the steps can run in order"
                        .into(),
                ),
            });
        }
        errors
    }
}

fn is_scp_like(url: &str) -> bool {
    // user@host:path (ssh shorthand); a Windows drive letter is not a concern here.
    match (url.find('@'), url.find(':')) {
        (Some(at), Some(colon)) => at < colon && !url[..colon].contains('/'),
        _ => false,
    }
}

/// Byte offset of a 1-based (line, character column) location.
pub(crate) fn byte_offset(source: &str, loc: &Location) -> usize {
    if let Some(b) = loc.span().byte_offset() {
        return usize::try_from(b).unwrap_or(0).min(source.len());
    }
    offset_of(source, loc.line(), loc.column())
}

pub(crate) fn offset_of(source: &str, line: u64, column: u64) -> usize {
    let mut offset = 0;
    for (i, l) in source.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == line {
            let col = usize::try_from(column.saturating_sub(1)).unwrap_or(0);
            return offset + l.char_indices().nth(col).map(|(b, _)| b).unwrap_or(l.len());
        }
        offset += l.len();
    }
    source.len()
}

fn suggest<'a>(wrong: &str, known: impl Iterator<Item = &'a String>, what: &str) -> String {
    let known: Vec<&String> = known.collect();
    let best = known
        .iter()
        .map(|k| (strsim::jaro_winkler(wrong, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, k)) => format!("did you mean `{k}`?"),
        None if known.is_empty() => format!("`{what}` is empty"),
        None => format!(
            "known {what}: {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Why a plan file could not be used.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum ConfigError {
    #[error("cannot read plan file {}: {source}", path.display())]
    #[diagnostic(code(kcideploy::config::read))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Syntax(Box<YamlError>),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(PlanFileErrors),
}

/// A YAML or schema error (syntax, unknown field, duplicate key, wrong type, bad duration).
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(code(kcideploy::config::syntax))]
pub struct YamlError {
    pub message: String,
    pub line: u64,
    pub column: u64,
    #[source_code]
    src: NamedSource<Arc<String>>,
    #[label("here")]
    span: Option<SourceSpan>,
}

impl YamlError {
    fn new(path: &Path, source: &Arc<String>, err: &serde_saphyr::Error) -> YamlError {
        let location = err.location();
        let (line, column) = location.map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        let span = location.map(|l| SourceSpan::new(byte_offset(source, &l).into(), 1));
        let detail = yaml_message(err);
        let message = match location {
            Some(_) => format!("{}:{line}:{column}: {detail}", path.display()),
            None => format!("{}: {detail}", path.display()),
        };
        YamlError {
            message,
            line,
            column,
            src: NamedSource::new(path.display().to_string(), source.clone()),
            span,
        }
    }
}

/// The error's message without serde-saphyr's own location suffix and snippet.
fn yaml_message(err: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter;
    // The structured error, not its rendered text: the location leads our message, and a
    // new serde-saphyr release cannot change what we cut.
    let err = err.without_snippet();
    if let serde_saphyr::Error::DuplicateMappingKey { key, .. } = err {
        let key = key
            .as_deref()
            .map(|k| format!(" `{k}`"))
            .unwrap_or_default();
        return format!("duplicate key{key}: a key may appear only once in a mapping");
    }
    let text = serde_saphyr::DefaultMessageFormatter.format_message(err);
    // The text may quote the plan file: control characters are escaped (`\n`), so none
    // reaches a terminal or log and the message stays on one line.
    let mut one_line = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            one_line.extend(c.escape_debug());
        } else {
            one_line.push(c);
        }
    }
    one_line.trim().trim_end_matches(':').to_string()
}

/// All semantic errors of one plan file.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{} has {} error(s)", path.display(), errors.len())]
#[diagnostic(code(kcideploy::config::invalid))]
pub struct PlanFileErrors {
    pub path: PathBuf,
    #[related]
    pub errors: Vec<SemanticError>,
}

/// One semantic error: a name that points nowhere, a cycle, an invalid glob.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct SemanticError {
    pub message: String,
    pub line: u64,
    pub column: u64,
    #[source_code]
    src: NamedSource<Arc<String>>,
    #[label(collection)]
    labels: Vec<LabeledSpan>,
    #[help]
    help: Option<String>,
}
