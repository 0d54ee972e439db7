//! `POST /webhook` on 127.0.0.1 with the real payloads, signed as GitHub signs them.

mod common;

use common::post_webhook as post;
use kcideploy::server::endpoint::{Queue, router};
use kcideploy::server::webhook::sign;

const SECRET: &[u8] = b"webhook-secret";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/github-webhooks/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

#[test]
fn signed_events_are_queued_before_the_reply_and_everything_else_is_refused_or_ignored() {
    let dir = tempfile::tempdir().expect("dir");
    let queue = Queue::open(dir.path()).expect("queue");
    let url = common::serve(router(SECRET.to_vec(), queue.clone(), 64 * 1024));
    let body = fixture("pull_request.opened");

    // No or a wrong signature: 401, nothing queued.
    assert_eq!(post(&url, "pull_request", "d-1", &body, None).0, 401);
    assert_eq!(
        post(
            &url,
            "pull_request",
            "d-1",
            &body,
            Some(sign(b"other", &body))
        )
        .0,
        401
    );
    assert!(queue.pending().is_empty());

    // Signed: 202 and on disk by the time the reply comes.
    let (status, text) = post(
        &url,
        "pull_request",
        "d-1",
        &body,
        Some(sign(SECRET, &body)),
    );
    assert_eq!(status, 202, "{text}");
    let pending = queue.pending();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].delivery.as_str(), pending[0].event.as_str()),
        ("d-1", "pull_request")
    );
    assert!(matches!(
        pending[0].payload,
        kcideploy::server::webhook::Event::PullRequest { number: 2, .. }
    ));

    // The same delivery again: ignored, not queued twice.
    let (status, text) = post(
        &url,
        "pull_request",
        "d-1",
        &body,
        Some(sign(SECRET, &body)),
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("already received"), "{text}");
    assert_eq!(queue.pending().len(), 1);

    // Unknown events: 202 ignored. Too large: 413.
    let star = br#"{"action": "created"}"#;
    let (status, text) = post(&url, "star", "d-2", star, Some(sign(SECRET, star)));
    assert_eq!((status, text.trim()), (202, "ignored: `star`"));
    let big = vec![b' '; 100 * 1024];
    assert_eq!(
        post(&url, "push", "d-3", &big, Some(sign(SECRET, &big))).0,
        413
    );
    assert_eq!(queue.pending().len(), 1);

    // A restart loses nothing: a new queue on the same directory sees the entry; ack removes it.
    drop(queue);
    let reopened = Queue::open(dir.path()).expect("queue");
    let pending = reopened.pending();
    assert_eq!(pending.len(), 1);
    reopened.ack(&pending[0].delivery).expect("ack");
    assert!(reopened.pending().is_empty());
    assert!(
        reopened.seen("d-1"),
        "delivery ids are remembered across restarts"
    );
}
