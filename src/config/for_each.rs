//! `for_each:` of a step or component (Terraform's meta-argument): the items a definition
//! expands into, each with its key, as written in the plan file. The expansion itself is in
//! `expand.rs`.
//!
//! ```yaml
//! for_each: [arm64, x86]                         # key = value = the string
//! for_each:                                      # key = `key`, else the scalar values
//!   - { compiler: gcc-14, arch: arm64 }          #   joined by `/`: `gcc-14/arm64`
//! for_each:                                      # a matrix: every combination, in order
//!   compiler: [clang-21, gcc-14]                 #   (first axis outermost); key
//!   arch: [arm64, x86]                           #   `clang-21/arm64`
//!   exclude: [{ compiler: clang-21, arch: x86 }] # combinations left out
//! ```

use std::fmt;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

/// The reserved axis of a matrix that lists the combinations left out.
pub const EXCLUDE: &str = "exclude";
/// The field of a mapping item that names its key.
pub const KEY: &str = "key";

/// What `for_each:` holds.
#[derive(Debug, Clone)]
pub enum ForEach {
    /// A list of items: strings, or mappings.
    List(Vec<Spanned<Value>>),
    /// Axes (name → list of values) whose every combination is an item; `exclude:` lists
    /// combinations (some axes each) left out.
    Matrix(IndexMap<String, Spanned<Value>>),
    /// `${lists.<name>}`: the items of a named list of the plan (`lists:`), replaced by
    /// them before expansion.
    Named(String),
}

/// The name in a `${lists.<name>}` reference.
pub fn list_reference(text: &str) -> Option<&str> {
    text.strip_prefix("${lists.")?
        .strip_suffix('}')
        .filter(|n| !n.is_empty())
}

/// One item of a `for_each`, with its key.
#[derive(Debug, Clone)]
pub struct Item {
    /// `${each.key}`: what the expanded name carries in brackets (`build[gcc-14/arm64]`).
    pub key: String,
    /// `${each.value}`: a string, number or boolean, or a mapping of fields.
    pub value: Value,
    /// Where the item is written (the matrix's first axis for a combination).
    pub at: Location,
}

/// Why a `for_each` gives no items: where, and what is wrong.
#[derive(Debug, Clone)]
pub struct ItemError {
    pub at: Location,
    pub message: String,
    pub help: Option<String>,
}

impl ItemError {
    fn new(at: Location, message: impl Into<String>) -> ItemError {
        ItemError {
            at,
            message: message.into(),
            help: None,
        }
    }

    fn help(mut self, help: impl Into<String>) -> ItemError {
        self.help = Some(help.into());
        self
    }
}

/// A string, number or boolean as it appears in a key or in text.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl ForEach {
    /// The items, in order; `at` is where `for_each:` itself is written.
    pub fn items(&self, at: Location) -> Result<Vec<Item>, ItemError> {
        let items = match self {
            ForEach::List(list) => list.iter().map(list_item).collect::<Result<Vec<_>, _>>()?,
            ForEach::Matrix(axes) => matrix_items(axes, at)?,
            ForEach::Named(name) => {
                return Err(
                    ItemError::new(at, format!("`for_each` names no list `{name}`"))
                        .help("define it under `lists:` in the plan file or in an included file"),
                );
            }
        };
        if items.is_empty() {
            return Err(ItemError::new(at, "`for_each` gives no items")
                .help("list at least one item, or remove the definition"));
        }
        Ok(items)
    }
}

fn list_item(item: &Spanned<Value>) -> Result<Item, ItemError> {
    let at = item.referenced;
    let key = match &item.value {
        Value::Object(fields) => match fields.get(KEY) {
            Some(k) => scalar_text(k).ok_or_else(|| {
                ItemError::new(at, "the item's `key` is not a string")
                    .help("`key` names the item in expanded names: `build[<key>]`")
            })?,
            None => {
                let parts: Vec<String> = fields.values().filter_map(scalar_text).collect();
                if parts.is_empty() {
                    return Err(
                        ItemError::new(at, "the item has no string field to key it by")
                            .help("add `key: <name>` to the item"),
                    );
                }
                parts.join("/")
            }
        },
        other => scalar_text(other).ok_or_else(|| {
            ItemError::new(
                at,
                "a `for_each` item is a string or a mapping, not a list or null",
            )
            .help("for combinations of values, write `for_each` as a matrix: a mapping of lists")
        })?,
    };
    Ok(Item {
        key,
        value: item.value.clone(),
        at,
    })
}

/// Every combination of the axes (first axis outermost), minus the excluded ones.
fn matrix_items(
    axes: &IndexMap<String, Spanned<Value>>,
    at: Location,
) -> Result<Vec<Item>, ItemError> {
    let mut lists: Vec<(&str, Vec<String>)> = Vec::new();
    for (name, values) in axes.iter().filter(|(n, _)| *n != EXCLUDE) {
        let bad = || {
            ItemError::new(
                values.referenced,
                format!("matrix axis `{name}` is not a list of strings"),
            )
            .help("a matrix maps each axis to its values: `arch: [arm64, x86]`")
        };
        let Value::Array(list) = &values.value else {
            return Err(bad());
        };
        let texts: Option<Vec<String>> = list.iter().map(scalar_text).collect();
        let texts = texts.ok_or_else(bad)?;
        if texts.is_empty() {
            return Err(ItemError::new(
                values.referenced,
                format!("matrix axis `{name}` has no values"),
            ));
        }
        lists.push((name.as_str(), texts));
    }
    if lists.is_empty() {
        return Err(ItemError::new(at, "the matrix has no axes")
            .help("a matrix maps each axis to its values: `arch: [arm64, x86]`"));
    }
    let excludes = excludes(axes, &lists)?;
    let mut combos: Vec<Vec<&str>> = vec![Vec::new()];
    for (_, values) in &lists {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut next = c.clone();
                    next.push(v.as_str());
                    next
                })
            })
            .collect();
    }
    let mut used = vec![false; excludes.len()];
    let mut items = Vec::new();
    for combo in combos {
        let mut excluded = false;
        for (i, ex) in excludes.iter().enumerate() {
            let hit = ex.pairs.iter().all(|(axis, value)| {
                lists
                    .iter()
                    .position(|(n, _)| n == axis)
                    .is_some_and(|i| combo[i] == value)
            });
            used[i] |= hit;
            excluded |= hit;
        }
        if excluded {
            continue;
        }
        let value: serde_json::Map<String, Value> = lists
            .iter()
            .zip(&combo)
            .map(|((axis, _), v)| (axis.to_string(), Value::String(v.to_string())))
            .collect();
        items.push(Item {
            key: combo.join("/"),
            value: Value::Object(value),
            at: axes.values().next().map(|v| v.referenced).unwrap_or(at),
        });
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(ItemError::new(
            excludes[i].at,
            "this `exclude` entry matches no combination",
        )
        .help("each `exclude` entry names values of the matrix's axes; check the spelling"));
    }
    Ok(items)
}

struct Exclude {
    at: Location,
    pairs: Vec<(String, String)>,
}

fn excludes(
    axes: &IndexMap<String, Spanned<Value>>,
    lists: &[(&str, Vec<String>)],
) -> Result<Vec<Exclude>, ItemError> {
    let Some(spec) = axes.get(EXCLUDE) else {
        return Ok(Vec::new());
    };
    let bad = || {
        ItemError::new(spec.referenced, "`exclude` is not a list of mappings")
            .help("`exclude: [{ compiler: clang-21, arch: x86 }]` leaves those combinations out")
    };
    let Value::Array(entries) = &spec.value else {
        return Err(bad());
    };
    let mut out = Vec::new();
    for entry in entries {
        let Value::Object(fields) = entry else {
            return Err(bad());
        };
        let mut pairs = Vec::new();
        for (axis, value) in fields {
            if !lists.iter().any(|(n, _)| n == axis) {
                let known: Vec<String> = lists.iter().map(|(n, _)| n.to_string()).collect();
                return Err(ItemError::new(
                    spec.referenced,
                    format!("`exclude` names unknown axis `{axis}`"),
                )
                .help(super::suggest(axis, known.iter(), "axes")));
            }
            pairs.push((axis.clone(), scalar_text(value).ok_or_else(bad)?));
        }
        out.push(Exclude {
            at: spec.referenced,
            pairs,
        });
    }
    Ok(out)
}

impl<'de> Deserialize<'de> for ForEach {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ForEachVisitor;
        impl<'de> Visitor<'de> for ForEachVisitor {
            type Value = ForEach;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of items, a matrix (a mapping of lists) or `${lists.<name>}`")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ForEach, E> {
                match list_reference(text) {
                    Some(name) => Ok(ForEach::Named(name.to_string())),
                    None => Err(E::custom(format!(
                        "`for_each` is a list, a matrix or `${{lists.<name>}}`, not `{}`",
                        super::clip(text)
                    ))),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ForEach, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Value>>()? {
                    items.push(item);
                }
                Ok(ForEach::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ForEach, A::Error> {
                let mut axes = IndexMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    let values = map.next_value::<Spanned<Value>>()?;
                    if axes.insert(name.clone(), values).is_some() {
                        return Err(de::Error::custom(format!("duplicate matrix axis `{name}`")));
                    }
                }
                Ok(ForEach::Matrix(axes))
            }
        }
        deserializer.deserialize_any(ForEachVisitor)
    }
}

impl Serialize for ForEach {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ForEach::List(items) => items.serialize(serializer),
            ForEach::Matrix(axes) => axes.serialize(serializer),
            ForEach::Named(name) => format!("${{lists.{name}}}").serialize(serializer),
        }
    }
}

/// The schema of `for_each`: a list of items, or a matrix (the type above reads it by hand,
/// to keep the position of each item).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum ForEachSchema {
    /// Items: strings, or mappings of fields (`{ compiler: gcc-14, arch: arm64 }`).
    #[schemars(title = "list of items")]
    List(Vec<ForEachItemSchema>),
    /// A matrix: axis name → list of values; `exclude:` lists combinations left out.
    #[schemars(title = "matrix")]
    Matrix(IndexMap<String, Vec<ForEachItemSchema>>),
    /// `${lists.<name>}`: the items of a list of `lists:` (of this plan file or an
    /// included one).
    #[schemars(title = "named list")]
    Named(String),
}

/// A string, or a mapping of fields.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum ForEachItemSchema {
    Text(String),
    Fields(IndexMap<String, serde_json::Value>),
}
