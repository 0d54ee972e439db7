//! `serve`'s status pages in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, over W3C WebDriver): a deploy in progress with one failed and one
//! running step, changes left out for every reason the git forge has, an excluded change,
//! a past run with logs. Screenshots go to target/dashboard/ (and, with
//! `KCIDEPLOY_README_SCREENSHOT=1`, the one of the deploy to docs/dashboard.png).

mod common;
#[path = "common/server.rs"]
mod server;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};

use common::*;
use kcideploy::gitops::scratch;
use kcideploy::state::{Exclusion, ExclusionCause, RunRecord, RunResult, RunStep, StepResult};
use server::{PATIENCE, SECRET, Server, fixture};
use webdriver::Browser;

/// An HTML and ANSI-laden PR title: shown as text, never run.
const TITLE: &str = "<img src=x onerror=\"window.pwned=1\"> \u{1b}[31mred\u{1b}[0m & more";
const PAST_RUN: &str = "20261129T100000Z-past01";

struct Scenario {
    fx: Fixture,
    plan: PathBuf,
    go: PathBuf,
}

/// Branches of every kind, steps `check` (fails), `deploy` (runs until `go` exists),
/// `verify` (after deploy), `report` (after check: skipped); state with a past failed run
/// and its logs, and `staging-bad` excluded by blame.
fn scenario() -> Scenario {
    let fx = Fixture::new();
    let go = fx.path().join("GO");
    let remote = fx.repo("core", &[("config/a.yaml", Some("a: 1\n"))]);
    let title_head = scratch::commit(
        &remote.repo,
        Some(remote.main),
        &[("config/a.yaml", Some("a: 2\n"))],
        ALICE,
        NOW - DAY,
        TITLE,
    )
    .expect("commit");
    scratch::set_branch(&remote.repo, "staging-a-fix", title_head).expect("branch");
    remote.branch(
        "staging-b-conflict",
        ALICE,
        &[("config/a.yaml", Some("a: 3\n"))],
    );
    remote.branch(
        "staging-c-untrusted",
        EVE,
        &[("config/c.yaml", Some("c: 1\n"))],
    );
    remote.branch_at(
        "staging-d-stale",
        ALICE,
        NOW - 400 * DAY,
        &[("config/d.yaml", Some("d: 1\n"))],
    );
    remote.branch(
        "staging-e-skipped",
        ALICE,
        &[("config/e.yaml", Some("e: 1\n"))],
    );
    let bad = remote.branch("staging-f-bad", ALICE, &[("config/f.yaml", Some("f: 1\n"))]);
    let q = |p: &Path| p.display().to_string();
    let plan = fx.plan_file(&format!(
        r#"version: 1
name: staging
policy: {{ settle: 1s, cooldown: 1s, full_cycle_interval: 6h, max_restarts: 0 }}
notify: false
repos:
  core:
    url: repos/core.git
    base: master
    github_repo: Codertocat/Hello-World
    pending:
      branches: "staging-*"
      trusted: [alice@example.org]
      skip: [staging-e-skipped]
      max_age: 30d
components:
  config: {{ repo: core, paths: ["config/**"] }}
steps:
  check: {{ kind: command, on: [config], with: {{ run: ["sh", "-c", "echo checking config; echo 'error: a: 2 is not allowed' >&2; exit 1"] }} }}
  deploy: {{ kind: command, on: [config], with: {{ run: ["sh", "-c", "echo deploying to staging; while [ ! -f {go} ]; do sleep 0.1; done; echo deployed"] }} }}
  verify: {{ kind: command, on: [config], needs: [deploy], with: {{ run: ["true"] }} }}
  report: {{ kind: command, on: [config], needs: [check], with: {{ run: ["true"] }} }}
"#,
        go = q(&go)
    ));
    let repo = git2::Repository::open_bare(fx.path().join("repos/core.git")).expect("repo");
    scratch::set_branch(&repo, "master", remote.main).expect("branch");
    seed_state(&plan, &bad.to_string());
    Scenario { fx, plan, go }
}

fn seed_state(plan: &Path, bad_head: &str) {
    let config = kcideploy::config::Config::load(plan).expect("config");
    let mut state = kcideploy::state::State::default();
    let now = jiff::Timestamp::now();
    state.cycles.last_full = Some(now);
    let past = now - jiff::SignedDuration::from_hours(20);
    let step = |name: &str, result, detail: Option<&str>| RunStep {
        name: name.into(),
        result,
        attempts: 1,
        duration_ms: 1200,
        detail: detail.map(str::to_string),
        log: None,
    };
    state.history.push(RunRecord {
        id: PAST_RUN.into(),
        plan_digest: "d".into(),
        inputs_digest: "i".into(),
        cycle: kcideploy::config::Cycle::Full,
        start_serial: 1,
        started_at: past,
        finished_at: Some(past + jiff::SignedDuration::from_mins(7)),
        result: RunResult::Failed,
        steps: vec![
            step("check", StepResult::Failed, Some("exit status 1")),
            step("deploy", StepResult::Success, None),
        ],
        scope: Default::default(),
        revisions: Default::default(),
        images: Default::default(),
        pins: Default::default(),
    });
    state.exclusions.push(Exclusion {
        id: "x1".into(),
        repo: "core".into(),
        change: "staging-f-bad".into(),
        head: bad_head.into(),
        reason: ExclusionCause::Blamed,
        step: "check".into(),
        detail: "breaks check (bisected in 2 rounds)".into(),
        log_tail: Some("error: f is not allowed\n".into()),
        at: past,
        run_id: PAST_RUN.into(),
    });
    let state_path = config.state_path();
    let logs = state_path
        .parent()
        .expect("dir")
        .join("runs/staging")
        .join(PAST_RUN);
    std::fs::create_dir_all(&logs).expect("logs");
    std::fs::write(
        logs.join("check.log"),
        "past failure: <b>not bold</b>\nexit 1\n",
    )
    .expect("log");
    std::fs::write(logs.join("deploy.log"), "deployed the past\n").expect("log");
    kcideploy::state::LocalState::new(state_path)
        .write(&mut state)
        .expect("state");
}

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard")
}

fn state_of(b: &Browser, selector: &str) -> String {
    b.eval(&format!(
        "var e=document.querySelector({}); return e ? e.getAttribute('data-state') : null;",
        serde_json::json!(selector)
    ))
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// The deploy is running: `check` failed, `deploy` runs.
fn start_deploy(sc: &Scenario) -> Server {
    let server = Server::start(&sc.plan);
    assert_eq!(
        server
            .post("pull_request", "d-1", &fixture("pull_request.opened"))
            .0,
        202
    );
    server.wait_for("check failed and deploy running", PATIENCE, |s| {
        s["running"]["steps"]["check"]["state"] == "failed"
            && s["running"]["steps"]["deploy"]["state"] == "running"
    });
    server
}

#[test]
fn the_dashboard_shows_a_deploy_in_a_browser_and_updates_it_live() {
    if let Some(reason) = webdriver::unavailable() {
        eprintln!("skipped: {reason}");
        return;
    }
    let sc = scenario();
    let server = start_deploy(&sc);
    let b = Browser::start(1280, 1000, true);
    b.open(&server.url);
    b.wait_for("the steps table", PATIENCE, |b| {
        b.text_of("#step-deploy").is_some()
    });

    // Now: the failed step with its log tail, the running one with its live log.
    assert_eq!(state_of(&b, "#step-check"), "failed");
    let check = b.text_of("#step-check").unwrap_or_default();
    assert!(check.contains("error: a: 2 is not allowed"), "{check}");
    assert_eq!(state_of(&b, "#step-deploy"), "running");
    b.wait_for("the running step's log", PATIENCE, |b| {
        b.text_of("#step-deploy")
            .is_some_and(|t| t.contains("deploying to staging"))
    });
    assert_eq!(state_of(&b, "#step-verify"), "waiting");
    let graph = b.text_of(".graph").unwrap_or_default();
    assert!(
        graph.contains("verify") && graph.contains("after deploy"),
        "{graph}"
    );
    let now = b.text_of("#now").unwrap_or_default();
    assert!(
        now.contains("partial cycle") && now.contains("Codertocat/Hello-World#2"),
        "{now}"
    );

    // Changes: each left out with its reason.
    for (change, state, why) in [
        ("staging-a-fix", "deploying", ""),
        ("staging-b-conflict", "out: conflict", "config/a.yaml"),
        ("staging-c-untrusted", "out: untrusted", "eve@example.net"),
        ("staging-d-stale", "out: stale", ""),
        ("staging-e-skipped", "out: skip_list", ""),
        ("staging-f-bad", "out: blamed", "check"),
    ] {
        let sel = format!("#changes tr[data-change='{change}']");
        assert_eq!(state_of(&b, &sel), state, "{change}:\n{}", b.text());
        let row = b.text_of(&sel).unwrap_or_default();
        assert!(row.contains(why), "{change}: {row}");
    }
    let fix = b
        .text_of("#changes tr[data-change='staging-a-fix']")
        .unwrap_or_default();
    assert!(
        fix.contains("<img src=x") && fix.contains("^[[31mred"),
        "{fix}"
    );
    assert_eq!(
        b.eval("return window.pwned === undefined;"),
        true,
        "the title ran"
    );
    let link = b.eval(
        "return document.querySelector(\"#changes tr[data-change='staging-a-fix'] a\").href;",
    );
    assert_eq!(
        link,
        "https://github.com/Codertocat/Hello-World/tree/staging-a-fix"
    );

    // Why not yet, exclusions, history, in words.
    let why = b.text_of("#why").unwrap_or_default();
    assert!(
        why.contains("Full cycle allowed from") && why.contains("Restart budget used up"),
        "{why}"
    );
    let excl = b.text_of("#exclusions").unwrap_or_default();
    assert!(
        excl.contains("staging-f-bad") && excl.contains("error: f is not allowed"),
        "{excl}"
    );
    assert!(b.text_of("#history").unwrap_or_default().contains(PAST_RUN));

    // Nothing from elsewhere, no secret.
    let outside = b.eval(
        "return document.querySelectorAll('script[src],link[rel=stylesheet],img,iframe,object').length \
         + performance.getEntriesByType('resource').filter(r => !r.name.startsWith(location.origin)).length;",
    );
    assert_eq!(outside, 0, "external assets");
    assert!(
        !b.eval("return document.documentElement.outerHTML;")
            .to_string()
            .contains(SECRET)
    );
    b.fit_height(1280);
    b.screenshot(&shots().join("now-deploying.png"));
    if std::env::var_os("KCIDEPLOY_README_SCREENSHOT").is_some() {
        b.screenshot(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png"));
    }

    // Without JavaScript the page refreshes itself.
    let plain = Browser::start(1280, 1000, false);
    plain.open(&server.url);
    assert_eq!(state_of(&plain, "#step-deploy"), "running");

    // Live: running → success without a reload.
    b.eval("window.kcMarker = 42; return null;");
    std::fs::write(&sc.go, "").expect("go");
    b.wait_for("deploy done, live", PATIENCE, |b| {
        matches!(state_of(b, "#step-deploy").as_str(), "success")
    });
    assert_eq!(
        b.eval("return window.kcMarker;"),
        42,
        "the page was reloaded"
    );
    plain.wait_for("deploy done, after a refresh", PATIENCE, |p| {
        state_of(p, "#step-deploy") == "success"
    });
    b.screenshot(&shots().join("now-after.png"));
    drop(plain);

    // A phone: nothing wider than the screen.
    b.wait_for("the deploy's end", PATIENCE, |b| {
        b.text_of("#last").is_some()
    });
    b.set_size(390, 844);
    b.open(&server.url);
    let overflow = b.eval("return document.documentElement.scrollWidth - window.innerWidth;");
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "wider than a phone by {overflow}px"
    );
    b.screenshot(&shots().join("phone.png"));
    b.set_size(1280, 1000);

    // History and a run's page with every step's log.
    b.open(&format!("{}/runs", server.url));
    let row = b
        .text_of(&format!("tr[data-run='{PAST_RUN}']"))
        .unwrap_or_default();
    assert!(
        row.contains("failed") && row.contains("check") && row.contains("full"),
        "{row}"
    );
    let latest = b.text_of("#history tbody tr").unwrap_or_default();
    assert!(
        latest.contains("Codertocat/Hello-World#2"),
        "the trigger of the latest: {latest}"
    );
    b.screenshot(&shots().join("history.png"));
    b.open(&format!("{}/runs/{PAST_RUN}", server.url));
    let check = b.text_of("#step-check").unwrap_or_default();
    assert!(
        check.contains("past failure: <b>not bold</b>") && check.contains("exit status 1"),
        "{check}"
    );
    assert!(
        b.text_of("#step-deploy")
            .unwrap_or_default()
            .contains("deployed the past")
    );
    b.screenshot(&shots().join("run.png"));
    drop(b);
    assert_eq!(server.terminate(), 0);
    drop(sc.fx);
}

/// GET with headers, no redirects followed: status, headers, body.
fn fetch(url: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("client");
        let mut req = client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("send");
        let (code, h) = (resp.status().as_u16(), resp.headers().clone());
        (code, h, resp.text().await.unwrap_or_default())
    })
}

#[test]
fn the_status_token_protects_every_page_and_no_page_shows_a_secret() {
    const TOKEN: &str = "s3cret-status-token";
    let sc = scenario();
    let text = std::fs::read_to_string(&sc.plan).expect("plan");
    std::fs::write(
        &sc.plan,
        text.replace(
            "notify: false\n",
            "notify: false\nserver: { status_token_env: TEST_STATUS_TOKEN }\n",
        ),
    )
    .expect("plan");
    let server = Server::start_with_env(&sc.plan, &[], &[("TEST_STATUS_TOKEN", TOKEN)]);
    let pages = [
        "/",
        "/status",
        "/runs",
        &format!("/runs/{PAST_RUN}"),
        "/events",
    ];
    for page in pages {
        let url = format!("{}{page}", server.url);
        assert_eq!(fetch(&url, &[]).0, 401, "{page} without the token");
        assert_eq!(
            fetch(&format!("{url}?token=wrong"), &[]).0,
            401,
            "{page}, wrong token"
        );
        assert_eq!(
            fetch(&url, &[("cookie", "kcideploy_status=wrong")]).0,
            401,
            "{page}, wrong cookie"
        );
    }
    assert_eq!(fetch(&format!("{}/healthz", server.url), &[]).0, 200);
    // The token once: a cookie and the same page without it in the address.
    let (code, headers, _) = fetch(&format!("{}/runs?token={TOKEN}", server.url), &[]);
    assert_eq!(code, 303);
    assert_eq!(headers["location"], "/runs");
    let cookie = headers["set-cookie"].to_str().expect("cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().expect("pair").to_string();
    for page in &pages[..4] {
        let (code, _, body) = fetch(&format!("{}{page}", server.url), &[("cookie", &cookie)]);
        assert_eq!(code, 200, "{page} with the cookie");
        assert!(
            !body.contains(TOKEN) && !body.contains(SECRET),
            "{page} shows a secret"
        );
    }
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        fetch(
            &format!("{}/status", server.url),
            &[("authorization", &bearer)]
        )
        .0,
        200
    );
    assert!(!server.log().contains(TOKEN), "the token is never logged");
}

#[test]
fn pages_are_open_without_a_token_and_an_unknown_run_is_404() {
    let sc = scenario();
    let server = Server::start(&sc.plan);
    let (code, _, body) = fetch(&server.url, &[]);
    assert_eq!(code, 200);
    // Without JavaScript: a plain refresh; styles and script inline.
    assert!(
        body.contains("<noscript><meta http-equiv=\"refresh\""),
        "{body}"
    );
    assert!(!body.contains("<link") && !body.contains("src="), "{body}");
    let (code, _, body) = fetch(&format!("{}/runs/nope", server.url), &[]);
    assert_eq!(code, 404, "{body}");
    let (code, _, body) = fetch(&format!("{}/runs/..%2Fx", server.url), &[]);
    assert_eq!(code, 404, "{body}");
    assert_eq!(fetch(&server.url, &[("accept", "text/html")]).0, 200);
}
