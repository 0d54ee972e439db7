//! `pending.require_checks`: the PR's own CI a change must pass before it is merged.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `all`, or the check-run names and commit-status contexts that must pass on a PR head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequireChecks {
    /// Every check run and commit status on the head (kcideploy's own status excepted).
    All,
    /// These check-run names or status contexts, each present and passed.
    Names(Vec<String>),
}

impl RequireChecks {
    /// Whether `name` must pass.
    pub fn requires(&self, name: &str) -> bool {
        match self {
            RequireChecks::All => true,
            RequireChecks::Names(names) => names.iter().any(|n| n == name),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Word(String),
    Names(Vec<String>),
}

impl<'de> Deserialize<'de> for RequireChecks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Raw::deserialize(d) {
            Ok(Raw::Word(w)) if w == "all" => Ok(RequireChecks::All),
            Ok(Raw::Names(names)) if names.iter().all(|n| !n.trim().is_empty()) => {
                Ok(RequireChecks::Names(names))
            }
            _ => Err(serde::de::Error::custom(
                "expected `all` or a list of check-run names and status contexts (not empty)",
            )),
        }
    }
}

impl Serialize for RequireChecks {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RequireChecks::All => s.serialize_str("all"),
            RequireChecks::Names(names) => names.serialize(s),
        }
    }
}

/// The schema of [`RequireChecks`]: the word `all` or a list of names.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(super) enum RequireChecksSchema {
    All(AllWord),
    Names(Vec<String>),
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub(super) enum AllWord {
    All,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_or_names() {
        let all: RequireChecks = serde_json::from_str(r#""all""#).expect("all");
        assert_eq!(all, RequireChecks::All);
        assert!(all.requires("anything"));
        let names: RequireChecks = serde_json::from_str(r#"["build", "e2e"]"#).expect("names");
        assert!(names.requires("e2e") && !names.requires("lint"));
        assert_eq!(
            serde_json::to_string(&names).expect("json"),
            r#"["build","e2e"]"#
        );
        assert_eq!(serde_json::to_string(&all).expect("json"), r#""all""#);
        for bad in [r#""every""#, r#"[""]"#, "3"] {
            let err = serde_json::from_str::<RequireChecks>(bad).unwrap_err();
            assert!(err.to_string().contains("expected `all`"), "{bad}: {err}");
        }
    }
}
