//! Closed sets of values state records, each serialized as the same lowercase string that
//! earlier releases wrote (`"success"`, `"blamed"`, ...).

use serde::{Deserialize, Serialize};

/// An enum serialized as fixed strings, comparable with them (`result == "success"`).
macro_rules! string_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// The string state holds.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

string_enum! {
    /// How a step ended.
    pub enum StepResult {
        Success => "success",
        Failed => "failed",
        /// Not run: a step it depends on failed.
        Skipped => "skipped",
        /// Not run: it finished before with the same inputs.
        DoneBefore => "done_before",
        /// Stopped, or never started, because the run was cancelled (or not approved).
        Cancelled => "cancelled",
        /// Not run: it runs only when a step of its `when_failed` fails, and none did.
        NotNeeded => "not_needed",
    }
}

string_enum! {
    /// How a run is getting on, or how it ended.
    pub enum RunResult {
        Running => "running",
        Success => "success",
        Failed => "failed",
        Cancelled => "cancelled",
        /// Left unfinished and replaced by a run with other inputs.
        Abandoned => "abandoned",
        /// Not a run: `state adopt` recorded what already ran, running no step.
        Adopted => "adopted",
    }
}

string_enum! {
    /// What one bisection round found.
    pub enum RoundResult {
        /// Every step of the subgraph succeeded.
        Pass => "pass",
        /// A step of the subgraph failed.
        Fail => "fail",
        /// The subset did not merge.
        Conflict => "conflict",
        /// Not conclusive: a step was not approved, or the bisection was cancelled.
        Cancelled => "cancelled",
    }
}

string_enum! {
    /// What a bisection concluded.
    pub enum VerdictKind {
        Blamed => "blamed",
        Pair => "pair",
        Flake => "flake",
        Infrastructure => "infrastructure",
        Undecided => "undecided",
    }
}

string_enum! {
    /// Why state leaves a change out.
    pub enum ExclusionCause {
        /// Found to break a deploy; left out until its head moves.
        Blamed => "blamed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_as_the_strings_earlier_releases_wrote() {
        let json =
            serde_json::to_string(&[StepResult::DoneBefore, StepResult::Success]).expect("json");
        assert_eq!(json, r#"["done_before","success"]"#);
        let back: RunResult = serde_json::from_str(r#""abandoned""#).expect("parse");
        assert_eq!(back, RunResult::Abandoned);
        assert!(serde_json::from_str::<RoundResult>(r#""maybe""#).is_err());
        assert_eq!(VerdictKind::Pair, "pair");
        assert_eq!(format!("{:<6}|", ExclusionCause::Blamed), "blamed|");
    }
}
