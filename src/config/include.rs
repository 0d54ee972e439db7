//! `include:`: files whose components and lists a plan file uses as if written in it, so
//! that staging and production read one definition of what KernelCI is made of.
//!
//! Every file keeps its own positions: the plan file and the files it includes are laid end
//! to end in one combined text, each included file is parsed from a copy of that text in
//! which everything before it is blanked out (newlines kept, every other byte a space), so
//! its lines, columns and byte offsets are those of the combined text, and an error names
//! the file it is in ([`Segment`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::Location;

use super::errors::{Segment, Source};
use super::{IncludedFile, PlanFile, SemanticError, input, quote, scan};

/// The plan's combined text and its files, and the errors of the included files.
pub(crate) struct Included {
    pub(crate) text: Arc<String>,
    pub(crate) segments: Arc<Vec<Segment>>,
    pub(crate) errors: Vec<SemanticError>,
    /// Any error is a shape error (syntax, unknown field), not a meaning error.
    pub(crate) syntax: bool,
}

/// Read every file `file.include` names (relative to `dir`) and merge its components and
/// lists into `file`: included ones first, in include order, then the plan file's own.
pub(crate) fn merge(path: &Path, dir: &Path, main: &Arc<String>, file: &mut PlanFile) -> Included {
    let main_src = Source::new(path, main.clone());
    let mut text = main.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let mut segments = vec![Segment::new(path, 0, 1, main.clone())];
    let mut errors = Vec::new();
    let mut read: Vec<(PathBuf, Location, String)> = Vec::new();
    for entry in &file.include {
        let at = entry.referenced;
        let rel = Path::new(&entry.value);
        let full = dir.join(rel);
        let shown = if rel.is_absolute() {
            rel.to_path_buf()
        } else {
            path.parent().unwrap_or(Path::new("")).join(rel)
        };
        if read.iter().any(|(p, _, _)| *p == shown) {
            let message = format!("{} is included twice", quote(&entry.value));
            errors.push(main_src.error_at(&at, entry.value.len().max(1), message, "again here"));
            continue;
        }
        match input::read(&full) {
            Ok(included) => read.push((shown, at, included)),
            Err(e) => {
                let message = format!("cannot include {}: {e}", quote(&entry.value));
                let help = "paths in `include:` are relative to the plan file";
                errors.push(
                    main_src
                        .error_at(&at, entry.value.len().max(1), message, "this file")
                        .with_help(help),
                );
            }
        }
    }
    if !errors.is_empty() {
        return Included {
            text: main.clone(),
            segments: Arc::new(segments),
            errors,
            syntax: false,
        };
    }
    let mut parsed = Vec::new();
    for (shown, at, included) in read {
        let start = text.len();
        let first_line = text.matches('\n').count() as u64 + 1;
        let included = Arc::new(included);
        segments.push(Segment::new(&shown, start, first_line, included.clone()));
        text.push_str(&included);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        parsed.push((start, at, shown));
    }
    let text = Arc::new(text);
    let segments = Arc::new(segments);
    let mut syntax = false;
    let mut files = Vec::new();
    for (start, at, shown) in parsed {
        let end = segments
            .iter()
            .find(|s| s.start == start)
            .map(|s| start + s.text.len())
            .unwrap_or(text.len());
        let blanked = blank_before(&text, start, end);
        let src = Source::combined(Arc::new(blanked), segments.clone());
        match parse(&src) {
            Ok(included) => files.push((included, at, shown)),
            Err(mut e) => {
                syntax = true;
                errors.append(&mut e);
            }
        }
    }
    if errors.is_empty() {
        errors = merge_parts(file, files, &main_src);
    }
    Included {
        text,
        segments,
        errors,
        syntax,
    }
}

/// The combined text up to `end`, with every byte before `start` but newlines made a space.
fn blank_before(text: &str, start: usize, end: usize) -> String {
    let mut bytes: Vec<u8> = text.as_bytes()[..end].to_vec();
    for b in &mut bytes[..start] {
        if *b != b'\n' {
            *b = b' ';
        }
    }
    // Spaces and newlines replaced whole bytes of the first part; the rest is a copy of a
    // `str` starting on a character boundary (each file is appended whole).
    String::from_utf8(bytes).unwrap_or_default()
}

fn parse(src: &Source) -> Result<IncludedFile, Vec<SemanticError>> {
    let scanned: Vec<SemanticError> = scan::unknown_and_missing_fields_in_include(src)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    match serde_saphyr::from_str::<IncludedFile>(src.text()) {
        Ok(_) if !scanned.is_empty() => Err(scanned),
        Ok(included) => Ok(included),
        Err(e) if scanned.is_empty() => Err(vec![super::yaml_error(src, &e)]),
        Err(_) => Err(scanned),
    }
}

/// Components and lists of the included files, then the plan file's own; a name defined
/// twice is an error at the `include:` entry that brought the second one.
fn merge_parts(
    file: &mut PlanFile,
    files: Vec<(IncludedFile, Location, PathBuf)>,
    main_src: &Source,
) -> Vec<SemanticError> {
    let own_at = file.include.first().map(|e| e.referenced);
    let mut components = Section::new("component");
    let mut lists = Section::new("list");
    for (included, at, shown) in files {
        let from = Some(shown.display().to_string());
        components.add(included.components, &from, at);
        lists.add(included.lists, &from, at);
    }
    let at = own_at.unwrap_or(Location::UNKNOWN);
    components.add(std::mem::take(&mut file.components), &None, at);
    lists.add(std::mem::take(&mut file.lists), &None, at);
    let mut errors = components.errors(main_src);
    errors.append(&mut lists.errors(main_src));
    file.components = components.merged;
    file.lists = lists.merged;
    errors
}

/// One section (`components` or `lists`) merged from several files.
struct Section<T> {
    kind: &'static str,
    merged: indexmap::IndexMap<String, T>,
    /// The included file each name came from (`None`: the plan file).
    origin: std::collections::HashMap<String, Option<String>>,
    /// Name, first file, second file, where to report it.
    twice: Vec<(String, Option<String>, Option<String>, Location)>,
}

impl<T> Section<T> {
    fn new(kind: &'static str) -> Section<T> {
        Section {
            kind,
            merged: indexmap::IndexMap::new(),
            origin: Default::default(),
            twice: Vec::new(),
        }
    }

    fn add(&mut self, items: indexmap::IndexMap<String, T>, from: &Option<String>, at: Location) {
        for (name, item) in items {
            if let Some(first) = self.origin.get(&name) {
                self.twice.push((name, first.clone(), from.clone(), at));
                continue;
            }
            self.origin.insert(name.clone(), from.clone());
            self.merged.insert(name, item);
        }
    }

    fn errors(&self, main_src: &Source) -> Vec<SemanticError> {
        let file = |f: &Option<String>| match f {
            Some(f) => quote(f),
            None => "the plan file".to_string(),
        };
        self.twice
            .iter()
            .map(|(name, first, second, at)| {
                let message = format!(
                    "{} {} is defined in {} and again in {}",
                    self.kind,
                    quote(name),
                    file(first),
                    file(second)
                );
                main_src
                    .error_at(at, 1, message, "included here")
                    .with_help("define each component and list once: rename or remove one")
            })
            .collect()
    }
}
