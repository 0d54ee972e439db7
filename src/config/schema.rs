//! The plan file's JSON schema (draft-07, for yaml-language-server).

use schemars::generate::SchemaSettings;

use crate::config::PlanFile;

/// The schema as pretty JSON, as committed in `schemas/plan.schema.json`.
pub fn plan_schema_json() -> String {
    let generator = SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<PlanFile>();
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

/// The schema of a file that plan files include (`include:`): shared components and lists.
pub fn include_schema_json() -> String {
    let generator = SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<crate::config::IncludedFile>();
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

/// The plan file reference as a Markdown table, generated from the schema: every field with
/// its type, default and description. The README embeds it between markers; a test fails when
/// it is stale (`kcideploy schema --reference` prints it).
pub fn reference_markdown() -> String {
    let schema: serde_json::Value = serde_json::from_str(&plan_schema_json()).unwrap_or_default();
    let mut rows = Vec::new();
    walk(&schema, &schema, "", &mut rows, 0);
    let mut out = String::from("| field | type | default | meaning |\n|---|---|---|---|\n");
    for (path, ty, default, doc) in rows {
        out.push_str(&format!("| `{path}` | {ty} | {default} | {doc} |\n"));
    }
    out
}

type Row = (String, String, String, String);

pub(crate) fn resolve<'a>(
    root: &'a serde_json::Value,
    node: &'a serde_json::Value,
) -> &'a serde_json::Value {
    let target = node
        .get("$ref")
        .or_else(|| {
            node.get("allOf")
                .and_then(|a| a.get(0))
                .and_then(|a| a.get("$ref"))
        })
        .and_then(|r| r.as_str());
    match target.and_then(|r| r.strip_prefix("#/definitions/")) {
        Some(name) => resolve(root, &root["definitions"][name]),
        None => node,
    }
}

fn type_of(root: &serde_json::Value, node: &serde_json::Value) -> String {
    let n = resolve(root, node);
    if let Some(values) = n.get("enum").and_then(|e| e.as_array()) {
        return values
            .iter()
            .filter_map(|v| v.as_str())
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    if let Some(one_of) = n
        .get("oneOf")
        .or_else(|| n.get("anyOf"))
        .and_then(|o| o.as_array())
    {
        let kinds: Vec<String> = one_of
            .iter()
            .filter(|v| v.get("type").and_then(|t| t.as_str()) != Some("null"))
            .map(|v| {
                if let Some(t) = v.get("title").and_then(|t| t.as_str()) {
                    t.to_string()
                } else if let Some(c) = v.get("const").and_then(|c| c.as_str()) {
                    format!("`{c}`")
                } else if let Some(e) = v.get("enum").and_then(|e| e.as_array()) {
                    e.iter()
                        .filter_map(|x| x.as_str())
                        .map(|x| format!("`{x}`"))
                        .collect::<Vec<_>>()
                        .join(" \\| ")
                } else {
                    type_of(root, v)
                }
            })
            .collect();
        return kinds.join(" \\| ");
    }
    match &n["type"] {
        serde_json::Value::String(t) if t == "array" => {
            format!("list of {}", type_of(root, &n["items"]))
        }
        serde_json::Value::String(t) if t == "object" && n.get("properties").is_none() => {
            "map".into()
        }
        serde_json::Value::String(t) if t == "object" => "mapping".into(),
        serde_json::Value::String(t) if t == "string" && n.get("pattern").is_some() => {
            "duration".into()
        }
        serde_json::Value::String(t) => t.clone(),
        serde_json::Value::Array(ts) => ts
            .iter()
            .filter_map(|t| t.as_str())
            .filter(|t| *t != "null")
            .map(|t| match t {
                "array" => format!("list of {}", type_of(root, &n["items"])),
                t => t.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" \\| "),
        _ => "any".into(),
    }
}

/// The variant of an `anyOf`/`oneOf` that is a mapping with fields, if any.
pub(crate) fn mapping_variant<'a>(
    root: &'a serde_json::Value,
    node: &'a serde_json::Value,
) -> Option<&'a serde_json::Value> {
    node.get("anyOf")
        .or_else(|| node.get("oneOf"))
        .and_then(|v| v.as_array())?
        .iter()
        .find(|v| resolve(root, v).get("properties").is_some())
}

fn doc(node: &serde_json::Value) -> String {
    node.get("description")
        .and_then(|d| d.as_str())
        .unwrap_or("")
        .replace('\n', " ")
        .replace('|', "\\|")
}

fn walk(
    root: &serde_json::Value,
    node: &serde_json::Value,
    prefix: &str,
    rows: &mut Vec<Row>,
    depth: usize,
) {
    let n = resolve(root, node);
    let Some(props) = n.get("properties").and_then(|p| p.as_object()) else {
        return;
    };
    let required: Vec<&str> = n["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str())
        .collect();
    for (name, prop) in props {
        let path = format!("{prefix}{name}");
        let target = resolve(root, prop);
        let default = match prop.get("default") {
            _ if required.contains(&name.as_str()) => "required".to_string(),
            Some(serde_json::Value::Object(_)) | None => String::new(),
            Some(v) => format!("`{v}`"),
        };
        let description = if doc(prop).is_empty() {
            doc(target)
        } else {
            doc(prop)
        };
        rows.push((path.clone(), type_of(root, prop), default, description));
        if depth > 4 {
            continue;
        }
        if target.get("properties").is_some() {
            walk(root, prop, &format!("{path}."), rows, depth + 1);
        } else if let Some(mapping) = mapping_variant(root, target) {
            // `notify: false` or the full mapping: document the mapping's fields.
            walk(root, mapping, &format!("{path}."), rows, depth + 1);
        } else if let Some(inner) = target.get("additionalProperties").filter(|a| a.is_object()) {
            walk(root, inner, &format!("{path}.<name>."), rows, depth + 1);
        } else if let Some(items) = target.get("items") {
            walk(root, items, &format!("{path}[]."), rows, depth + 1);
        }
    }
}
