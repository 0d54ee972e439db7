//! The HTTP side of `serve`, on one listener: `POST /webhook` ([`super::endpoint`]),
//! `GET /` (the status page), `GET /status` (JSON, or HTML for browsers), `GET /metrics`
//! (Prometheus) and `GET /healthz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::endpoint::{App, webhook_router};
use super::hub::Hub;
use super::metrics;
use super::status;

/// Every route of the service.
pub(super) fn router(hub: Arc<Hub>, webhook: Arc<App>) -> axum::Router {
    webhook_router(webhook, hub.config.file.server.max_body).merge(
        axum::Router::new()
            .route("/", get(status_html))
            .route("/status", get(status_json))
            .route("/metrics", get(metrics_text))
            .route("/healthz", get(|| async { "ok\n" }))
            .with_state(hub),
    )
}

async fn status_json(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return status_html(State(hub)).await.into_response();
    }
    let status = hub.status().clone();
    match serde_json::to_string_pretty(&status) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            text + "\n",
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn status_html(State(hub): State<Arc<Hub>>) -> Html<String> {
    let s = hub.status().clone();
    Html(status::html(&s))
}

async fn metrics_text(State(hub): State<Arc<Hub>>) -> Response {
    hub.metrics
        .queue_flushes
        .set(hub.queue.flushes().try_into().unwrap_or(i64::MAX));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        hub.metrics.encode(),
    )
        .into_response()
}
