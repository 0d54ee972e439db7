//! Plan file errors: each starts with file:line:col, quotes the plan file briefly, and shows
//! the line with a caret.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};
use serde_saphyr::Location;

/// Longest piece of the plan file quoted in a message, in characters.
pub const QUOTE_MAX: usize = 64;

/// A plan file with a longer line is reported without source snippets (the line would be
/// echoed whole).
const SNIPPET_LINE_MAX: usize = 1000;

/// `text` for a message: control characters escaped, cut after [`QUOTE_MAX`] characters
/// with `…`.
pub fn clip(text: &str) -> String {
    crate::support::text::clip(text, QUOTE_MAX)
}

/// `text` in backquotes, clipped.
pub fn quote(text: &str) -> String {
    format!("`{}`", clip(text))
}

/// Clip every backquoted piece of a message written by someone else (the YAML parser).
pub(crate) fn clip_quoted(message: &str) -> String {
    message
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                clip(part)
            } else {
                clip_long(part)
            }
        })
        .collect::<Vec<_>>()
        .join("`")
}

/// Unquoted text of a parser message: control characters escaped, long runs cut.
fn clip_long(text: &str) -> String {
    crate::support::text::clip(text, 4 * QUOTE_MAX)
}

/// One file of a plan at its place in the combined text: the plan file first, then each file
/// it includes (`include:`), so that every location of the plan is one (line, column) of the
/// combined text and names its own file in messages.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub(crate) path: PathBuf,
    /// Byte offset of the file's first byte in the combined text.
    pub(crate) start: usize,
    /// Line of the combined text that is the file's line 1.
    pub(crate) first_line: u64,
    pub(crate) text: Arc<String>,
    /// No line is too long to show.
    showable: bool,
}

impl Segment {
    pub(crate) fn new(path: &Path, start: usize, first_line: u64, text: Arc<String>) -> Segment {
        let showable = text.lines().all(|l| l.len() <= SNIPPET_LINE_MAX);
        Segment {
            path: path.to_path_buf(),
            start,
            first_line,
            text,
            showable,
        }
    }
}

/// The plan's text and files, for messages and snippets.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    text: Arc<String>,
    segments: Arc<Vec<Segment>>,
}

impl Source {
    /// A plan file without includes.
    pub(crate) fn new(path: &Path, text: Arc<String>) -> Source {
        let whole = Segment::new(path, 0, 1, text.clone());
        Source {
            text,
            segments: Arc::new(vec![whole]),
        }
    }

    /// The combined text of a plan file and the files it includes.
    pub(crate) fn combined(text: Arc<String>, segments: Arc<Vec<Segment>>) -> Source {
        Source { text, segments }
    }

    /// The file that holds a line of the combined text (the plan file for line 0).
    fn segment(&self, line: u64) -> &Segment {
        self.segments
            .iter()
            .rev()
            .find(|s| s.first_line <= line)
            .or(self.segments.first())
            .expect("a source has at least the plan file")
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// An error at `loc`, underlining `len` bytes.
    pub(crate) fn error_at(
        &self,
        loc: &Location,
        len: usize,
        message: String,
        label: &str,
    ) -> SemanticError {
        let offset = super::byte_offset(&self.text, loc);
        self.error_at_offset(offset, loc.line(), loc.column(), len, message, label)
    }

    pub(crate) fn error_at_offset(
        &self,
        offset: usize,
        line: u64,
        column: u64,
        len: usize,
        message: String,
        label: &str,
    ) -> SemanticError {
        let len = len.min(self.text.len().saturating_sub(offset));
        self.error_with_labels(
            line,
            column,
            message,
            vec![LabeledSpan::new_with_span(
                Some(label.to_string()),
                SourceSpan::new(offset.into(), len),
            )],
        )
    }

    pub(crate) fn error_with_labels(
        &self,
        line: u64,
        column: u64,
        message: String,
        labels: Vec<LabeledSpan>,
    ) -> SemanticError {
        let file = self.segment(line);
        let path = file.path.display();
        let message = if line > 0 {
            let local = line - file.first_line + 1;
            format!("{path}:{local}:{column}: {message}")
        } else {
            format!("{path}: {message}")
        };
        // Labels are offsets in the combined text; the snippet shows the file alone.
        let labels = labels
            .into_iter()
            .map(|l| {
                let offset = l.offset().saturating_sub(file.start);
                LabeledSpan::new_with_span(
                    l.label().map(String::from),
                    SourceSpan::new(offset.into(), l.len()),
                )
            })
            .collect();
        SemanticError {
            message,
            line,
            column,
            src: file
                .showable
                .then(|| NamedSource::new(path.to_string(), file.text.clone())),
            labels,
            help: None,
        }
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
    #[error(
        "{}: the plan file is larger than {} MiB; a plan file this large is not a plan file",
        path.display(),
        max / (1024 * 1024)
    )]
    #[diagnostic(code(kcideploy::config::too_large))]
    TooLarge { path: PathBuf, max: u64 },
    #[error(
        "{}:{line}:{column}: the plan file is not UTF-8: byte 0x{byte:02x} at offset {offset} \
         cannot start a character",
        path.display()
    )]
    #[diagnostic(
        code(kcideploy::config::not_utf8),
        help("save the plan file as UTF-8 text")
    )]
    NotUtf8 {
        path: PathBuf,
        line: u64,
        column: u64,
        offset: usize,
        byte: u8,
    },
    /// The YAML does not fit the plan file's shape: syntax, unknown or missing fields, wrong
    /// types.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Syntax(PlanFileErrors),
    /// The plan file has the right shape but does not make sense: unknown names, cycles.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(PlanFileErrors),
}

impl ConfigError {
    /// Every located error, in file order (empty for read errors).
    pub fn errors(&self) -> &[SemanticError] {
        match self {
            ConfigError::Syntax(list) | ConfigError::Invalid(list) => &list.errors,
            _ => &[],
        }
    }
}

/// All errors of one plan file.
#[derive(Debug, thiserror::Error)]
#[error("{} has {} error(s)", path.display(), errors.len())]
pub struct PlanFileErrors {
    pub path: PathBuf,
    pub errors: Vec<SemanticError>,
    /// Shape errors (`kcideploy::config::syntax`) rather than meaning errors.
    pub(crate) syntax: bool,
}

impl Diagnostic for PlanFileErrors {
    fn code<'a>(&'a self) -> Option<Box<dyn Display + 'a>> {
        Some(Box::new(if self.syntax {
            "kcideploy::config::syntax"
        } else {
            "kcideploy::config::invalid"
        }))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.errors.iter().map(|e| e as &dyn Diagnostic)))
    }
}

/// One error in a plan file: a YAML or schema error, a name that points nowhere, a cycle, an
/// invalid glob.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct SemanticError {
    pub message: String,
    pub line: u64,
    pub column: u64,
    #[source_code]
    pub(crate) src: Option<NamedSource<Arc<String>>>,
    #[label(collection)]
    pub(crate) labels: Vec<LabeledSpan>,
    #[help]
    pub help: Option<String>,
}

impl SemanticError {
    pub(crate) fn with_help(mut self, help: impl Into<String>) -> SemanticError {
        self.help = Some(help.into());
        self
    }
}

/// Errors in file order, with repeats folded: one text can make several definitions (a
/// `for_each` expands into one step per item, a YAML alias repeats a mapping), and an error
/// in that text is then found once per definition, at the same place. The first is kept,
/// saying how many more there were.
pub(crate) fn fold_repeats(mut errors: Vec<SemanticError>) -> Vec<SemanticError> {
    errors.sort_by_key(|e| (e.line, e.column));
    let label = |e: &SemanticError| e.labels.first().and_then(|l| l.label().map(String::from));
    let mut out: Vec<(SemanticError, usize)> = Vec::new();
    for e in errors {
        match out.last_mut() {
            Some((first, n))
                if e.line > 0
                    && (first.line, first.column) == (e.line, e.column)
                    && label(first) == label(&e) =>
            {
                *n += 1;
            }
            _ => out.push((e, 0)),
        }
    }
    out.into_iter()
        .map(|(mut e, n)| {
            if n > 0 {
                e.message
                    .push_str(&format!(" (and {n} more from the same text)"));
            }
            e
        })
        .collect()
}

/// The error's message without serde-saphyr's own location suffix and snippet.
pub(crate) fn yaml_message(err: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter;
    // The structured error, not its rendered text: the location leads our message, and a
    // new serde-saphyr release cannot change what we cut.
    let err = err.without_snippet();
    if let serde_saphyr::Error::DuplicateMappingKey { key, .. } = err {
        let key = key
            .as_deref()
            .map(|k| format!(" {}", quote(k)))
            .unwrap_or_default();
        return format!("duplicate key{key}: a key may appear only once in a mapping");
    }
    let text = serde_saphyr::DefaultMessageFormatter.format_message(err);
    // The text may quote the plan file: control characters are escaped (`\n`), so none
    // reaches a terminal or log and the message stays on one line; quotes are clipped.
    clip_quoted(text.trim()).trim_end_matches(':').to_string()
}
