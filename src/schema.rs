//! The plan file's JSON schema (draft-07, for yaml-language-server).

use schemars::generate::SchemaSettings;

use crate::config::PlanFile;

/// The schema as pretty JSON, as committed in `schemas/plan.schema.json`.
pub fn plan_schema_json() -> String {
    let generator = SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<PlanFile>();
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}
