//! A fake GitHub REST API on 127.0.0.1 serving real-shaped data: PR objects built from the
//! `pull_request` webhook fixture (the REST shape), pagination with `Link` headers, ETags and
//! 304s that cost no rate limit, errors shaped like the recorded ones, a 403 rate limit with
//! reset headers. PR heads are served by a real bare repo (`refs/pull/N/head`). GitHub Actions:
//! workflow dispatches (`204`, or `200` with the run's id when `return_run_details` is asked),
//! the runs list of a workflow and one run, run objects shaped like a recorded one. A
//! commit's checks: `GET .../commits/{sha}/check-runs` (check run objects shaped like the
//! `check_run` webhook fixture's, which is the REST object) and `GET .../commits/{sha}/status`
//! (the combined status of the latest status of each context, the posted ones included, each
//! shaped like the recorded create-status answer), both paginated like every list.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const TOKEN: &str = "ghp_FAKE_SECRET_0123456789abcdef";

#[derive(Default)]
pub struct Fake {
    pub prs: Vec<Value>,
    pub files: HashMap<u64, Vec<String>>,
    pub comments: HashMap<u64, Vec<Value>>,
    pub next_comment_id: u64,
    /// (sha, state) in the order they were set.
    pub statuses: Vec<(String, String)>,
    /// (sha, the request's body) in the order they were set.
    pub status_bodies: Vec<(String, Value)>,
    pub team: Vec<String>,
    /// Answers with a body (what GitHub counts against the rate limit).
    pub charged: u64,
    pub not_modified: u64,
    /// Rate-limit the next N requests.
    pub rate_limit_next: u32,
    /// Seconds from now to the rate limit's reset in those answers (1 unless set).
    pub rate_limit_reset_in: Option<i64>,
    pub rate_limited: u32,
    pub requests: Vec<String>,
    pub patched: u64,
    /// Pagination links point at this `host:port` instead of the request's `Host`.
    pub next_host: Option<String>,
    /// Pages hold at most this many items, whatever `per_page` asks.
    pub max_per_page: Option<usize>,
    /// A PR list page after the first starts with the last PR of the page before (what
    /// GitHub answers when a PR is opened while the list is being paginated).
    pub overlap_pages: bool,
    /// Answer the next N GET requests 502 Bad Gateway (before doing anything).
    pub fail_gets: u32,
    /// Store the next N posted comments, then answer 502 Bad Gateway.
    pub fail_after_comment_post: u32,
    /// Every request's headers, in order (names lower-case).
    pub headers: Vec<Vec<(String, String)>>,
    /// Workflow runs, as `GET .../actions/runs/{id}` answers them.
    pub runs: Vec<FakeRun>,
    /// Workflow files that exist; a dispatch of another one is a 404.
    pub workflows: Vec<String>,
    /// Bodies of the dispatches, with the workflow.
    pub dispatches: Vec<(String, Value)>,
    /// Answer dispatches `204 No Content` even when run details are asked (as GitHub did
    /// before `return_run_details`, and older Enterprise Servers do).
    pub no_run_details: bool,
    /// The `(status, conclusion)` a dispatched run goes through, one step per `GET` of it;
    /// it stays at the last one.
    pub run_script: Vec<(&'static str, Option<&'static str>)>,
    /// `head_sha` of dispatched runs (the tip of the ref).
    pub run_head_sha: String,
    /// A dispatched run is missing from this many runs lists (GitHub takes a moment).
    pub run_hidden_lists: u32,
    /// Someone else's dispatch on the same ref at the same time: a run created just before
    /// each of ours, with this head SHA, concluding `failure`.
    pub concurrent_head_sha: Option<String>,
    /// Check runs per commit SHA, in the order they were set.
    pub check_runs: HashMap<String, Vec<Value>>,
    /// Commit statuses per SHA, oldest first: set by tests and posted by kcideploy.
    pub commit_statuses: HashMap<String, Vec<Value>>,
    /// Bodies of `POST .../pulls` (PRs opened), in order; each is then listed in `prs`.
    pub opened: Vec<Value>,
}

/// Set check run `name` on `sha` (replacing one of that name): `status` and `conclusion`
/// as GitHub reports them (`in_progress` and `None`, `completed` and `Some("failure")`).
pub fn set_check_run(
    fake: &Shared,
    sha: &str,
    name: &str,
    (status, conclusion): (&str, Option<&str>),
) {
    let mut run = fixture("github-webhooks/check_run.completed.json")["check_run"].clone();
    let mut f = fake.lock().expect("fake");
    let runs = f.check_runs.entry(sha.to_string()).or_default();
    runs.retain(|r| r["name"] != json!(name));
    let id = 1000 + runs.len() as u64;
    run["id"] = json!(id);
    run["name"] = json!(name);
    run["head_sha"] = json!(sha);
    run["status"] = json!(status);
    run["conclusion"] = json!(conclusion);
    run["url"] = json!(format!(
        "https://api.github.com/repos/kernelci/core/check-runs/{id}"
    ));
    run["pull_requests"] = json!([]);
    runs.push(run);
}

/// A commit status of `context` on `sha` (`success`, `pending`, `failure`, `error`).
pub fn set_status(fake: &Shared, sha: &str, context: &str, state: &str) {
    let mut f = fake.lock().expect("fake");
    add_status(&mut f, sha, context, state);
}

fn add_status(f: &mut Fake, sha: &str, context: &str, state: &str) {
    let mut status = fixture("github-rest/create-status.json")[0]["response"].clone();
    status["state"] = json!(state);
    status["context"] = json!(context);
    let list = f.commit_statuses.entry(sha.to_string()).or_default();
    status["id"] = json!(2000 + list.len() as u64);
    list.push(status);
}

/// `GET .../commits/{sha}/status`: the latest status of each context, and their sum.
fn combined_status(fake: &mut Fake, uri: &Uri, headers: &HeaderMap, sha: &str) -> Response {
    let mut latest: Vec<Value> = Vec::new();
    for s in fake.commit_statuses.get(sha).into_iter().flatten().rev() {
        if !latest.iter().any(|l| l["context"] == s["context"]) {
            latest.push(s.clone());
        }
    }
    let state = if latest
        .iter()
        .any(|s| s["state"] == "failure" || s["state"] == "error")
    {
        "failure"
    } else if latest.is_empty() || latest.iter().any(|s| s["state"] == "pending") {
        "pending"
    } else {
        "success"
    };
    let total = latest.len();
    let repo = fixture("github-webhooks/pull_request.opened.json")["repository"].clone();
    let api = format!("https://api.github.com/repos/kernelci/core/commits/{sha}");
    page_of(fake, uri, headers, &latest, |slice| {
        json!({
            "state": state,
            "statuses": slice,
            "sha": sha,
            "total_count": total,
            "repository": repo,
            "commit_url": api,
            "url": format!("{api}/status"),
        })
    })
}

/// A workflow run and what it does next.
pub struct FakeRun {
    pub workflow: String,
    pub run: Value,
    pub script: Vec<(&'static str, Option<&'static str>)>,
    pub step: usize,
    pub hidden_lists: u32,
}

/// A run object in the REST shape, from the recorded runs list, with our values.
pub fn run_object(
    id: u64,
    workflow: &str,
    branch: &str,
    head_sha: &str,
    (status, conclusion): (&str, Option<&str>),
    created_at: i64,
) -> Value {
    let mut run = fixture("github-rest/list-workflow-runs.json")["workflow_runs"][0].clone();
    let api = format!("https://api.github.com/repos/kernelci/core/actions/runs/{id}");
    run["id"] = json!(id);
    run["name"] = json!(workflow);
    run["display_title"] = json!(workflow);
    run["path"] = json!(format!(".github/workflows/{workflow}"));
    run["head_branch"] = json!(branch);
    run["head_sha"] = json!(head_sha);
    run["head_commit"]["id"] = json!(head_sha);
    run["event"] = json!("workflow_dispatch");
    run["status"] = json!(status);
    run["conclusion"] = json!(conclusion);
    run["run_number"] = json!(id);
    run["created_at"] = json!(super::common::rfc3339(created_at));
    run["updated_at"] = json!(super::common::rfc3339(created_at));
    run["run_started_at"] = json!(super::common::rfc3339(created_at));
    run["url"] = json!(api);
    run["html_url"] = json!(format!(
        "https://github.com/kernelci/core/actions/runs/{id}"
    ));
    run["pull_requests"] = json!([]);
    run
}

/// A run that was there before: a workflow's earlier dispatch.
pub fn add_run(fake: &Shared, workflow: &str, run: Value) {
    fake.lock().expect("fake").runs.push(FakeRun {
        workflow: workflow.to_string(),
        run,
        script: Vec::new(),
        step: 0,
        hidden_lists: 0,
    });
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// `POST .../actions/workflows/{workflow}/dispatches`: new runs, `204` or `200` with details.
fn dispatch(fake: &mut Fake, workflow: &str, body: &Value) -> Response {
    fake.charged += 1;
    if !fake.workflows.iter().any(|w| w == workflow) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let Some(git_ref) = body["ref"].as_str().map(String::from) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request.\n\n\"ref\" wasn't supplied.",
        );
    };
    fake.dispatches.push((workflow.to_string(), body.clone()));
    let now = jiff::Timestamp::now().as_second();
    let next_id = |fake: &Fake| 30_000_000_000 + fake.runs.len() as u64 + 1;
    if let Some(sha) = fake.concurrent_head_sha.clone() {
        let id = next_id(fake);
        let run = run_object(
            id,
            workflow,
            &git_ref,
            &sha,
            ("completed", Some("failure")),
            now,
        );
        add_run_to(fake, workflow, run, Vec::new());
    }
    let id = next_id(fake);
    let first = fake.run_script.first().copied().unwrap_or(("queued", None));
    let run = run_object(
        id,
        workflow,
        &git_ref,
        &fake.run_head_sha.clone(),
        first,
        now,
    );
    let script = fake.run_script.clone();
    add_run_to(fake, workflow, run, script);
    if fake.no_run_details || body["return_run_details"] != json!(true) {
        return StatusCode::NO_CONTENT.into_response();
    }
    json_response(
        StatusCode::OK,
        &json!({
            "workflow_run_id": id,
            "run_url": format!("https://api.github.com/repos/kernelci/core/actions/runs/{id}"),
            "html_url": format!("https://github.com/kernelci/core/actions/runs/{id}"),
        }),
    )
}

fn add_run_to(
    fake: &mut Fake,
    workflow: &str,
    run: Value,
    script: Vec<(&'static str, Option<&'static str>)>,
) {
    let hidden_lists = fake.run_hidden_lists;
    fake.runs.push(FakeRun {
        workflow: workflow.to_string(),
        run,
        script,
        step: 0,
        hidden_lists,
    });
}

/// `GET .../actions/workflows/{workflow}/runs`: newest first, filtered by `event` and
/// `branch`, as `{ total_count, workflow_runs }`.
fn list_runs(fake: &mut Fake, workflow: &str, uri: &Uri) -> Response {
    fake.charged += 1;
    let q = query(uri);
    let mut runs: Vec<Value> = Vec::new();
    for r in fake.runs.iter_mut().filter(|r| r.workflow == workflow) {
        if r.hidden_lists > 0 {
            r.hidden_lists -= 1;
            continue;
        }
        let keep = |field: &str| {
            q.get(field).is_none_or(|want| {
                r.run[if field == "branch" {
                    "head_branch"
                } else {
                    field
                }] == *want
            })
        };
        if keep("event") && keep("branch") {
            runs.push(r.run.clone());
        }
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r["id"].as_u64()));
    json_response(
        StatusCode::OK,
        &json!({ "total_count": runs.len(), "workflow_runs": runs }),
    )
}

/// `GET .../actions/runs/{id}`: the run, moved one step along its script.
fn get_run(fake: &mut Fake, id: &str) -> Response {
    fake.charged += 1;
    let id: u64 = id.parse().unwrap_or(0);
    let Some(r) = fake
        .runs
        .iter_mut()
        .find(|r| r.run["id"].as_u64() == Some(id))
    else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let at = r.step.min(r.script.len().saturating_sub(1));
    if let Some((status, conclusion)) = r.script.get(at).copied() {
        r.run["status"] = json!(status);
        r.run["conclusion"] = json!(conclusion);
        r.step += 1;
    }
    json_response(StatusCode::OK, &r.run)
}

pub type Shared = Arc<Mutex<Fake>>;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture JSON")
}

/// A PR object in the REST shape, from the webhook fixture, with our values.
pub struct Pr<'a> {
    pub number: u64,
    pub login: &'a str,
    pub head: String,
    pub branch: &'a str,
    pub base: &'a str,
    pub labels: &'a [&'a str],
    pub draft: bool,
    /// Unix seconds; fixtures set it relative to the test clock (`common::NOW`).
    pub updated_at: i64,
}

pub fn pr_object(p: &Pr<'_>) -> Value {
    let mut pr = fixture("github-webhooks/pull_request.opened.json")["pull_request"].clone();
    pr["number"] = json!(p.number);
    pr["title"] = json!(format!("PR {}", p.number));
    pr["user"]["login"] = json!(p.login);
    pr["head"]["sha"] = json!(p.head);
    pr["head"]["ref"] = json!(p.branch);
    pr["head"]["label"] = json!(format!("{}:{}", p.login, p.branch));
    pr["base"]["ref"] = json!(p.base);
    pr["draft"] = json!(p.draft);
    pr["updated_at"] = json!(super::common::rfc3339(p.updated_at));
    let label_template =
        fixture("github-webhooks/pull_request.labeled.json")["pull_request"]["labels"][0].clone();
    pr["labels"] = Value::Array(
        p.labels
            .iter()
            .map(|name| {
                let mut l = label_template.clone();
                l["name"] = json!(name);
                l
            })
            .collect(),
    );
    pr
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"message": message, "documentation_url": "https://docs.github.com/rest"});
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// One page of `items`, with `Link`, `ETag`, and a 304 for a matching `If-None-Match`.
fn page(fake: &mut Fake, uri: &Uri, headers: &HeaderMap, items: &[Value]) -> Response {
    page_of(fake, uri, headers, items, |slice| slice)
}

/// [`page`] whose body is `wrap` of the page's items (an object holding the list).
fn page_of(
    fake: &mut Fake,
    uri: &Uri,
    headers: &HeaderMap,
    items: &[Value],
    wrap: impl FnOnce(Value) -> Value,
) -> Response {
    let q = query(uri);
    let per_page: usize = q
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .clamp(1, fake.max_per_page.unwrap_or(100).clamp(1, 100));
    let page: usize = q
        .get("page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let mut slice: Vec<Value> = items
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    if fake.overlap_pages
        && page > 1
        && let Some(previous) = items.get((page - 1) * per_page - 1)
    {
        slice.insert(0, previous.clone());
    }
    let body = wrap(Value::Array(slice)).to_string();
    let etag = format!("\"{}\"", hex::encode(Sha256::digest(body.as_bytes())));
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        fake.not_modified += 1;
        return (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
    }
    fake.charged += 1;
    let host = fake.next_host.clone().unwrap_or_else(|| {
        headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1")
            .to_string()
    });
    let base: Vec<String> = q
        .iter()
        .filter(|(k, _)| *k != "page")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let link_to = |n: usize| {
        let mut params = base.clone();
        params.sort();
        params.push(format!("page={n}"));
        format!("<http://{host}{}?{}>", uri.path(), params.join("&"))
    };
    let mut links = Vec::new();
    if page < last {
        links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
        links.push(format!("{}; rel=\"last\"", link_to(last)));
    }
    let mut resp = (
        StatusCode::OK,
        [
            ("content-type", "application/json; charset=utf-8"),
            ("etag", etag.as_str()),
        ],
        body,
    )
        .into_response();
    if !links.is_empty()
        && let Ok(v) = links.join(", ").parse()
    {
        resp.headers_mut().insert("link", v);
    }
    resp
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut fake = shared.lock().expect("fake");
    fake.requests.push(format!("{method} {uri}"));
    let seen = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    fake.headers.push(seen);
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        fake.charged += 1;
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if fake.rate_limit_next > 0 {
        fake.rate_limit_next -= 1;
        fake.rate_limited += 1;
        let reset = jiff::Timestamp::now().as_second() + fake.rate_limit_reset_in.unwrap_or(1);
        let mut resp = error(
            StatusCode::FORBIDDEN,
            "API rate limit exceeded for user ID 1.",
        );
        let h = resp.headers_mut();
        h.insert("x-ratelimit-limit", "5000".parse().expect("h"));
        h.insert("x-ratelimit-remaining", "0".parse().expect("h"));
        h.insert("x-ratelimit-reset", reset.to_string().parse().expect("h"));
        return resp;
    }
    if method == Method::GET && fake.fail_gets > 0 {
        fake.fail_gets -= 1;
        return error(StatusCode::BAD_GATEWAY, "Server Error");
    }
    let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    if parts.first() == Some(&"repos") && parts.get(1..3) != Some(&["kernelci", "core"][..]) {
        fake.charged += 1;
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["repos", _, _, "pulls"]) => {
            let head = query(&uri).get("head").cloned();
            let mut prs: Vec<Value> = fake
                .prs
                .iter()
                .filter(|p| {
                    head.as_ref()
                        .is_none_or(|h| p["head"]["label"] == h.as_str())
                })
                .cloned()
                .collect();
            prs.sort_by_key(|p| std::cmp::Reverse(p["number"].as_u64()));
            page(&mut fake, &uri, &headers, &prs)
        }
        ("POST", ["repos", _, _, "pulls"]) => open_pull(&mut fake, &json_body),
        ("GET", ["repos", _, _, "pulls", n]) => {
            fake.charged += 1;
            let n: u64 = n.parse().unwrap_or(0);
            match fake.prs.iter().find(|p| p["number"].as_u64() == Some(n)) {
                Some(pr) => (
                    StatusCode::OK,
                    [("content-type", "application/json")],
                    pr.to_string(),
                )
                    .into_response(),
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ("GET", ["repos", _, _, "pulls", n, "files"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let files: Vec<Value> = fake
                .files
                .get(&n)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|f| json!({"sha": "0", "filename": f, "status": "modified", "additions": 1, "deletions": 0, "changes": 1}))
                .collect();
            page(&mut fake, &uri, &headers, &files)
        }
        ("GET", ["orgs", _, "teams", _, "members"]) => {
            let members: Vec<Value> = fake
                .team
                .iter()
                .map(|l| json!({"login": l, "id": 1, "type": "User"}))
                .collect();
            page(&mut fake, &uri, &headers, &members)
        }
        ("GET", ["repos", _, _, "issues", n, "comments"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let list = fake.comments.get(&n).cloned().unwrap_or_default();
            page(&mut fake, &uri, &headers, &list)
        }
        ("POST", ["repos", _, _, "issues", n, "comments"]) => {
            fake.charged += 1;
            let n: u64 = n.parse().unwrap_or(0);
            fake.next_comment_id += 1;
            let comment = json!({"id": fake.next_comment_id, "body": json_body["body"], "user": {"login": "kcibot"}});
            fake.comments.entry(n).or_default().push(comment.clone());
            if fake.fail_after_comment_post > 0 {
                fake.fail_after_comment_post -= 1;
                return error(StatusCode::BAD_GATEWAY, "Server Error");
            }
            (
                StatusCode::CREATED,
                [("content-type", "application/json")],
                comment.to_string(),
            )
                .into_response()
        }
        ("PATCH", ["repos", _, _, "issues", "comments", id]) => {
            fake.charged += 1;
            fake.patched += 1;
            let id: u64 = id.parse().unwrap_or(0);
            for list in fake.comments.values_mut() {
                for c in list.iter_mut() {
                    if c["id"].as_u64() == Some(id) {
                        c["body"] = json_body["body"].clone();
                        return (
                            StatusCode::OK,
                            [("content-type", "application/json")],
                            c.to_string(),
                        )
                            .into_response();
                    }
                }
            }
            error(StatusCode::NOT_FOUND, "Not Found")
        }
        (
            "POST",
            [
                "repos",
                _,
                _,
                "actions",
                "workflows",
                workflow,
                "dispatches",
            ],
        ) => {
            let workflow = workflow.to_string();
            dispatch(&mut fake, &workflow, &json_body)
        }
        ("GET", ["repos", _, _, "actions", "workflows", workflow, "runs"]) => {
            let workflow = workflow.to_string();
            list_runs(&mut fake, &workflow, &uri)
        }
        ("GET", ["repos", _, _, "actions", "runs", id]) => {
            let id = id.to_string();
            get_run(&mut fake, &id)
        }
        ("GET", ["repos", _, _, "commits", sha, "check-runs"]) => {
            let runs = fake.check_runs.get(*sha).cloned().unwrap_or_default();
            let total = runs.len();
            page_of(
                &mut fake,
                &uri,
                &headers,
                &runs,
                |slice| json!({"total_count": total, "check_runs": slice}),
            )
        }
        ("GET", ["repos", _, _, "commits", sha, "status"]) => {
            let sha = sha.to_string();
            combined_status(&mut fake, &uri, &headers, &sha)
        }
        ("POST", ["repos", _, _, "statuses", sha]) => {
            fake.charged += 1;
            let state = json_body["state"].as_str().unwrap_or("").to_string();
            let context = json_body["context"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            add_status(&mut fake, sha, &context, &state);
            fake.statuses.push((sha.to_string(), state));
            fake.status_bodies
                .push((sha.to_string(), json_body.clone()));
            let mut status = fixture("github-rest/create-status.json")[0]["response"].clone();
            status["state"] = json_body["state"].clone();
            status["context"] = json_body["context"].clone();
            (
                StatusCode::CREATED,
                [("content-type", "application/json")],
                status.to_string(),
            )
                .into_response()
        }
        _ => {
            fake.charged += 1;
            error(StatusCode::NOT_FOUND, "Not Found")
        }
    }
}

/// `POST /repos/{owner}/{repo}/pulls`: `201 Created` with the new PR (the REST shape), or
/// GitHub's `422 Validation Failed` when a field is missing or a PR from that head is open.
fn open_pull(fake: &mut Fake, body: &Value) -> Response {
    fake.charged += 1;
    let field = |k: &str| {
        body[k]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let (Some(title), Some(head), Some(base)) = (field("title"), field("head"), field("base"))
    else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
    };
    let label = format!("kernelci:{head}");
    if fake
        .prs
        .iter()
        .any(|p| p["head"]["label"] == label.as_str())
    {
        let body = json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom", "message": format!("A pull request already exists for {label}.")}], "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request", "status": "422"});
        return json_response(StatusCode::UNPROCESSABLE_ENTITY, &body);
    }
    let number = fake
        .prs
        .iter()
        .filter_map(|p| p["number"].as_u64())
        .max()
        .unwrap_or(0)
        + 1;
    let mut pr = pr_object(&Pr {
        number,
        login: "kcibot",
        head: String::new(),
        branch: "",
        base: &base,
        labels: &[],
        draft: false,
        updated_at: jiff::Timestamp::now().as_second(),
    });
    pr["title"] = json!(title);
    pr["body"] = body["body"].clone();
    pr["head"]["ref"] = json!(head);
    pr["head"]["label"] = json!(label);
    pr["html_url"] = json!(format!("https://github.com/kernelci/core/pull/{number}"));
    pr["url"] = json!(format!(
        "https://api.github.com/repos/kernelci/core/pulls/{number}"
    ));
    pr["state"] = json!("open");
    fake.opened.push(body.clone());
    fake.prs.push(pr.clone());
    json_response(StatusCode::CREATED, &pr)
}

/// A PR: a commit on main in the bare repo, `refs/pull/N/head`, and its REST object.
/// The head is committed a day before `NOW`, or at `updated_at` if that is older (a PR is
/// updated whenever its head moves).
pub fn add_pr(
    fake: &Shared,
    remote: &super::common::Remote,
    p: Pr<'_>,
    edits: &[(&str, Option<&str>)],
) -> String {
    let committed = p.updated_at.min(super::common::NOW - super::common::DAY);
    add_pr_committed_at(fake, remote, p, edits, committed)
}

/// [`add_pr`] with the head committed at `committed` (Unix seconds).
pub fn add_pr_committed_at(
    fake: &Shared,
    remote: &super::common::Remote,
    p: Pr<'_>,
    edits: &[(&str, Option<&str>)],
    committed: i64,
) -> String {
    let head = kcideploy::gitops::scratch::commit(
        &remote.repo,
        Some(remote.main),
        edits,
        super::common::ALICE,
        committed,
        "pr",
    )
    .expect("commit");
    remote
        .repo
        .reference(&format!("refs/pull/{}/head", p.number), head, true, "pr")
        .expect("ref");
    let mut f = fake.lock().expect("fake");
    f.files.insert(
        p.number,
        edits.iter().map(|(path, _)| path.to_string()).collect(),
    );
    f.prs.push(pr_object(&Pr {
        head: head.to_string(),
        ..p
    }));
    head.to_string()
}

pub fn pr(number: u64, login: &'static str) -> Pr<'static> {
    Pr {
        number,
        login,
        head: String::new(),
        branch: "fix",
        base: "main",
        labels: &[],
        draft: false,
        updated_at: super::common::NOW - super::common::DAY,
    }
}

/// Start the fake on 127.0.0.1; returns its base URL.
pub fn start(shared: Shared) -> String {
    super::common::serve(axum::Router::new().fallback(handle).with_state(shared))
}
