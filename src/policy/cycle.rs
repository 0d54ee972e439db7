//! Which cycle to run. Pure: (request, policy, recorded cycle times, now).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::{Cycle, Policy};
use crate::state::CycleTimes;

/// What the user asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleRequest {
    Partial,
    Full,
    /// Ask the policy: full when the last full cycle is older than `full_cycle_interval`.
    #[default]
    Auto,
}

impl CycleRequest {
    /// The word on the command line and in plan JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CycleRequest::Partial => "partial",
            CycleRequest::Full => "full",
            CycleRequest::Auto => "auto",
        }
    }
}

impl std::fmt::Display for CycleRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Cycle> for CycleRequest {
    /// Plan again for the cycle a plan was made for.
    fn from(cycle: Cycle) -> Self {
        match cycle {
            Cycle::Partial => CycleRequest::Partial,
            Cycle::Full => CycleRequest::Full,
        }
    }
}

/// The cycle chosen and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleDecision {
    pub cycle: Cycle,
    /// What was asked for: `partial`, `full` or `auto`.
    pub requested: CycleRequest,
    pub reason: String,
}

/// The cycle to run: what was asked for, or for `auto` full when the last full cycle is
/// older than `full_cycle_interval` (or there was none).
pub fn decide(
    request: CycleRequest,
    policy: &Policy,
    times: &CycleTimes,
    now: Timestamp,
) -> CycleDecision {
    let asked = "asked for on the command line".to_string();
    let (cycle, reason) = match request {
        CycleRequest::Partial => (Cycle::Partial, asked),
        CycleRequest::Full => (Cycle::Full, asked),
        CycleRequest::Auto => {
            let interval = policy.full_cycle_interval;
            match times.last_full {
                None => (Cycle::Full, "no full cycle recorded yet".to_string()),
                Some(last) => {
                    let ago = now.as_second() - last.as_second();
                    let since = crate::support::text::age(ago);
                    if ago >= interval.as_secs() as i64 {
                        (
                            Cycle::Full,
                            format!(
                                "last full cycle {since} ago, full_cycle_interval is {interval}"
                            ),
                        )
                    } else {
                        let due = crate::support::text::age(interval.as_secs() as i64 - ago);
                        (
                            Cycle::Partial,
                            format!("last full cycle {since} ago; next one due in {due}"),
                        )
                    }
                }
            }
        }
    };
    CycleDecision {
        cycle,
        requested: request,
        reason,
    }
}

/// When the last deploy ended less than `cooldown` before `now`: the time the next one may
/// start. `None`: a deploy may start now.
pub fn cooldown_until(
    cooldown: crate::config::HumanDuration,
    last_end: Option<Timestamp>,
    now: Timestamp,
) -> Option<Timestamp> {
    let end = last_end?;
    let ready = end.as_second() + cooldown.as_secs() as i64;
    (now.as_second() < ready).then(|| Timestamp::from_second(ready).unwrap_or(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_interval() {
        let policy = Policy::default();
        let t = |s: i64| Timestamp::from_second(s).expect("ts");
        let none = CycleTimes::default();
        assert_eq!(
            decide(CycleRequest::Auto, &policy, &none, t(0)).cycle,
            Cycle::Full
        );
        let times = CycleTimes {
            last_full: Some(t(1_000_000)),
            last_partial: None,
        };
        let d = decide(CycleRequest::Auto, &policy, &times, t(1_000_000 + 5 * 3600));
        assert_eq!(d.cycle, Cycle::Partial);
        assert_eq!(d.reason, "last full cycle 5h ago; next one due in 1h");
        let d = decide(CycleRequest::Auto, &policy, &times, t(1_000_000 + 6 * 3600));
        assert_eq!(d.cycle, Cycle::Full);
        let d = decide(CycleRequest::Partial, &policy, &none, t(0));
        assert_eq!(d.cycle, Cycle::Partial);
    }

    #[test]
    fn cooldown_holds_until_it_has_passed_since_the_last_deploy() {
        let at = |s: i64| Timestamp::from_second(1_795_507_200 + s).expect("ts");
        let cooldown = crate::config::HumanDuration::from_secs(600);
        assert_eq!(
            cooldown_until(cooldown, None, at(0)),
            None,
            "never deployed"
        );
        assert_eq!(
            cooldown_until(cooldown, Some(at(0)), at(599)),
            Some(at(600))
        );
        assert_eq!(cooldown_until(cooldown, Some(at(0)), at(600)), None);
    }
}
