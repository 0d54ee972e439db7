//! GitHub webhooks: the `X-Hub-Signature-256` check (HMAC-SHA256 of the raw body, compared in
//! constant time) and one pure function from (event name, body) to a typed [`Event`].

use hmac::{KeyInit, Mac};
use serde::Deserialize;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` with `secret`.
/// The comparison is constant-time (`Mac::verify_slice`).
pub fn signature_valid(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// `sha256=<hex>` for `body` (what GitHub sends; used by tests and by clients of the endpoint).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| {
        // HMAC takes keys of any length; this branch cannot be reached.
        HmacSha256::new_from_slice(b"").expect("empty key")
    });
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The events that matter: what the queue keeps of a delivery (a few hundred bytes instead
/// of GitHub's tens of kilobytes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Ping,
    /// opened, synchronize, reopened, closed, labeled, unlabeled, ready_for_review.
    PullRequest {
        repo: String,
        number: u64,
        action: String,
        head: String,
        base: String,
    },
    /// A push to a branch.
    Push {
        repo: String,
        branch: String,
        after: String,
    },
    /// A check run, a check suite or a commit status finished on a commit: a PR gated on
    /// its checks (`pending.require_checks`) may now be in or out.
    Checks {
        repo: String,
        /// The commit checked.
        head: String,
        /// `check_run`, `check_suite` or `status`.
        event: String,
        /// The check run's name, the suite's app, the status's context.
        name: String,
        /// The conclusion, or the status's state.
        conclusion: String,
    },
    /// A new comment on a PR.
    PrComment {
        repo: String,
        number: u64,
        comment_id: u64,
        author: String,
        author_id: u64,
        /// OWNER, MEMBER, COLLABORATOR, CONTRIBUTOR, NONE, ...
        association: String,
        body: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    /// The body is not the JSON GitHub sends for this event; names the field.
    #[error("malformed `{event}` payload: {message}")]
    Malformed { event: String, message: String },
}

#[derive(Deserialize)]
struct Repo {
    full_name: String,
}

#[derive(Deserialize)]
struct Ref {
    #[serde(rename = "ref")]
    name: String,
    sha: String,
}

#[derive(Deserialize)]
struct Pr {
    number: u64,
    head: Ref,
    base: Ref,
}

#[derive(Deserialize)]
struct PullRequestPayload {
    action: String,
    pull_request: Pr,
    repository: Repo,
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    name: String,
    after: String,
    repository: Repo,
}

#[derive(Deserialize)]
struct User {
    login: String,
    id: u64,
}

#[derive(Deserialize)]
struct Comment {
    id: u64,
    body: String,
    user: User,
    author_association: String,
}

#[derive(Deserialize)]
struct Issue {
    number: u64,
    /// Present only when the issue is a pull request.
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct CommentPayload {
    action: String,
    issue: Issue,
    comment: Comment,
    repository: Repo,
}

#[derive(Deserialize)]
struct App {
    name: String,
}

#[derive(Deserialize)]
struct CheckRun {
    name: String,
    head_sha: String,
    conclusion: Option<String>,
}

#[derive(Deserialize)]
struct CheckRunPayload {
    action: String,
    check_run: CheckRun,
    repository: Repo,
}

#[derive(Deserialize)]
struct CheckSuite {
    head_sha: String,
    conclusion: Option<String>,
    app: App,
}

#[derive(Deserialize)]
struct CheckSuitePayload {
    action: String,
    check_suite: CheckSuite,
    repository: Repo,
}

#[derive(Deserialize)]
struct StatusPayload {
    sha: String,
    context: String,
    state: String,
    repository: Repo,
}

const PR_ACTIONS: &[&str] = &[
    "opened",
    "synchronize",
    "reopened",
    "closed",
    "labeled",
    "unlabeled",
    "ready_for_review",
];

/// The payload as `T`. A payload that does not fit is read again with the path of each key
/// tracked, for a message that names the field (`pull_request.number: invalid type…`): the
/// tracking copies every key of the payload (hundreds in a `pull_request` event), and was
/// a fifth of the CPU time of each delivery, so well-formed payloads go without it.
fn parse<T: for<'de> Deserialize<'de>>(event: &str, body: &[u8]) -> Result<T, WebhookError> {
    if let Ok(payload) = serde_json::from_slice(body) {
        return Ok(payload);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| WebhookError::Malformed {
        event: event.to_string(),
        message: e.to_string(),
    })
}

/// The typed event of a verified delivery; `None` for events and actions kcideploy ignores.
pub fn parse_event(event: &str, body: &[u8]) -> Result<Option<Event>, WebhookError> {
    Ok(match event {
        "ping" => Some(Event::Ping),
        "pull_request" => {
            let p: PullRequestPayload = parse(event, body)?;
            PR_ACTIONS
                .contains(&p.action.as_str())
                .then_some(Event::PullRequest {
                    repo: p.repository.full_name,
                    number: p.pull_request.number,
                    action: p.action,
                    head: p.pull_request.head.sha,
                    base: p.pull_request.base.name,
                })
        }
        "push" => {
            let p: PushPayload = parse(event, body)?;
            p.name
                .strip_prefix("refs/heads/")
                .map(|branch| Event::Push {
                    repo: p.repository.full_name,
                    branch: branch.to_string(),
                    after: p.after,
                })
        }
        "check_run" | "check_suite" | "status" => check_event(event, body)?,
        "issue_comment" => {
            let p: CommentPayload = parse(event, body)?;
            (p.action == "created" && p.issue.pull_request.is_some()).then_some(Event::PrComment {
                repo: p.repository.full_name,
                number: p.issue.number,
                comment_id: p.comment.id,
                author: p.comment.user.login,
                author_id: p.comment.user.id,
                association: p.comment.author_association,
                body: p.comment.body,
            })
        }
        _ => None,
    })
}

/// A check run or suite that `completed`, a status that is no longer `pending`: what may
/// let a PR in or keep it out. Starting checks change nothing.
fn check_event(event: &str, body: &[u8]) -> Result<Option<Event>, WebhookError> {
    let checks = |repo: Repo, head: String, name: String, conclusion: Option<String>| {
        Some(Event::Checks {
            repo: repo.full_name,
            head,
            event: event.to_string(),
            name,
            conclusion: conclusion.unwrap_or_default(),
        })
    };
    Ok(match event {
        "check_run" => {
            let p: CheckRunPayload = parse(event, body)?;
            let run = p.check_run;
            (p.action == "completed")
                .then(|| checks(p.repository, run.head_sha, run.name, run.conclusion))
                .flatten()
        }
        "check_suite" => {
            let p: CheckSuitePayload = parse(event, body)?;
            let suite = p.check_suite;
            (p.action == "completed")
                .then(|| {
                    checks(
                        p.repository,
                        suite.head_sha,
                        suite.app.name,
                        suite.conclusion,
                    )
                })
                .flatten()
        }
        _ => {
            let p: StatusPayload = parse(event, body)?;
            (p.state != "pending")
                .then(|| checks(p.repository, p.sha, p.context, Some(p.state)))
                .flatten()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/github-webhooks/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn signatures() {
        let body = fixture("ping");
        let header = sign(b"s3cret", &body);
        assert!(signature_valid(b"s3cret", &body, Some(&header)));
        assert!(!signature_valid(b"other", &body, Some(&header)));
        let mut tampered = body.clone();
        tampered.push(b' ');
        assert!(!signature_valid(b"s3cret", &tampered, Some(&header)));
        assert!(!signature_valid(b"s3cret", &body, None));
        assert!(!signature_valid(b"s3cret", &body, Some("sha1=abc")));
        assert!(!signature_valid(b"s3cret", &body, Some("sha256=zz")));
    }

    #[test]
    fn events_from_real_payloads() {
        assert_eq!(parse_event("ping", &fixture("ping")), Ok(Some(Event::Ping)));
        for action in ["opened", "synchronize", "reopened", "closed", "labeled"] {
            let event = parse_event("pull_request", &fixture(&format!("pull_request.{action}")))
                .expect("parses");
            let Some(Event::PullRequest {
                repo,
                number,
                action: a,
                head,
                base,
            }) = event
            else {
                panic!("{action}: {event:?}")
            };
            assert_eq!(
                (repo.as_str(), number, a.as_str(), base.as_str()),
                ("Codertocat/Hello-World", 2, action, "master")
            );
            assert_eq!(head.len(), 40);
        }
        // A tag push is not a branch push.
        assert_eq!(parse_event("push", &fixture("push")), Ok(None));
        // The fixture's comment is on an issue, not a PR: ignored; edits are ignored too.
        assert_eq!(
            parse_event("issue_comment", &fixture("issue_comment.created")),
            Ok(None)
        );
        assert_eq!(
            parse_event("issue_comment", &fixture("issue_comment.edited")),
            Ok(None)
        );
        assert_eq!(parse_event("star", b"{}"), Ok(None));
    }

    #[test]
    fn pr_comments_and_branch_pushes() {
        let mut comment: serde_json::Value =
            serde_json::from_slice(&fixture("issue_comment.created")).expect("json");
        comment["issue"]["pull_request"] = serde_json::json!({"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/1"});
        comment["comment"]["body"] = serde_json::json!("@kcibot deploy");
        let event = parse_event(
            "issue_comment",
            &serde_json::to_vec(&comment).expect("json"),
        )
        .expect("parses");
        let Some(Event::PrComment {
            author,
            association,
            body,
            ..
        }) = event
        else {
            panic!("{event:?}")
        };
        assert_eq!(
            (author.as_str(), association.as_str(), body.as_str()),
            ("Codertocat", "OWNER", "@kcibot deploy")
        );

        let mut push: serde_json::Value = serde_json::from_slice(&fixture("push")).expect("json");
        push["ref"] = serde_json::json!("refs/heads/main");
        let event = parse_event("push", &serde_json::to_vec(&push).expect("json")).expect("parses");
        assert!(
            matches!(event, Some(Event::Push { ref branch, .. }) if branch == "main"),
            "{event:?}"
        );
    }

    #[test]
    fn finished_checks_from_real_payloads() {
        let checks = |event: &str, name: &str| match parse_event(event, &fixture(name)) {
            Ok(Some(Event::Checks {
                repo,
                head,
                name,
                conclusion,
                ..
            })) => format!("{repo} {} {name} {conclusion}", &head[..7]),
            other => format!("{other:?}"),
        };
        assert_eq!(
            checks("check_run", "check_run.completed"),
            "Codertocat/Hello-World ec26c3e Octocoders-linter success"
        );
        assert_eq!(
            checks("check_suite", "check_suite.completed"),
            "Codertocat/Hello-World ec26c3e octocoders-linter success"
        );
        assert_eq!(
            checks("status", "status"),
            "Codertocat/Hello-World 6113728 default success"
        );
        // A check that starts, or a status that is pending, changes nothing.
        assert_eq!(
            parse_event("check_run", &fixture("check_run.created")),
            Ok(None)
        );
        let mut pending: serde_json::Value =
            serde_json::from_slice(&fixture("status")).expect("json");
        pending["state"] = serde_json::json!("pending");
        let body = serde_json::to_vec(&pending).expect("json");
        assert_eq!(parse_event("status", &body), Ok(None));
    }

    #[test]
    fn malformed_payloads_name_the_field() {
        let err = parse_event(
            "pull_request",
            br#"{"action": "opened", "pull_request": {"number": "two"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed `pull_request` payload: pull_request.number: invalid type: string \"two\", expected u64 at line 1 column 53"
        );
    }
}
