//! Expanding `for_each`: a step or component with `for_each` becomes one plain definition per
//! item, named `<name>[<key>]`, with `${each.key}`, `${each.value}` and
//! `${each.value.<field>}` replaced in its strings. This runs when the plan file loads,
//! before the checks, so every later layer (checks, planner, executor, state) sees plain
//! steps and components.
//!
//! Where the item is available: a component's `repo`, `paths`, `exclude` and
//! `description`; a step's `on`, `needs`, `after`, `description`, `docker_host` and every
//! string of `with:` (map keys too). In `with:`, a string that is one reference and nothing else takes the
//! item's value with its type (`"${each.value.fragments}"` is a list), and a list in a list
//! is spliced into it (`run: [kci, "${each.value.fragments}"]`). `$${each.` is a literal
//! `${each.`.
//!
//! In `paths`, `exclude`, `on`, `needs` and `after`, a string that holds a reference to a
//! list becomes one string per element: `"config/docker/${each.value.templates}.jinja2"`
//! with `templates: [gcc-14-x86, base/debian]` gives two paths.
//!
//! In `on`, `needs` and `after`, the name of a definition with `for_each` (`build`) stands for
//! all its expanded definitions (`build[arm64]`, `build[x86]`), in order.

use std::collections::HashMap;

use indexmap::IndexMap;
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use super::errors::Source;
use super::for_each::{ForEach, Item, scalar_text};
use super::{Component, PlanFile, SemanticError, SpannedString, StepConfig, quote};

/// The longest expanded step name: with `blame-` and `.log` around it, far below 255 bytes.
pub const EXPANDED_NAME_MAX: usize = 2 * super::names::NAME_MAX;

/// Expand every `for_each` of the plan file in place; the errors, each located.
pub(crate) fn expand(file: &mut PlanFile, src: &Source) -> Vec<SemanticError> {
    let mut x = Expander {
        src,
        errors: Vec::new(),
    };
    resolve_lists(file);
    let (mut components, component_groups) =
        x.definitions(std::mem::take(&mut file.components), "component");
    let (mut steps, step_groups) = x.definitions(std::mem::take(&mut file.steps), "step");
    for step in steps.values_mut() {
        step.on = spread(&step.on, &component_groups);
        step.needs = spread(&step.needs, &step_groups);
        step.after = spread(&step.after, &step_groups);
        step.when_failed = spread(&step.when_failed, &step_groups);
    }
    for c in components.values_mut() {
        c.for_each = None;
    }
    file.components = components;
    file.steps = steps;
    let mut errors = x.errors;
    errors.sort_by_key(|e| (e.line, e.column));
    errors.dedup_by(|a, b| a.message == b.message);
    errors
}

/// Every `for_each: ${lists.<name>}` replaced by the list's items (an unknown name is left
/// for [`ForEach::items`] to report).
fn resolve_lists(file: &mut PlanFile) {
    let lists = &file.lists;
    let resolve = |for_each: &mut Option<Spanned<ForEach>>| {
        if let Some(f) = for_each
            && let ForEach::Named(list) = &f.value
            && let Some(items) = lists.get(list)
        {
            f.value = ForEach::List(items.clone());
        }
    };
    file.components
        .values_mut()
        .for_each(|c| resolve(&mut c.for_each));
    file.steps
        .values_mut()
        .for_each(|s| resolve(&mut s.for_each));
}

/// References to a `for_each` definition's name replaced by all its expansions.
fn spread(refs: &[SpannedString], groups: &IndexMap<String, Vec<String>>) -> Vec<SpannedString> {
    let mut out: Vec<SpannedString> = Vec::new();
    for r in refs {
        let names = match groups.get(&r.value) {
            Some(names) => names.clone(),
            None => vec![r.value.clone()],
        };
        for name in names {
            if !out.iter().any(|o| o.value == name) {
                out.push(Spanned::new(name, r.referenced, r.defined));
            }
        }
    }
    out
}

/// A step or a component.
trait Definition: Clone {
    fn take_for_each(&mut self) -> Option<Spanned<ForEach>>;
    /// A copy with `item` substituted; `at` locates errors in fields without a position.
    fn instance(&self, x: &mut Expander<'_>, item: Option<&Item>, at: &Location) -> Self;
}

impl Definition for Component {
    fn take_for_each(&mut self) -> Option<Spanned<ForEach>> {
        self.for_each.take()
    }

    fn instance(&self, x: &mut Expander<'_>, item: Option<&Item>, at: &Location) -> Component {
        Component {
            repo: x.string(&self.repo, item),
            paths: x.strings(&self.paths, item),
            exclude: x.strings(&self.exclude, item),
            description: x.text(self.description.as_deref(), item, at),
            for_each: None,
            ci_covers: self.ci_covers,
        }
    }
}

impl Definition for StepConfig {
    fn take_for_each(&mut self) -> Option<Spanned<ForEach>> {
        self.for_each.take()
    }

    fn instance(&self, x: &mut Expander<'_>, item: Option<&Item>, at: &Location) -> StepConfig {
        let mut step = self.clone();
        step.on = x.strings(&self.on, item);
        step.needs = x.strings(&self.needs, item);
        step.after = x.strings(&self.after, item);
        step.when_failed = x.strings(&self.when_failed, item);
        step.description = x.text(self.description.as_deref(), item, at);
        step.docker_host = self.docker_host.as_ref().map(|h| x.string(h, item));
        let with_at = if self.with.referenced.line() > 0 {
            self.with.referenced
        } else {
            *at
        };
        let mut with = IndexMap::new();
        for (k, v) in &self.with.value {
            let key = x.text(Some(k), item, &with_at).unwrap_or_default();
            with.insert(key, x.json(v, item, &with_at));
        }
        step.with = Spanned::new(with, self.with.referenced, self.with.defined);
        step.for_each = None;
        step
    }
}

struct Expander<'a> {
    src: &'a Source,
    errors: Vec<SemanticError>,
}

impl Expander<'_> {
    fn error(&mut self, at: &Location, len: usize, message: String, help: Option<String>) {
        let mut e = self.src.error_at(at, len.max(1), message, "here");
        e.help = help;
        self.errors.push(e);
    }

    /// Each definition, or its expansions in place of it; and the names each `for_each`
    /// definition expanded into.
    fn definitions<D: Definition>(
        &mut self,
        defs: IndexMap<String, D>,
        what: &str,
    ) -> (IndexMap<String, D>, IndexMap<String, Vec<String>>) {
        let mut out = IndexMap::new();
        let mut groups = IndexMap::new();
        for (name, mut def) in defs {
            let Some(for_each) = def.take_for_each() else {
                let plain = def.instance(self, None, &Location::UNKNOWN);
                out.insert(name, plain);
                continue;
            };
            let at = for_each.referenced;
            let items = match for_each.value.items(at) {
                Ok(items) => items,
                Err(e) => {
                    let message = format!("{what} {}: {}", quote(&name), e.message);
                    self.error(&e.at, 1, message, e.help);
                    continue;
                }
            };
            let mut names: Vec<String> = Vec::new();
            let mut first_at: HashMap<String, u64> = HashMap::new();
            for item in &items {
                let expanded = format!("{name}[{}]", item.key);
                if let Some(why) = key_problem(&item.key) {
                    let message = format!(
                        "{what} {}: item key {} cannot be part of a name: {why}",
                        quote(&name),
                        quote(&item.key)
                    );
                    let help = "use letters, digits, `.`, `_` and `-` in each `/`-separated part, or give the item a `key:`";
                    self.error(&item.at, 1, message, Some(help.into()));
                    continue;
                }
                if expanded.len() > EXPANDED_NAME_MAX {
                    let message = format!(
                        "{what} name {} is longer than {EXPANDED_NAME_MAX} characters",
                        quote(&expanded)
                    );
                    self.error(&item.at, 1, message, Some("use shorter keys".into()));
                    continue;
                }
                if let Some(line) = first_at.get(&expanded) {
                    let message = format!(
                        "`for_each` of {what} {} gives {} twice (the first at line {line})",
                        quote(&name),
                        quote(&expanded)
                    );
                    let help = "each item needs its own key: make the items differ, or give each a distinct `key:`";
                    self.error(&item.at, 1, message, Some(help.into()));
                    continue;
                }
                first_at.insert(expanded.clone(), item.at.line());
                let instance = def.instance(self, Some(item), &at);
                out.insert(expanded.clone(), instance);
                names.push(expanded);
            }
            groups.insert(name, names);
        }
        (out, groups)
    }

    fn string(&mut self, s: &SpannedString, item: Option<&Item>) -> SpannedString {
        match substitute(&s.value, item) {
            Ok(value) => Spanned::new(value, s.referenced, s.defined),
            Err((message, help)) => {
                self.error(&s.referenced, s.value.len(), message, help);
                s.clone()
            }
        }
    }

    /// A list of strings (`paths`, `exclude`, `on`, `needs`, `after`) with `item`
    /// substituted. A string holding a reference to a list becomes one string per element
    /// (`"config/docker/${each.value.templates}.jinja2"` → one path per template).
    fn strings(&mut self, list: &[SpannedString], item: Option<&Item>) -> Vec<SpannedString> {
        let mut out = Vec::new();
        for s in list {
            let Some((range, values)) = list_reference(&s.value, item) else {
                out.push(self.string(s, item));
                continue;
            };
            for value in values {
                let Some(piece) = scalar_text(&value) else {
                    self.error(
                        &s.referenced,
                        s.value.len(),
                        format!(
                            "{} lists a {}: only strings, numbers or booleans can become names and globs",
                            quote(&s.value[range.clone()]),
                            kind_of(&value)
                        ),
                        None,
                    );
                    continue;
                };
                let text = format!(
                    "{}{piece}{}",
                    &s.value[..range.start],
                    &s.value[range.end..]
                );
                out.push(self.string(&Spanned::new(text, s.referenced, s.defined), item));
            }
        }
        out
    }

    fn text(&mut self, text: Option<&str>, item: Option<&Item>, at: &Location) -> Option<String> {
        let text = text?;
        match substitute(text, item) {
            Ok(value) => Some(value),
            Err((message, help)) => {
                self.error(at, 1, message, help);
                Some(text.to_string())
            }
        }
    }

    fn json(&mut self, value: &Value, item: Option<&Item>, at: &Location) -> Value {
        match value {
            Value::String(s) => match whole_reference(s) {
                Some(expr) => match lookup(expr, item) {
                    Ok(v) => v,
                    Err((message, help)) => {
                        self.error(at, 1, message, help);
                        value.clone()
                    }
                },
                None => Value::String(self.text(Some(s), item, at).unwrap_or_default()),
            },
            Value::Array(list) => {
                let mut out = Vec::new();
                for v in list {
                    let spliced = matches!(v, Value::String(s) if whole_reference(s).is_some());
                    match self.json(v, item, at) {
                        Value::Array(inner) if spliced => out.extend(inner),
                        other => out.push(other),
                    }
                }
                Value::Array(out)
            }
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| {
                        let key = self.text(Some(k), item, at).unwrap_or_default();
                        (key, self.json(v, item, at))
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Why a key cannot be part of an expanded name, if it cannot.
fn key_problem(key: &str) -> Option<String> {
    key.split('/').find_map(|part| {
        super::names::unsafe_name(part).map(|why| {
            if part == key {
                why.to_string()
            } else {
                format!("its part {} {}", quote(part), why.trim_start_matches("it "))
            }
        })
    })
}

type Problem = (String, Option<String>);

const REFERENCE: &str = "${each.";

/// `text` with its `${each.…}` references replaced by the item's text.
pub(crate) fn substitute(text: &str, item: Option<&Item>) -> Result<String, Problem> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(REFERENCE) {
        if rest[..i].ends_with('$') {
            // `$${each.`: a literal `${each.`.
            out.push_str(&rest[..i - 1]);
            out.push_str(REFERENCE);
            rest = &rest[i + REFERENCE.len()..];
            continue;
        }
        out.push_str(&rest[..i]);
        let inner = &rest[i + 2..];
        let Some(end) = inner.find('}') else {
            return Err((
                format!("unterminated reference in {}", quote(text)),
                Some("close it with `}`: `${each.key}`".into()),
            ));
        };
        let expr = &inner[..end];
        let value = lookup(expr, item)?;
        let Some(piece) = scalar_text(&value) else {
            return Err((
                format!(
                    "`${{{expr}}}` is a {}: only a string, number or boolean can stand inside text",
                    kind_of(&value)
                ),
                Some("in `with:`, a string that is only the reference takes its value as it is (a list, a mapping)".into()),
            ));
        };
        out.push_str(&piece);
        rest = &inner[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The first reference in `text` whose value is a list, by its byte range, with the list.
fn list_reference(text: &str, item: Option<&Item>) -> Option<(std::ops::Range<usize>, Vec<Value>)> {
    let mut from = 0;
    while let Some(i) = text[from..].find(REFERENCE).map(|i| i + from) {
        let end = text[i..].find('}').map(|e| i + e + 1)?;
        let escaped = text[..i].ends_with('$');
        if !escaped && let Ok(Value::Array(values)) = lookup(&text[i + 2..end - 1], item) {
            return Some((i..end, values));
        }
        from = end;
    }
    None
}

/// `each.value.arch` when `text` is exactly `${each.value.arch}`.
fn whole_reference(text: &str) -> Option<&str> {
    let expr = text.strip_prefix("${")?.strip_suffix('}')?;
    (expr.starts_with("each.") && !expr.contains(['{', '}'])).then_some(expr)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
        Value::Null => "null",
        _ => "scalar",
    }
}

/// The value of `each.key`, `each.value` or `each.value.<field>` for `item`.
fn lookup(expr: &str, item: Option<&Item>) -> Result<Value, Problem> {
    let Some(item) = item else {
        return Err((
            format!("`${{{expr}}}` is only defined in a step or component with `for_each`"),
            Some("add `for_each:` to the definition, or remove the reference".into()),
        ));
    };
    let known = "write `${each.key}`, `${each.value}` or `${each.value.<field>}`";
    match expr.strip_prefix("each.") {
        Some("key") => Ok(Value::String(item.key.clone())),
        Some("value") => Ok(item.value.clone()),
        Some(path) => {
            let Some(field) = path.strip_prefix("value.") else {
                return Err((
                    format!("unknown reference `${{{expr}}}`"),
                    Some(known.into()),
                ));
            };
            match &item.value {
                Value::Object(fields) => fields.get(field).cloned().ok_or_else(|| {
                    let names: Vec<String> = fields.keys().cloned().collect();
                    (
                        format!(
                            "`${{{expr}}}`: the `for_each` item has no field {}",
                            quote(field)
                        ),
                        Some(super::suggest(field, names.iter(), "fields")),
                    )
                }),
                _ => Err((
                    format!("`${{{expr}}}`: the `for_each` items are strings, without fields"),
                    Some("write `${each.value}` (or `${each.key}`, the same for a string)".into()),
                )),
            }
        }
        None => Err((
            format!("unknown reference `${{{expr}}}`"),
            Some(known.into()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use serde_saphyr::Location;

    use super::{Item, substitute};

    fn item(value: serde_json::Value) -> Item {
        Item {
            key: "gcc-14/arm64".into(),
            value,
            at: Location::UNKNOWN,
        }
    }

    #[test]
    fn references_in_text() {
        let it = item(json!({"compiler": "gcc-14", "arch": "arm64", "n": 3, "f": ["a"]}));
        let ok = |t: &str| substitute(t, Some(&it)).expect(t);
        assert_eq!(ok("${each.key}"), "gcc-14/arm64");
        assert_eq!(
            ok("x-${each.value.compiler}-${each.value.arch}.j2"),
            "x-gcc-14-arm64.j2"
        );
        assert_eq!(ok("n=${each.value.n}"), "n=3");
        assert_eq!(
            ok("$${each.key} ${repos.core.sha} $$"),
            "${each.key} ${repos.core.sha} $$"
        );
        assert_eq!(ok("no references"), "no references");
        let err = |t: &str| substitute(t, Some(&it)).expect_err(t).0;
        assert!(err("${each.value.f}").contains("is a list"));
        assert!(err("${each.value}").contains("is a mapping"));
        assert!(err("${each.item}").contains("unknown reference"));
        assert!(err("${each.key").contains("unterminated"));
        assert!(substitute("${each.key}", None).is_err());
        let plain = item(json!("arm64"));
        assert_eq!(
            substitute("${each.value}", Some(&plain)).expect("ok"),
            "arm64"
        );
    }
}
