//! The one HTTP client setup: rustls with ring, kcideploy's user agent, a connect timeout
//! (each request sets its own overall limit), and the host of a URL for error messages.

use std::time::Duration;

/// An HTTP client (rustls with ring) with kcideploy's user agent that gives up connecting
/// (DNS, TCP and TLS) after `connect` (the plan file's `timeouts.connect`).
pub fn http_client(connect: Duration) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("kcideploy/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect)
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))
}

/// `host:port` of a URL (the default port of its scheme when none is written), for errors;
/// the URL itself when it has no host.
pub fn host_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            _ => url.to_string(),
        },
        Err(_) => url.to_string(),
    }
}

/// Why a request got no answer, for people: the time limit that ran out and the setting
/// that sets it (`connect` for connecting, `limit` for the whole request), or every cause of
/// the chain (a DNS failure says so: `dns error: failed to lookup address information`).
pub fn no_answer(error: &reqwest::Error, connect: Duration, limit: (Duration, &str)) -> String {
    let age = |d: Duration| crate::support::text::age(d.as_secs() as i64);
    match (error.is_timeout(), error.is_connect()) {
        (true, true) => format!(
            "timed out: not connected within {} (timeouts.connect)",
            age(connect)
        ),
        (true, false) => format!("timed out: no answer within {} ({})", age(limit.0), limit.1),
        _ => crate::support::text::error_chain(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_with_their_ports() {
        assert_eq!(host_of("https://api.github.com/x"), "api.github.com:443");
        assert_eq!(host_of("http://127.0.0.1:8080/a?b"), "127.0.0.1:8080");
        assert_eq!(host_of("not a url"), "not a url");
    }
}
