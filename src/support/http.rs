//! The one HTTP client setup: rustls with ring, kcideploy's user agent, a timeout.

use std::time::Duration;

/// No host takes longer than this to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP client (rustls with ring) with kcideploy's user agent and an optional timeout.
pub fn http_client(timeout: Option<Duration>) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("kcideploy/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    builder
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))
}
