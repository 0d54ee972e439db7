//! Human durations in the plan file: `30s`, `5m`, `6h`, `14d`, `1h 30m`.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a number and a unit (`5m`, `6h`, `14d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("empty duration: write a number and a unit, such as 5m, 6h or 14d".into());
        }
        humantime::parse_duration(trimmed)
            .map(HumanDuration)
            .map_err(|_| format!("invalid duration `{text}`: write a number and a unit, such as 30s, 5m, 6h or 14d"))
    }

    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if secs == 0 {
            return write!(f, "0s");
        }
        let mut rest = secs;
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
                if rest > 0 {
                    f.write_str(" ")?;
                }
            }
        }
        Ok(())
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        HumanDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit, such as 30s, 5m, 6h, 14d or `1h 30m`.",
            "pattern": "^\\s*[0-9]+\\s*[a-zA-Z]+(\\s*[0-9]+\\s*[a-zA-Z]+)*\\s*$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(HumanDuration::parse("5m").map(|d| d.as_secs()), Ok(300));
        assert_eq!(HumanDuration::parse("6h").map(|d| d.as_secs()), Ok(21_600));
        assert_eq!(
            HumanDuration::parse("14d").map(|d| d.as_secs()),
            Ok(1_209_600)
        );
        assert_eq!(
            HumanDuration::parse("1h 30m").map(|d| d.as_secs()),
            Ok(5_400)
        );
    }

    #[test]
    fn rejects_garbage() {
        let err = HumanDuration::parse("5 parsecs").unwrap_err();
        assert!(err.contains("invalid duration `5 parsecs`"), "{err}");
        assert!(HumanDuration::parse("").is_err());
        assert!(HumanDuration::parse("12").is_err());
    }
}
