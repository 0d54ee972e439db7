//! A fake KernelCI API on 127.0.0.1: nodes in the shape of ../shared/fixtures/kernelci-api,
//! moving forward over time (running → available → closing → done), `/latest/nodes` with
//! dotted-field filters and limit/offset pages, `/latest/nodes/fast`, `/latest/count`,
//! `/latest/node/{id}`. Like the real pipeline's trigger, it makes a checkout (and its builds
//! and tests) for a `staging-*` branch pushed to the kernel bare repo when asked about it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What the pipeline makes of the next checkout.
#[derive(Clone)]
pub struct Scenario {
    pub checkout_result: &'static str,
    pub builds: Vec<&'static str>,
    pub tests: Vec<&'static str>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            checkout_result: "pass",
            builds: vec!["pass"; 10],
            tests: [vec!["pass"; 38], vec!["fail"; 2]].concat(),
        }
    }
}

struct Node {
    value: Value,
    born: Instant,
    /// Never finishes.
    stuck: bool,
    result: Option<String>,
}

pub struct FakeKci {
    nodes: Vec<Node>,
    pub scenario: Scenario,
    /// How long each state lasts.
    pub step: Duration,
    /// The kernel bare repo the pipe-cleaner pushes to.
    pub kernel: Option<PathBuf>,
    /// Ignore new commits (no checkout ever appears).
    pub ignore_new: bool,
    pub requests: u64,
    /// `/latest/count` requests answered.
    pub counts: u64,
    /// While set, no node moves on from `running`; when cleared, nodes move on by their age
    /// (so those older than three steps are done at once). A test holds the nodes until it
    /// has seen what it wants to see, instead of racing the fake's clock.
    pub hold: bool,
    /// `/latest/nodes` pages hold at most this many items, whatever `limit` asks (the real
    /// API caps it too).
    pub max_page: Option<usize>,
    /// `/latest/nodes` pages answered.
    pub pages: u64,
    /// Like the real trigger, which polls the watched branches once at start-up: when set,
    /// only the commits this file lists (written by the test's pipeline "restart") are
    /// picked up.
    pub trigger_saw: Option<PathBuf>,
    /// Checkout queries for a commit the trigger had not seen (asked before the restart).
    pub unseen_queries: u64,
    /// Answer the next N requests `429 Too Many Requests` with `Retry-After: 1`, as the
    /// API's rate limiter does.
    pub too_many_next: u32,
    /// 429 answers given.
    pub too_many: u64,
    /// Queries for checkouts made after a time (a `phase: watch` step polling).
    pub watching: u64,
    next_id: u64,
}

impl Default for FakeKci {
    fn default() -> Self {
        FakeKci {
            nodes: Vec::new(),
            scenario: Scenario::default(),
            step: Duration::from_millis(100),
            kernel: None,
            ignore_new: false,
            requests: 0,
            counts: 0,
            hold: false,
            max_page: None,
            pages: 0,
            trigger_saw: None,
            unseen_queries: 0,
            too_many_next: 0,
            too_many: 0,
            watching: 0,
            next_id: 0,
        }
    }
}

pub type SharedKci = Arc<Mutex<FakeKci>>;

/// Wait until a `phase: watch` step polls for new checkouts (so what is made next is new
/// to it), at most `limit`.
pub fn wait_for_watch(shared: &SharedKci, limit: Duration) {
    let start = Instant::now();
    while shared.lock().expect("fake").watching == 0 && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn template() -> Value {
    let path = format!(
        "{}/tests/fixtures/kernelci-api/node.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).expect("node.json fixture")).expect("JSON")
}

impl FakeKci {
    /// Add a node; returns its id.
    pub fn add(
        &mut self,
        kind: &str,
        owner: &str,
        treeid: &str,
        revision: Value,
        result: Option<&str>,
        stuck: bool,
    ) -> String {
        self.next_id += 1;
        let id = format!("65a1{:020x}", self.next_id);
        let mut v = template();
        v["id"] = json!(id);
        v["kind"] = json!(kind);
        v["name"] = json!(kind);
        v["path"] = json!(["checkout", kind]);
        v["owner"] = json!(owner);
        v["treeid"] = json!(treeid);
        v["data"]["kernel_revision"] = revision;
        let now = api_time(jiff::Timestamp::now());
        v["created"] = json!(now);
        v["updated"] = json!(now);
        self.nodes.push(Node {
            value: v,
            born: Instant::now(),
            stuck,
            result: result.map(String::from),
        });
        id
    }

    /// A finished-looking checkout of `tree`/`branch` with 10 passing builds and `tests`
    /// (passed, failed) tests, as the production pipeline makes; the checkout's id.
    pub fn tree(
        &mut self,
        tree: &str,
        branch: &str,
        commit: &str,
        tests: (usize, usize),
    ) -> String {
        let revision = json!({"tree": tree, "branch": branch, "commit": commit, "url": "https://git.kernel.org/x.git", "describe": format!("v6.13-{}", &commit[..4])});
        let treeid = format!("tree-{commit}");
        let id = self.add(
            "checkout",
            "production",
            &treeid,
            revision.clone(),
            Some("pass"),
            false,
        );
        for _ in 0..10 {
            self.add(
                "kbuild",
                "production",
                &treeid,
                revision.clone(),
                Some("pass"),
                false,
            );
        }
        for (n, result) in [(tests.0, "pass"), (tests.1, "fail")] {
            for _ in 0..n {
                self.add(
                    "test",
                    "production",
                    &treeid,
                    revision.clone(),
                    Some(result),
                    false,
                );
            }
        }
        id
    }

    /// Set a node's `created` (the API's format), as if made earlier.
    pub fn backdate(&mut self, id: &str, created: jiff::Timestamp) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.value["id"] == id) {
            n.value["created"] = json!(api_time(created));
        }
    }

    fn render(&self, n: &Node) -> Value {
        let mut v = n.value.clone();
        let steps = if n.stuck || self.hold {
            0
        } else {
            (n.born.elapsed().as_millis() / self.step.as_millis().max(1)) as usize
        };
        let state = ["running", "available", "closing", "done"][steps.min(3)];
        v["state"] = json!(state);
        v["result"] = if state == "done" {
            json!(n.result)
        } else {
            Value::Null
        };
        v
    }

    /// The pipeline's trigger: a checkout, builds and tests for a pushed staging branch.
    fn discover(&mut self, branch: &str, commit: &str, tree: &str) {
        if self.ignore_new
            || self
                .nodes
                .iter()
                .any(|n| n.value["data"]["kernel_revision"]["commit"] == commit)
        {
            return;
        }
        if let Some(saw) = &self.trigger_saw
            && !std::fs::read_to_string(saw).is_ok_and(|s| s.contains(commit))
        {
            self.unseen_queries += 1;
            return;
        }
        let Some(kernel) = &self.kernel else { return };
        let Ok(repo) = git2::Repository::open_bare(kernel) else {
            return;
        };
        let at = repo
            .refname_to_id(&format!("refs/heads/{branch}"))
            .map(|o| o.to_string());
        if at.as_deref() != Ok(commit) {
            return;
        }
        let revision = json!({"tree": tree, "branch": branch, "commit": commit, "url": kernel.display().to_string(), "describe": branch});
        let treeid = format!("tree-{}", &commit[..12]);
        let scenario = self.scenario.clone();
        self.add(
            "checkout",
            "staging",
            &treeid,
            revision.clone(),
            Some(scenario.checkout_result),
            false,
        );
        if scenario.checkout_result == "pass" {
            for r in &scenario.builds {
                self.add(
                    "kbuild",
                    "staging",
                    &treeid,
                    revision.clone(),
                    Some(r),
                    false,
                );
            }
            for r in &scenario.tests {
                self.add("test", "staging", &treeid, revision.clone(), Some(r), false);
            }
        }
    }

    fn matching(&self, query: &HashMap<String, String>) -> Vec<Value> {
        self.nodes
            .iter()
            .map(|n| self.render(n))
            .filter(|v| {
                query
                    .iter()
                    .filter(|(k, _)| *k != "limit" && *k != "offset")
                    .all(|(k, want)| {
                        // The API's operators on ordered fields (`created__gt=`).
                        for (op, keep) in [
                            ("__gt", std::cmp::Ordering::Greater),
                            ("__lt", std::cmp::Ordering::Less),
                        ] {
                            if let Some(field) = k.strip_suffix(op) {
                                let got = field.split('.').fold(v, |v, part| &v[part]);
                                return got.as_str().is_some_and(|g| g.cmp(want.as_str()) == keep);
                            }
                        }
                        let got = k.split('.').fold(v, |v, part| &v[part]);
                        match got {
                            Value::Null => want == "null",
                            Value::String(s) => s == want,
                            other => serde_json::from_str::<Value>(want).is_ok_and(|w| w == *other),
                        }
                    })
            })
            .collect()
    }
}

/// The API's timestamp format: UTC, microseconds, no zone (`2024-02-01T09:58:28.479000`).
pub fn api_time(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%2F", "/").replace("%3A", ":")))
        .collect()
}

async fn handle(State(shared): State<SharedKci>, uri: Uri) -> Response {
    let mut fake = shared.lock().expect("fake");
    fake.requests += 1;
    if fake.too_many_next > 0 {
        fake.too_many_next -= 1;
        fake.too_many += 1;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            axum::Json(serde_json::json!({ "detail": "Too Many Requests" })),
        )
            .into_response();
    }
    let q = query(&uri);
    if q.contains_key("created__gt") && !q.contains_key("state") {
        fake.watching += 1;
    }
    if q.get("kind").map(String::as_str) == Some("checkout")
        && let (Some(branch), Some(commit)) = (
            q.get("data.kernel_revision.branch"),
            q.get("data.kernel_revision.commit"),
        )
    {
        let tree = q
            .get("data.kernel_revision.tree")
            .cloned()
            .unwrap_or_else(|| "kernelci".into());
        fake.discover(branch, commit, &tree);
    }
    let path = uri.path();
    let json_ok = |v: Value| {
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            v.to_string(),
        )
            .into_response()
    };
    match path {
        "/latest/nodes" => {
            let all = fake.matching(&q);
            let limit: usize = q
                .get("limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(250)
                .min(fake.max_page.unwrap_or(usize::MAX));
            fake.pages += 1;
            let offset: usize = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
            let items: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
            json_ok(json!({"items": items, "total": all.len(), "limit": limit, "offset": offset}))
        }
        "/latest/nodes/fast" => json_ok(Value::Array(fake.matching(&q))),
        "/latest/count" => {
            fake.counts += 1;
            json_ok(json!(fake.matching(&q).len()))
        }
        _ => match path.strip_prefix("/latest/node/") {
            Some(id) => match fake.nodes.iter().find(|n| n.value["id"] == id) {
                Some(n) => json_ok(fake.render(n)),
                None => (
                    StatusCode::NOT_FOUND,
                    [("content-type", "application/json")],
                    json!({"detail": "Node not found"}).to_string(),
                )
                    .into_response(),
            },
            None => (
                StatusCode::NOT_FOUND,
                json!({"detail": "Not Found"}).to_string(),
            )
                .into_response(),
        },
    }
}

/// Start the fake on 127.0.0.1; returns its base URL.
pub fn start(shared: SharedKci) -> String {
    super::common::serve(axum::Router::new().fallback(handle).with_state(shared))
}
