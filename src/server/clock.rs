//! The worker schedules with monotonic [`Instant`]s; `/status` and replies show wall-clock
//! times. These convert between the two.

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

/// Instant → wall clock.
pub(super) fn wall(at: Instant) -> Timestamp {
    let now = Instant::now();
    let ts = Timestamp::now();
    let signed = if at >= now {
        jiff::SignedDuration::try_from(at - now).unwrap_or_default()
    } else {
        -jiff::SignedDuration::try_from(now - at).unwrap_or_default()
    };
    ts.checked_add(signed).unwrap_or(ts)
}

/// Wall clock → Instant, past or future.
pub(super) fn instant(at: Timestamp) -> Instant {
    let now = Instant::now();
    let ahead = at.duration_since(Timestamp::now());
    let back = Duration::try_from(-ahead).ok();
    match (Duration::try_from(ahead), back) {
        (Ok(d), _) => now + d,
        (Err(_), Some(d)) => now.checked_sub(d).unwrap_or(now),
        _ => now,
    }
}

/// "now", "in 4m (at …)".
pub(super) fn when(at: Instant) -> String {
    let now = Instant::now();
    if at <= now + Duration::from_secs(1) {
        return "now".into();
    }
    let secs = (at - now).as_secs();
    format!(
        "in {} (at {})",
        crate::config::HumanDuration::from_secs(secs.max(1)),
        wall(at).strftime("%H:%M UTC")
    )
}
