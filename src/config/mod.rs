//! Plan file: loading, YAML errors with locations, semantic validation.

pub mod backend;
mod chat;
mod checks;
pub mod docker;
mod duration;
mod errors;
mod expand;
pub mod for_each;
mod include;
mod input;
pub mod kinds;
pub mod kubernetes;
mod maintainer;
pub mod names;
mod required;
pub mod rootfs;
mod scan;
pub mod schema;
mod services;
pub mod step_refs;
mod types;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{Glob, GlobBuilder};
use serde_saphyr::{Location, Spanned};

pub use backend::{BackendError, BackendSetting, PgUrl};
pub use chat::{ChatKind, ChatWebhook};
pub use duration::HumanDuration;
pub use errors::{ConfigError, PlanFileErrors, QUOTE_MAX, SemanticError, clip, quote};
pub use input::MAX_PLAN_FILE_BYTES;
pub use maintainer::Maintainer;
pub use required::RequireChecks;
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

/// `$XDG_STATE_HOME/kcideploy`, or `$HOME/.local/state/kcideploy` when `XDG_STATE_HOME` is
/// unset, empty or relative (the XDG base directory rules); `None` without either.
pub fn default_state_dir(
    xdg_state_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let absolute = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    absolute(xdg_state_home)
        .or_else(|| absolute(home).map(|h| h.join(".local/state")))
        .map(|d| d.join("kcideploy"))
}

/// A plan file that parsed and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Path as given by the user (used in messages).
    pub path: PathBuf,
    /// Directory that relative paths in the plan file are resolved against.
    pub dir: PathBuf,
    /// The plan file's text, followed by the text of each file it includes.
    pub source: Arc<String>,
    /// Where each file's text starts in `source` (the plan file, then the included ones).
    pub(crate) segments: Arc<Vec<errors::Segment>>,
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
        let text = input::read(path)?;
        Self::from_str(path, text)
    }

    /// Parse and validate plan file text; `path` names it in messages and anchors relative paths.
    pub fn from_str(path: &Path, text: String) -> Result<Config, ConfigError> {
        input::check_size(path, text.len())?;
        let source = Arc::new(text);
        let src = errors::Source::new(path, source.clone());
        // The two passes over the text (the scan for unknown and missing fields with their
        // positions, and the typed parse) are independent: on two threads when the machine
        // has them free (the no-op plan of 200 steps, 8.8 -> 7.9 ms on an idle 2-core machine).
        let (scanned, parsed) = std::thread::scope(|s| {
            let scan = s.spawn(|| scan::unknown_and_missing_fields(&src));
            let parsed = serde_saphyr::from_str::<PlanFile>(&source);
            (scan.join(), parsed)
        });
        let scanned = scanned.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let syntax = |errors| {
            ConfigError::Syntax(PlanFileErrors {
                path: path.to_path_buf(),
                errors,
                syntax: true,
            })
        };
        let file: PlanFile = match parsed {
            Ok(file) => file,
            Err(e) => return Err(syntax(shape_errors(scanned, &src, &e))),
        };
        let (names, shape): (Vec<_>, Vec<_>) = scanned
            .into_iter()
            .partition(|(finding, _)| matches!(finding, scan::Finding::Name(..)));
        // The first pass locates unsafe names; one it could not see (brought in by an alias
        // or a merge key) is still an error, without a position.
        let mut unlocated: Vec<SemanticError> = names::of(&file)
            .filter(|(what, name)| {
                !names
                    .iter()
                    .any(|(f, _)| *f == scan::Finding::Name(what, name.to_string()))
            })
            .filter_map(|(what, name)| names::check(what, name))
            .map(|message| {
                src.error_with_labels(0, 0, message, Vec::new())
                    .with_help(names::help("plan, repo and step"))
            })
            .collect();
        let mut names: Vec<SemanticError> = names.into_iter().map(|(_, e)| e).collect();
        names.append(&mut unlocated);
        if !shape.is_empty() {
            let mut errors: Vec<SemanticError> = shape.into_iter().map(|(_, e)| e).collect();
            errors.append(&mut names);
            errors.sort_by_key(|e| (e.line, e.column));
            return Err(syntax(errors));
        }
        let mut file = file;
        let dir = plan_dir(path);
        let included = include::merge(path, &dir, &source, &mut file);
        if !included.errors.is_empty() {
            let mut errors = included.errors;
            errors.append(&mut names);
            errors.sort_by_key(|e| (e.line, e.column));
            let list = PlanFileErrors {
                path: path.to_path_buf(),
                errors,
                syntax: included.syntax,
            };
            return Err(if included.syntax {
                ConfigError::Syntax(list)
            } else {
                ConfigError::Invalid(list)
            });
        }
        let (source, segments) = (included.text, included.segments);
        let src = errors::Source::combined(source.clone(), segments.clone());
        let expansion = expand::expand(&mut file, &src);
        if !expansion.is_empty() {
            let mut errors = expansion;
            errors.append(&mut names);
            errors.sort_by_key(|e| (e.line, e.column));
            return Err(ConfigError::Invalid(PlanFileErrors {
                path: path.to_path_buf(),
                errors,
                syntax: false,
            }));
        }
        let config = Config {
            path: path.to_path_buf(),
            dir,
            source,
            segments,
            file,
        };
        let mut errors = config.semantic_errors();
        errors.append(&mut names);
        let errors = errors::fold_repeats(errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(PlanFileErrors {
                path: config.path.clone(),
                errors,
                syntax: false,
            }))
        }
    }

    /// Where the state file lives: `state.path` (relative to the plan file), else
    /// `<state home>/kcideploy/<name>/<name>.state.json` ([`default_state_dir`]), which a fresh
    /// checkout of the plan's repo does not wipe. Logs, the fetch cache and checkouts live
    /// beside it.
    pub fn state_path(&self) -> PathBuf {
        let name = &self.file.name;
        match &self.file.state.path {
            Some(p) => self.dir.join(p),
            None => default_state_dir(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
                .map(|d| d.join(name))
                // No home at all (a bare container): beside the plan file, as before.
                .unwrap_or_else(|| self.dir.join(".kcideploy"))
                .join(format!("{name}.state.json")),
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
}

/// The directory relative paths of a plan file are resolved against.
fn plan_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
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
        Some((_, k)) => format!("did you mean {}?", quote(k)),
        None if known.is_empty() => format!("`{what}` is empty"),
        None => format!(
            "known {what}: {}",
            known
                .iter()
                .map(|k| quote(k))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A YAML or schema error (syntax, unknown field, duplicate key, wrong type, bad duration).
pub(crate) fn yaml_error(src: &errors::Source, err: &serde_saphyr::Error) -> SemanticError {
    let detail = errors::yaml_message(err);
    match err.location() {
        Some(loc) => src.error_at(&loc, 1, detail, "here"),
        None => src.error_with_labels(0, 0, detail, Vec::new()),
    }
}

/// The first pass's errors and serde's. serde's unknown or missing field is among the first
/// pass's; on one line, an unknown field found by the first pass beats serde's error (which
/// may not name the field), and serde's error beats a missing field (it may say more).
fn shape_errors(
    scanned: Vec<(scan::Finding, SemanticError)>,
    src: &errors::Source,
    err: &serde_saphyr::Error,
) -> Vec<SemanticError> {
    use serde_saphyr::Error::{SerdeMissingField, SerdeUnknownField};
    let covered = matches!(
        err.without_snippet(),
        SerdeUnknownField { .. } | SerdeMissingField { .. }
    );
    let mut serde_error = (!covered || scanned.is_empty()).then(|| yaml_error(src, err));
    let mut errors = Vec::new();
    for (finding, e) in scanned {
        match &serde_error {
            Some(s) if s.line == e.line && finding == scan::Finding::Unknown => {
                serde_error = None;
                errors.push(e);
            }
            Some(s) if s.line == e.line => {}
            _ => errors.push(e),
        }
    }
    errors.extend(serde_error);
    errors.sort_by_key(|e| (e.line, e.column));
    errors
}
