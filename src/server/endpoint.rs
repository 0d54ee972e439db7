//! `POST /webhook`: check the signature (401, nothing touched), limit the body (413), ignore
//! unknown events (202) and repeated deliveries, and write accepted events to a durable queue
//! in the state directory before replying, so a restart loses nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Metrics;

use super::webhook::{parse_event, signature_valid};

/// Accepted deliveries, one file each, replaced atomically; removed once handled.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
}

/// One queued delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub delivery: String,
    pub event: String,
    pub received: jiff::Timestamp,
    /// The payload as GitHub sent it.
    pub body: serde_json::Value,
    /// The bot answered this comment already (a restart does not answer twice).
    #[serde(default)]
    pub replied: bool,
}

impl Queue {
    pub fn open(dir: &Path) -> std::io::Result<Queue> {
        std::fs::create_dir_all(dir.join("pending"))?;
        std::fs::create_dir_all(dir.join("seen"))?;
        Ok(Queue {
            dir: dir.to_path_buf(),
        })
    }

    fn safe(delivery: &str) -> String {
        delivery
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(64)
            .collect()
    }

    /// Whether a delivery was received before (GitHub redelivers).
    pub fn seen(&self, delivery: &str) -> bool {
        self.dir.join("seen").join(Self::safe(delivery)).exists()
    }

    /// Write an entry durably (temp file, fsync, rename) and remember its delivery id;
    /// returns the entry's file.
    pub fn push(&self, entry: &Entry) -> std::io::Result<PathBuf> {
        let id = Self::safe(&entry.delivery);
        let name = format!("{}-{id}.json", entry.received.as_nanosecond());
        let bytes = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        let file = self.dir.join("pending").join(name);
        crate::state::write_atomic(&file, &bytes)?;
        crate::state::write_atomic(&self.dir.join("seen").join(id), b"")?;
        Ok(file)
    }

    /// The pending entries, oldest first, with their files.
    pub fn pending(&self) -> Vec<(PathBuf, Entry)> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("pending"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|p| {
                let entry = std::fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())?;
                Some((p, entry))
            })
            .collect()
    }

    /// Done with an entry.
    pub fn ack(&self, file: &Path) -> std::io::Result<()> {
        std::fs::remove_file(file)
    }

    /// Rewrite an entry in place (atomically), e.g. once the bot answered it.
    pub fn update(&self, file: &Path, entry: &Entry) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        crate::state::write_atomic(file, &bytes)
    }

    /// The queue's directory (the bot keeps approvals to record beside it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// What the webhook handler needs: the secret, the queue, and who to tell.
pub struct App {
    pub secret: Vec<u8>,
    pub queue: Queue,
    pub metrics: Arc<Metrics>,
    /// Gets every queued entry once it is on disk (the `serve` worker).
    pub sink: Option<UnboundedSender<(PathBuf, Entry)>>,
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
    let (outcome, status, text) = receive(&app, &headers, body);
    app.metrics.webhook(outcome);
    (status, text)
}

fn receive(
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
    if app.queue.seen(delivery) {
        return (
            "duplicate",
            StatusCode::OK,
            format!("delivery {delivery} already received\n"),
        );
    }
    match parse_event(event, &body) {
        Err(e) => ("malformed", StatusCode::BAD_REQUEST, format!("{e}\n")),
        Ok(None) => (
            "ignored",
            StatusCode::ACCEPTED,
            format!("ignored: `{event}`\n"),
        ),
        Ok(Some(_)) => {
            let entry = Entry {
                delivery: delivery.to_string(),
                event: event.to_string(),
                received: jiff::Timestamp::now(),
                body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                replied: false,
            };
            match app.queue.push(&entry) {
                Ok(file) => {
                    if let Some(sink) = &app.sink {
                        let _ = sink.send((file, entry));
                    }
                    (
                        "queued",
                        StatusCode::ACCEPTED,
                        format!("queued `{event}` {delivery}\n"),
                    )
                }
                Err(e) => (
                    "error",
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot queue the event: {e}\n"),
                ),
            }
        }
    }
}
