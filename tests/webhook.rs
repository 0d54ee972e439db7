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

/// The test vector of GitHub's "Validating webhook deliveries": the server accepts GitHub's
/// own signature, and refuses it with one bit of the payload or the secret changed.
#[test]
fn github_documented_test_vector_is_accepted() {
    const DOC_SECRET: &[u8] = b"It's a Secret to Everybody";
    const DOC_PAYLOAD: &[u8] = b"Hello, World!";
    const DOC_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    use kcideploy::server::webhook::signature_valid;
    assert!(signature_valid(
        DOC_SECRET,
        DOC_PAYLOAD,
        Some(DOC_SIGNATURE)
    ));
    assert!(!signature_valid(
        DOC_SECRET,
        b"Hello, World?",
        Some(DOC_SIGNATURE)
    ));
    assert!(!signature_valid(
        b"It's a secret to everybody",
        DOC_PAYLOAD,
        Some(DOC_SIGNATURE)
    ));
    assert_eq!(sign(DOC_SECRET, DOC_PAYLOAD), DOC_SIGNATURE);

    // Through the endpoint: an event the server does not handle, so a valid signature gets
    // 202 "ignored" and an invalid one 401.
    let dir = tempfile::tempdir().expect("dir");
    let queue = Queue::open(dir.path()).expect("queue");
    let url = common::serve(router(DOC_SECRET.to_vec(), queue.clone(), 64 * 1024));
    let (status, text) = post(&url, "star", "v-1", DOC_PAYLOAD, Some(DOC_SIGNATURE.into()));
    assert_eq!((status, text.trim()), (202, "ignored: `star`"));
    let (status, _) = post(
        &url,
        "star",
        "v-3",
        b"Hello, World?",
        Some(DOC_SIGNATURE.into()),
    );
    assert_eq!(status, 401);
}

/// A real payload signed by another implementation (OpenSSL's HMAC) is accepted and queued.
#[test]
fn a_fixture_signed_by_openssl_is_accepted() {
    let body = fixture("pull_request.opened");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("body.json");
    std::fs::write(&file, &body).expect("body");
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac"])
        .arg(std::str::from_utf8(SECRET).expect("secret"))
        .arg(&file)
        .output()
        .expect("openssl (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `HMAC-SHA2-256(FILE)= <hex>`, the label depending on the OpenSSL version.
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let hex = stdout.split_whitespace().last().expect("digest");
    assert_eq!(hex.len(), 64, "{stdout}");
    let queue = Queue::open(dir.path().join("queue").as_path()).expect("queue");
    let url = common::serve(router(SECRET.to_vec(), queue.clone(), 64 * 1024));
    let (status, text) = post(
        &url,
        "pull_request",
        "o-1",
        &body,
        Some(format!("sha256={hex}")),
    );
    assert_eq!(status, 202, "{text}");
    assert_eq!(queue.pending().len(), 1);
}
