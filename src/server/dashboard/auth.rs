//! The optional token of the status pages (`server.status_token_env`): given once as
//! `?token=…` (answered with a cookie and a redirect to the same page without it), then sent
//! as that cookie, or as `Authorization: Bearer …` by scripts.

use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::server::hub::Hub;

const COOKIE: &str = "kcideploy_status";

/// Equal without telling, by its timing, how much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn from_query(uri: &Uri) -> Option<&str> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
}

fn from_headers(headers: &HeaderMap) -> Vec<&str> {
    let mut out = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if let Ok(v) = v.to_str() {
            out.extend(
                v.split(';')
                    .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('=')),
            );
        }
    }
    if let Some(b) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        out.push(b.trim());
    }
    out
}

/// `None` when the page may be shown; else the answer to send instead (401, or the
/// redirect that sets the cookie).
pub(super) fn refusal(hub: &Hub, headers: &HeaderMap, uri: &Uri) -> Option<Response> {
    let token = hub.status_token.as_ref()?;
    if from_headers(headers).iter().any(|t| same(t, token)) {
        return None;
    }
    if let Some(given) = from_query(uri).filter(|t| same(t, token)) {
        let cookie = format!("{COOKIE}={given}; Path=/; HttpOnly; SameSite=Strict");
        return Some(
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, uri.path().to_string()),
                    (header::SET_COOKIE, cookie),
                ],
            )
                .into_response(),
        );
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "this page needs the status token: open it once with ?token=…\n",
        )
            .into_response(),
    )
}
