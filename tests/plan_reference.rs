//! The plan file reference in the README documents every field of the schema.

use std::collections::BTreeSet;

use kcideploy::config::schema::{plan_schema_json, reference_markdown};

/// Every field name of every mapping in the schema (`NotifyConfig.logs_url`, ...).
fn schema_fields() -> BTreeSet<(String, String)> {
    let schema: serde_json::Value = serde_json::from_str(&plan_schema_json()).expect("json");
    let mut out = BTreeSet::new();
    let top = std::iter::once(("PlanFile".to_string(), &schema));
    let defs = schema["definitions"].as_object().expect("definitions");
    for (name, def) in top.chain(defs.iter().map(|(k, v)| (k.clone(), v))) {
        for field in def["properties"].as_object().into_iter().flatten() {
            out.insert((name.clone(), field.0.clone()));
        }
    }
    out
}

#[test]
fn reference_has_a_row_for_every_field_of_the_schema() {
    let reference = reference_markdown();
    let rows: Vec<&str> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let missing: Vec<String> = schema_fields()
        .into_iter()
        .filter(|(_, field)| {
            !rows
                .iter()
                .any(|r| *r == field || r.ends_with(&format!(".{field}")))
        })
        .map(|(def, field)| format!("{def}.{field}"))
        .collect();
    assert!(missing.is_empty(), "not in the reference: {missing:?}");
    for row in ["notify.enabled", "notify.logs_url", "notify.context"] {
        assert!(rows.contains(&row), "{row} missing:\n{reference}");
    }
}

#[test]
fn reference_rows_have_a_type_and_a_description() {
    for line in reference_markdown().lines().skip(2) {
        let cells: Vec<&str> = line.split(" | ").collect();
        assert!(cells.len() >= 4, "{line}");
        assert!(!cells[1].trim().is_empty(), "no type: {line}");
        assert!(!cells[1].contains("array"), "untyped list: {line}");
        assert!(
            !cells[3].trim_end_matches(" |").is_empty(),
            "no description: {line}"
        );
    }
}
