//! `POST /webhook`: refuse a `Content-Length` over the limit (413) and a missing or malformed
//! signature header (401) before reading any of the body; read at most
//! [`MAX_BODY_READS`] bodies at once, each within [`BODY_TIMEOUT`], hashing them as they come
//! and keeping at most [`IN_MEMORY`] bytes of each in memory (the rest in an anonymous temp
//! file), so unsigned deliveries cost little memory; then check the signature (401, nothing
//! touched), ignore events that are not acted on (`ping` is answered, not queued) and
//! repeated deliveries, and write accepted events to the durable [`Queue`] in the state
//! directory before replying, so a restart loses nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedSender;

pub use super::deliveries::Deliveries;
use super::metrics::Metrics;
pub use super::queue::{Entry, Pushed, Queue};

use super::webhook::{Event, parse_event};

mod body;

/// At most this many webhook bodies are read at once; the next waits for one of them.
pub const MAX_BODY_READS: usize = 8;
/// A body must arrive within this (GitHub sends at most 25 MB, at once).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A delivery waits at most this long for its turn to be read, then gets 503.
pub const READ_WAIT: Duration = Duration::from_secs(20);
/// Bytes of a body kept in memory while it is read and not yet verified.
pub const IN_MEMORY: usize = 256 * 1024;

/// Whether an event is acted on.
pub type ActsOn = Box<dyn Fn(&Event) -> bool + Send + Sync>;

/// What the webhook handler needs: the secret, the queue, and who to tell.
pub struct App {
    pub secret: Vec<u8>,
    pub queue: Deliveries,
    pub metrics: Arc<Metrics>,
    /// Gets every queued entry once it is on disk (the `serve` worker).
    pub sink: Option<UnboundedSender<Entry>>,
    /// Whether an event is acted on; others are answered and not queued (default: all).
    pub acts_on: Option<ActsOn>,
}

/// The handler's state: the app and the body limits.
struct Endpoint {
    app: Arc<App>,
    max_body: usize,
    reads: Semaphore,
}

/// The webhook router; bodies over `max_body` bytes are refused with 413.
pub fn router(secret: Vec<u8>, queue: Queue, max_body: usize) -> axum::Router {
    webhook_router(
        Arc::new(App {
            secret,
            queue: queue.into(),
            metrics: Default::default(),
            sink: None,
            acts_on: None,
        }),
        max_body,
    )
}

/// [`router`] with the caller's metrics and sink.
pub fn webhook_router(app: Arc<App>, max_body: usize) -> axum::Router {
    axum::Router::new()
        .route("/webhook", post(webhook))
        .with_state(Arc::new(Endpoint {
            app,
            max_body,
            reads: Semaphore::new(MAX_BODY_READS),
        }))
}

async fn webhook(State(ep): State<Arc<Endpoint>>, request: Request) -> (StatusCode, String) {
    let (parts, body) = request.into_parts();
    let (outcome, status, text) = receive(&ep, &parts.headers, body).await;
    ep.app.metrics.webhook(outcome);
    (status, text)
}

type Reply = (&'static str, StatusCode, String);

fn unauthorized() -> Reply {
    (
        "unauthorized",
        StatusCode::UNAUTHORIZED,
        "bad or missing X-Hub-Signature-256\n".into(),
    )
}

/// Check what can be checked before the body, then read it (bounded) and verify it.
async fn receive(ep: &Endpoint, headers: &HeaderMap, body: Body) -> Reply {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let too_large = || {
        (
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes\n", ep.max_body),
        )
    };
    match header("content-length").map(|v| v.trim().parse::<u64>()) {
        Some(Ok(n)) if n > ep.max_body as u64 => return too_large(),
        Some(Err(_)) => {
            return (
                "malformed",
                StatusCode::BAD_REQUEST,
                "bad Content-Length\n".into(),
            );
        }
        _ => {}
    }
    let Some(signature) = body::signature(header("x-hub-signature-256")) else {
        return unauthorized();
    };
    let Ok(Ok(turn)) = tokio::time::timeout(READ_WAIT, ep.reads.acquire()).await else {
        return (
            "busy",
            StatusCode::SERVICE_UNAVAILABLE,
            "too many deliveries are being read; try again\n".into(),
        );
    };
    let read =
        tokio::time::timeout(BODY_TIMEOUT, body::read(body, &ep.app.secret, ep.max_body)).await;
    let spool = match read {
        Err(_) => {
            return (
                "timeout",
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {BODY_TIMEOUT:?}\n"),
            );
        }
        Ok(Err(body::ReadError::TooLarge)) => return too_large(),
        Ok(Err(body::ReadError::Broken(e))) => {
            return ("malformed", StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
        Ok(Ok(spool)) => spool,
    };
    if !spool.signed_with(&signature) {
        return unauthorized();
    }
    drop(turn);
    match spool.into_bytes().await {
        Ok(bytes) => accept(&ep.app, headers, &bytes).await,
        Err(e) => (
            "error",
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the body back: {e}\n"),
        ),
    }
}

/// A verified delivery: queue it if it is acted on.
async fn accept(app: &App, headers: &HeaderMap, body: &[u8]) -> Reply {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
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
    match parse_event(event, body) {
        Err(e) => ("malformed", StatusCode::BAD_REQUEST, format!("{e}\n")),
        Ok(Some(Event::Ping)) => ("ping", StatusCode::OK, "pong\n".into()),
        Ok(Some(payload)) if app.acts_on.as_ref().is_some_and(|f| !f(&payload)) => (
            "ignored",
            StatusCode::ACCEPTED,
            format!("ignored: `{event}` (nothing to do)\n"),
        ),
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
                Err(e) => {
                    // The cause (a path, the database's address) is for the server log.
                    tracing::error!("cannot queue delivery {delivery}: {e}");
                    (
                        "error",
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot queue the event; the server log has the cause\n".into(),
                    )
                }
            }
        }
    }
}
