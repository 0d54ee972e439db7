//! `POST /webhook`: check the signature (401, nothing touched), limit the body (413), ignore
//! unknown events (202) and repeated deliveries, and write accepted events to the durable
//! [`Queue`] in the state directory before replying, so a restart loses nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Metrics;
pub use super::queue::{Entry, Pushed, Queue};

use super::webhook::{parse_event, signature_valid};

/// What the webhook handler needs: the secret, the queue, and who to tell.
pub struct App {
    pub secret: Vec<u8>,
    pub queue: Queue,
    pub metrics: Arc<Metrics>,
    /// Gets every queued entry once it is on disk (the `serve` worker).
    pub sink: Option<UnboundedSender<Entry>>,
}

/// The webhook router; bodies over `max_body` bytes are refused with 413.
pub fn router(secret: Vec<u8>, queue: Queue, max_body: usize) -> axum::Router {
    webhook_router(
        Arc::new(App {
            secret,
            queue,
            metrics: Default::default(),
            sink: None,
        }),
        max_body,
    )
}

/// [`router`] with the caller's metrics and sink.
pub fn webhook_router(app: Arc<App>, max_body: usize) -> axum::Router {
    axum::Router::new()
        .route("/webhook", post(webhook))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}

async fn webhook(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (StatusCode, String) {
    let (outcome, status, text) = receive(&app, &headers, body).await;
    app.metrics.webhook(outcome);
    (status, text)
}

async fn receive(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (&'static str, StatusCode, String) {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ("too_large", e.status(), format!("{}\n", e.body_text()));
        }
        Err(e) => return ("malformed", e.status(), format!("{}\n", e.body_text())),
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !signature_valid(&app.secret, &body, header("x-hub-signature-256")) {
        return (
            "unauthorized",
            StatusCode::UNAUTHORIZED,
            "bad or missing X-Hub-Signature-256\n".into(),
        );
    }
    let (Some(event), Some(delivery)) = (header("x-github-event"), header("x-github-delivery"))
    else {
        return (
            "malformed",
            StatusCode::BAD_REQUEST,
            "missing X-GitHub-Event or X-GitHub-Delivery\n".into(),
        );
    };
    let duplicate = || {
        (
            "duplicate",
            StatusCode::OK,
            format!("delivery {delivery} already received\n"),
        )
    };
    if app.queue.seen(delivery) {
        return duplicate();
    }
    match parse_event(event, &body) {
        Err(e) => ("malformed", StatusCode::BAD_REQUEST, format!("{e}\n")),
        Ok(None) => (
            "ignored",
            StatusCode::ACCEPTED,
            format!("ignored: `{event}`\n"),
        ),
        Ok(Some(payload)) => {
            let entry = Entry {
                delivery: delivery.to_string(),
                event: event.to_string(),
                received: jiff::Timestamp::now(),
                payload,
                replied: false,
            };
            match app.queue.push(entry.clone()).await {
                Ok(Pushed::Queued) => {
                    if let Some(sink) = &app.sink {
                        let _ = sink.send(entry);
                    }
                    (
                        "queued",
                        StatusCode::ACCEPTED,
                        format!("queued `{event}` {delivery}\n"),
                    )
                }
                Ok(Pushed::Duplicate) => duplicate(),
                Err(e) => (
                    "error",
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot queue the event: {e}\n"),
                ),
            }
        }
    }
}
