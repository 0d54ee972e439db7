//! The one retry policy of every outgoing call (GitHub, the KernelCI API, chat webhooks):
//! exponential backoff with jitter, from a quarter second, at most [`MAX_DELAY`] between two
//! attempts and [`MAX_RETRIES`] retries. Each client decides which failures may be retried
//! (only what cannot do a thing twice) and bounds the whole by its `timeouts.*` setting.

use std::time::Duration;

use backon::ExponentialBuilder;

/// The first retry comes after about this long; each next one waits twice as long.
pub const MIN_DELAY: Duration = Duration::from_millis(250);
/// The longest wait between two attempts (a server's `Retry-After` may ask for more).
pub const MAX_DELAY: Duration = Duration::from_secs(4);
/// At most this many retries of failed attempts (waits a server asked for are not counted).
pub const MAX_RETRIES: usize = 3;

/// The backoff of every outgoing call.
pub fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_max_times(MAX_RETRIES)
}
