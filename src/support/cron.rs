//! `policy.schedule`: cron expressions in UTC (jiff-cron), five fields as in crontab or six
//! with seconds first.

use std::str::FromStr;

use jiff::Timestamp;
use jiff_cron::jiff as jiff02;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Cron(jiff_cron::Schedule);

impl Cron {
    /// Parse; a five-field crontab line gets a `0` seconds field.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let fields = text.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {}", text.trim()),
            6 | 7 => text.trim().to_string(),
            n => {
                return Err(format!(
                    "cron expression `{text}` has {n} fields: write five (minute hour day-of-month month day-of-week), e.g. `0 */6 * * *`"
                ));
            }
        };
        jiff_cron::Schedule::from_str(&full)
            .map(Cron)
            .map_err(|e| format!("invalid cron expression `{text}`: {e}"))
    }

    /// The first time strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let t = jiff02::Timestamp::from_second(after.as_second()).ok()?;
        let next = self.0.after(t.to_zoned(jiff02::tz::TimeZone::UTC)).next()?;
        Timestamp::from_second(next.timestamp().as_second()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_fields() {
        let at: Timestamp = "2026-11-24T08:10:00Z".parse().expect("time");
        let every6h = Cron::parse("0 */6 * * *").expect("parses");
        assert_eq!(
            every6h.next_after(at).map(|t| t.to_string()),
            Some("2026-11-24T12:00:00Z".into())
        );
        let weekdays = Cron::parse("30 2 * * Mon-Fri").expect("parses");
        // 2026-11-28 is a Saturday: the next weekday run is Monday the 30th.
        let sat: Timestamp = "2026-11-27T03:00:00Z".parse().expect("time");
        assert_eq!(
            weekdays.next_after(sat).map(|t| t.to_string()),
            Some("2026-11-30T02:30:00Z".into())
        );
        let secs = Cron::parse("15 0 * * * *").expect("six fields");
        assert_eq!(
            secs.next_after(at).map(|t| t.to_string()),
            Some("2026-11-24T09:00:15Z".into())
        );
        assert!(Cron::parse("every day").is_err());
        assert!(Cron::parse("61 * * * *").is_err());
    }
}
