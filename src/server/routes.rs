//! The HTTP side of `serve`, on one listener: `POST /webhook` ([`super::endpoint`]),
//! the status pages ([`super::dashboard`]: `/`, `/status`, `/runs`, `/events`), `GET /metrics`
//! (Prometheus) and `GET /healthz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::dashboard;
use super::endpoint::{App, webhook_router};
use super::hub::Hub;
use super::metrics;

/// Every route of the service.
pub(super) fn router(hub: Arc<Hub>, webhook: Arc<App>) -> axum::Router {
    webhook_router(webhook, hub.config.file.server.max_body)
        .merge(
            axum::Router::new()
                .route("/metrics", get(metrics_text))
                .route("/healthz", get(|| async { "ok\n" }))
                .with_state(hub.clone()),
        )
        .merge(dashboard::router(hub))
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
