//! A first pass over the YAML tree, before serde: every unknown and every missing field of
//! the file at once, located, with a did-you-mean. serde stops at the first one.
//!
//! The known fields come from the plan file's JSON schema, so they cannot drift from the
//! Rust types.

use std::sync::OnceLock;

use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Marker, Parser, StrInput};

type Events<'i> = Parser<'i, StrInput<'i>>;

use super::errors::Source;
use super::schema::{mapping_variant, resolve};
use super::{SemanticError, offset_of, quote, suggest};

/// Deeper nesting is not looked into (serde reports what is wrong there).
const MAX_DEPTH: usize = 24;

/// A position in the plan file.
#[derive(Debug, Clone, Copy)]
struct Pos {
    line: u64,
    column: u64,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Pos {
        Pos {
            line: m.line() as u64,
            column: m.col() as u64 + 1,
        }
    }
}

/// A YAML node, reduced to what the field check needs.
#[derive(Debug)]
enum Node {
    Map(Pos, Vec<(Key, Node)>),
    Seq(Vec<Node>),
    Scalar(String, Pos),
    /// An alias, or something too deep to look into.
    Leaf,
}

#[derive(Debug)]
struct Key {
    /// `None`: not a plain scalar key (a mapping as key, an alias).
    text: Option<String>,
    pos: Pos,
}

/// What the first pass found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finding {
    Unknown,
    Missing,
    /// A name that becomes a file name is not safe for it: plan, repo or step, and the name.
    Name(&'static str, String),
}

/// The errors of the first pass; empty when the YAML does not parse (serde reports that).
pub(crate) fn unknown_and_missing_fields(src: &Source) -> Vec<(Finding, SemanticError)> {
    unknown_and_missing_fields_of(src, plan_schema())
}

/// The same for a file a plan file includes (`include:`), which holds only shared parts.
pub(crate) fn unknown_and_missing_fields_in_include(src: &Source) -> Vec<(Finding, SemanticError)> {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    let schema = SCHEMA.get_or_init(|| {
        serde_json::from_str(include_str!("../../schemas/include.schema.json"))
            .unwrap_or(Value::Null)
    });
    unknown_and_missing_fields_of(src, schema)
}

fn unknown_and_missing_fields_of(src: &Source, schema: &Value) -> Vec<(Finding, SemanticError)> {
    let mut parser = Parser::new_from_str(src.text());
    let Some(tree) = parse_document(&mut parser) else {
        return Vec::new();
    };
    let mut walk = Walk {
        src,
        root: schema,
        errors: Vec::new(),
    };
    walk.node(&tree, schema, "", None);
    walk.errors
}

/// The committed schema, which a test keeps equal to the generated one (generating it took a
/// quarter of the time to load a plan file of 200 steps).
fn plan_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::from_str(include_str!("../../schemas/plan.schema.json")).unwrap_or(Value::Null)
    })
}

/// The first document's root node.
fn parse_document(parser: &mut Events<'_>) -> Option<Node> {
    loop {
        let (event, span) = parser.next_event()?.ok()?;
        match event {
            Event::StreamStart | Event::DocumentStart(..) => continue,
            Event::StreamEnd | Event::DocumentEnd => return None,
            _ => return node(parser, event, span.start, 0),
        }
    }
}

/// The node that starts with `event`, reading events up to its end.
fn node<'i>(
    parser: &mut Events<'i>,
    event: Event<'i>,
    start: Marker,
    depth: usize,
) -> Option<Node> {
    match event {
        Event::MappingStart(..) if depth < MAX_DEPTH => {
            let mut entries = Vec::new();
            loop {
                let (event, span) = parser.next_event()?.ok()?;
                if matches!(event, Event::MappingEnd) {
                    return Some(Node::Map(start.into(), entries));
                }
                let key = Key {
                    text: match &event {
                        Event::Scalar(text, ..) => Some(text.to_string()),
                        _ => None,
                    },
                    pos: span.start.into(),
                };
                node(parser, event, span.start, depth + 1)?;
                let (event, span) = parser.next_event()?.ok()?;
                let value = node(parser, event, span.start, depth + 1)?;
                entries.push((key, value));
            }
        }
        Event::SequenceStart(..) if depth < MAX_DEPTH => {
            let mut items = Vec::new();
            loop {
                let (event, span) = parser.next_event()?.ok()?;
                if matches!(event, Event::SequenceEnd) {
                    return Some(Node::Seq(items));
                }
                items.push(node(parser, event, span.start, depth + 1)?);
            }
        }
        Event::MappingStart(..) | Event::SequenceStart(..) => {
            skip_rest(parser)?;
            Some(Node::Leaf)
        }
        Event::Scalar(text, ..) => Some(Node::Scalar(text.into_owned(), start.into())),
        _ => Some(Node::Leaf),
    }
}

/// Read the events of a collection whose start was read.
fn skip_rest<'i>(parser: &mut Events<'i>) -> Option<()> {
    let mut open = 1usize;
    while open > 0 {
        match parser.next_event()?.ok()?.0 {
            Event::MappingStart(..) | Event::SequenceStart(..) => open += 1,
            Event::MappingEnd | Event::SequenceEnd => open -= 1,
            _ => {}
        }
    }
    Some(())
}

struct Walk<'a> {
    src: &'a Source,
    root: &'a Value,
    errors: Vec<(Finding, SemanticError)>,
}

impl Walk<'_> {
    /// Check `node` against `schema`; `path` names it in messages (`steps.build`), `owner`
    /// is the key it is the value of.
    fn node(&mut self, node: &Node, schema: &Value, path: &str, owner: Option<&Key>) {
        let s = resolve(self.root, schema);
        match node {
            Node::Map(start, entries) => {
                if s.get("properties").is_some() {
                    self.fields(s, entries, path, owner.map(|k| k.pos).unwrap_or(*start));
                } else if let Some(variant) = mapping_variant(self.root, s) {
                    self.node(node, variant, path, owner);
                } else if let Some(inner) = s.get("additionalProperties").filter(|a| a.is_object())
                {
                    for (key, value) in entries {
                        let name = key.text.as_deref().unwrap_or("?");
                        match path {
                            "repos" => self.name(name, key.pos, "repo"),
                            "steps" => self.name(name, key.pos, "step"),
                            _ => {}
                        }
                        self.node(value, inner, &join(path, name), Some(key));
                    }
                }
            }
            Node::Seq(items) => {
                if let Some(inner) = s.get("items") {
                    for item in items {
                        self.node(item, inner, &format!("{path}[]"), None);
                    }
                }
            }
            Node::Scalar(name, pos) if path == "name" => self.name(name, *pos, "plan"),
            Node::Scalar(..) | Node::Leaf => {}
        }
    }

    /// A plan, repo or step name, which becomes part of file names.
    fn name(&mut self, name: &str, pos: Pos, what: &'static str) {
        if let Some(message) = super::names::check(what, name) {
            let offset = offset_of(self.src.text(), pos.line, pos.column);
            let e = self.src.error_at_offset(
                offset,
                pos.line,
                pos.column,
                name.len(),
                message,
                "unsafe name",
            );
            let e = e.with_help(super::names::help(what));
            self.errors.push((Finding::Name(what, name.to_string()), e));
        }
    }

    /// The fields of a mapping whose schema lists them.
    fn fields(&mut self, s: &Value, entries: &[(Key, Node)], path: &str, at: Pos) {
        let Some(props) = s["properties"].as_object() else {
            return;
        };
        let closed = s.get("additionalProperties") == Some(&Value::Bool(false));
        for (key, value) in entries {
            match key.text.as_deref() {
                Some(name) if props.contains_key(name) => {
                    let schema = props.get(name).unwrap_or(&Value::Null);
                    self.node(value, schema, &join(path, name), Some(key));
                }
                // A merge key (`<<: *defaults`) brings fields in; serde checks those.
                Some("<<") | None => {}
                Some(name) if closed => {
                    let known: Vec<String> = props.keys().cloned().collect();
                    let help = suggest(name, known.iter(), "fields");
                    let where_ = if path.is_empty() {
                        String::new()
                    } else {
                        format!(" in {}", quote(path))
                    };
                    let e = self.error(
                        key.pos,
                        name.len(),
                        format!("unknown field {}{where_}", quote(name)),
                        "unknown field",
                    );
                    self.errors.push((Finding::Unknown, e.with_help(help)));
                }
                Some(_) => {}
            }
        }
        // Fields merged in (`<<: *defaults`) are serde's to check.
        if entries.iter().any(|(k, _)| k.text.as_deref() == Some("<<")) {
            return;
        }
        let required = s["required"].as_array().into_iter().flatten();
        for name in required.filter_map(|r| r.as_str()) {
            if entries.iter().any(|(k, _)| k.text.as_deref() == Some(name)) {
                continue;
            }
            let where_ = if path.is_empty() {
                String::new()
            } else {
                format!(" in {}", quote(path))
            };
            let what = props
                .get(name)
                .and_then(|p| p["description"].as_str())
                .unwrap_or_default();
            let e = self.error(
                at,
                1,
                format!("missing field {}{where_}", quote(name)),
                "missing a field",
            );
            let help = format!("`{name}`: {}", what.replace('\n', " "));
            self.errors.push((Finding::Missing, e.with_help(help)));
        }
    }

    fn error(&self, pos: Pos, len: usize, message: String, label: &str) -> SemanticError {
        let offset = offset_of(self.src.text(), pos.line, pos.column);
        self.src
            .error_at_offset(offset, pos.line, pos.column, len, message, label)
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}
