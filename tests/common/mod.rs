//! Test helpers: real bare git repos made with git2, plan files in temp dirs, planning at a
//! fixed time.
#![allow(dead_code)]

pub mod postgres;

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};
use jiff::Timestamp;
use kcideploy::config::Config;
use kcideploy::gitops::scratch::{self, Edit};
use kcideploy::planner::{self, CycleRequest, Plan};
use kcideploy::state::{Backend, RepoState, State};
use kcideploy::workspace::{PlanRequest, Workspace};

/// "Now" in every test: a fixed instant (late November 2026). Every date a test makes is
/// relative to it, and every binary run that judges dates gets it with `--at` ([`at()`]);
/// tests/clock.rs fails on absolute fixture dates that the real clock would reach.
pub const NOW: i64 = 1_795_507_200;
pub const DAY: i64 = 86_400;
pub const ALICE: (&str, &str) = ("Alice", "alice@example.org");
pub const BOB: (&str, &str) = ("Bob", "bob@example.org");
pub const EVE: (&str, &str) = ("Eve", "eve@example.net");

pub fn now() -> Timestamp {
    Timestamp::from_second(NOW).expect("valid time")
}

/// `secs` (Unix seconds) as RFC 3339, the way GitHub writes times.
pub fn rfc3339(secs: i64) -> String {
    Timestamp::from_second(secs)
        .expect("valid time")
        .to_string()
}

/// The test clock as the binary's `--at` argument.
pub fn at() -> String {
    rfc3339(NOW)
}

/// A temp dir holding bare "remote" repos and a plan file.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// The database its plan files keep state in, with `KCIDEPLOY_TEST_BACKEND=postgres`
    /// (a new one in the binary's cluster, [`postgres::shared`]).
    pub db: Option<String>,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
            db: postgres::selected().then(|| postgres::shared().database()),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A bare repo `repos/<name>.git` with `main` holding `files` (committed 10 days ago).
    pub fn repo(&self, name: &str, files: &[Edit<'_>]) -> Remote {
        let path = self.path().join("repos").join(format!("{name}.git"));
        let repo = Repository::init_bare(&path).expect("init bare");
        let main =
            scratch::commit(&repo, None, files, ALICE, NOW - 10 * DAY, "initial").expect("commit");
        scratch::set_branch(&repo, "main", main).expect("branch");
        Remote { repo, path, main }
    }

    /// Write the plan file and return its path. Unless the text says where state lives, it
    /// lives in `.kcideploy/` beside the plan file, inside the fixture: never in the real
    /// `~/.local/state`, the default.
    pub fn plan_file(&self, text: &str) -> PathBuf {
        let path = self.path().join("plan.yaml");
        std::fs::write(&path, with_state(text, self.db.as_deref())).expect("write plan file");
        path
    }

    pub fn config(&self, text: &str) -> Config {
        let path = self.plan_file(text);
        match Config::load(&path) {
            Ok(c) => c,
            Err(e) => panic!("plan file does not load: {:?}", miette::Report::new(e)),
        }
    }

    /// Record `deployed` (repo → SHA) in the plan's state file.
    pub fn deploy(
        &self,
        config: &Config,
        deployed: &[(&str, Oid)],
        last_full: Option<i64>,
    ) -> State {
        let backend = Backend::open(config).expect("backend");
        let mut state = backend.read().expect("read state").unwrap_or_default();
        for (repo, sha) in deployed {
            state.repos.insert(
                repo.to_string(),
                RepoState {
                    deployed: sha.to_string(),
                    base: None,
                    included: vec![],
                    deployed_at: None,
                },
            );
        }
        state.cycles.last_full = last_full.map(|t| Timestamp::from_second(t).expect("ts"));
        backend.write(&mut state).expect("write state");
        state
    }

    /// The state backend of plan `name` as [`Fixture::plan_file`] writes it: the file
    /// `.kcideploy/<name>.state.json`, or the fixture's database.
    pub fn backend(&self, name: &str) -> Backend {
        let path = self.path().join(format!(".kcideploy/{name}.state.json"));
        let setting = match &self.db {
            None => kcideploy::config::BackendSetting::Local,
            Some(url) => kcideploy::config::backend::parse(url, "test", true).expect("url"),
        };
        Backend::of(setting, name, path).expect("backend")
    }

    /// Fetch and plan at [`NOW`].
    pub fn plan(&self, config: &Config, cycle: CycleRequest) -> Plan {
        self.plan_at(config, cycle, now())
    }

    pub fn plan_at(&self, config: &Config, cycle: CycleRequest, at: Timestamp) -> Plan {
        let ws = Workspace::load(&config.path, Some(&self.path().join("cache"))).expect("load");
        let request = PlanRequest {
            cycle,
            now: Some(at),
            ..Default::default()
        };
        ws.fetch_and_plan(&request).expect("plan").1
    }
}

/// A bare repo standing in for a remote.
pub struct Remote {
    pub repo: Repository,
    pub path: PathBuf,
    pub main: Oid,
}

impl Remote {
    /// Branch `name` off `main` with one commit of `edits` by `author`, one day old.
    pub fn branch(&self, name: &str, author: (&str, &str), edits: &[Edit<'_>]) -> Oid {
        self.branch_at(name, author, NOW - DAY, edits)
    }

    pub fn branch_at(
        &self,
        name: &str,
        author: (&str, &str),
        time: i64,
        edits: &[Edit<'_>],
    ) -> Oid {
        let head = scratch::commit(
            &self.repo,
            Some(self.main),
            edits,
            author,
            time,
            &format!("{name}: change"),
        )
        .expect("commit");
        scratch::set_branch(&self.repo, name, head).expect("branch");
        head
    }

    /// Add a commit on `main`.
    pub fn advance_main(&mut self, edits: &[Edit<'_>]) -> Oid {
        let head = scratch::commit(
            &self.repo,
            Some(self.main),
            edits,
            BOB,
            NOW - 2 * DAY,
            "main moves",
        )
        .expect("commit");
        scratch::set_branch(&self.repo, "main", head).expect("branch");
        self.main = head;
        head
    }

    /// The content of `path` in commit `sha` (a staging revision lives in the cache repo).
    pub fn file_at(cache: &Path, sha: &str, path: &str) -> Option<String> {
        let repo = Repository::open_bare(cache).ok()?;
        let commit = repo.find_commit(Oid::from_str(sha).ok()?).ok()?;
        let entry = commit.tree().ok()?.get_path(Path::new(path)).ok()?;
        let blob = repo.find_blob(entry.id()).ok()?;
        Some(String::from_utf8_lossy(blob.content()).into_owned())
    }
}

/// Names of the steps that run.
pub fn runs(plan: &Plan) -> Vec<&str> {
    plan.steps
        .iter()
        .filter(|s| s.action == planner::Action::Run)
        .map(|s| s.name.as_str())
        .collect()
}

/// The real binary, without colours.
pub fn kcideploy() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("kcideploy").expect("binary");
    cmd.env("NO_COLOR", "1");
    // A plan file without `state.path` keeps state under the build's scratch directory.
    cmd.env(
        "XDG_STATE_HOME",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("xdg-state"),
    );
    cmd
}

/// `text` with `state: { path: .kcideploy/<name>.state.json }` added, unless it has `state:`.
pub fn with_local_state(text: &str) -> String {
    with_state(text, None)
}

/// `text` with `state: { path: .kcideploy/<name>.state.json }` added, and `backend: <db>`
/// in it when `db` is given, unless it has `state:`.
pub fn with_state(text: &str, db: Option<&str>) -> String {
    let backend = db
        .map(|d| format!(", backend: \"{d}\""))
        .unwrap_or_default();
    let has_state = text.lines().any(|l| l.starts_with("state:"));
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("name:"))
        .map(|n| n.trim().trim_matches(['"', '\'']));
    match name {
        // Right after `name:`, so tests that append steps to the file still end in `steps:`.
        Some(name) if !has_state => text
            .lines()
            .map(|l| {
                if l.starts_with("name:") {
                    format!("{l}\nstate: {{ path: .kcideploy/{name}.state.json{backend} }}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect(),
        _ => text.to_string(),
    }
}

/// The state of plan `name` whose file says `state: { path: .kcideploy/<name>.state.json }`
/// (as [`Fixture::plan_file`] writes it).
pub fn state_of(fx: &Fixture, name: &str) -> State {
    fx.backend(name)
        .read()
        .expect("state parses")
        .expect("state exists")
}

/// Plan `t` with repo `pipe` (pending `pr/*`), component `config` (`config/**`) and `steps`.
pub fn plan_with_steps(steps: &str) -> String {
    format!(
        r#"version: 1
name: t
repos:
  pipe: {{ url: repos/pipe.git, pending: {{ branches: "pr/*" }} }}
components:
  config: {{ repo: pipe, paths: ["config/**"] }}
steps:
{steps}"#
    )
}

/// A bare repo `repos/pipe.git` whose `main` holds `docker/Dockerfile` (`dockerfile`) and
/// `docker/busybox` (the static busybox of `KCIDEPLOY_TEST_BUSYBOX`, or /bin/busybox): a
/// build context for images made `FROM scratch`.
pub fn busybox_context(fx: &Fixture, dockerfile: &str) -> Remote {
    let bb_path = std::env::var("KCIDEPLOY_TEST_BUSYBOX").unwrap_or_else(|_| "/bin/busybox".into());
    let bb =
        std::fs::read(&bb_path).unwrap_or_else(|e| panic!("a static busybox at {bb_path}: {e}"));
    let path = fx.path().join("repos/pipe.git");
    let repo = Repository::init_bare(&path).expect("init");
    let files: Vec<(&str, Option<&[u8]>)> = vec![
        ("docker/Dockerfile", Some(dockerfile.as_bytes())),
        ("docker/busybox", Some(&bb)),
    ];
    let main =
        scratch::commit(&repo, None, &files, ALICE, NOW - 10 * DAY, "initial").expect("commit");
    scratch::set_branch(&repo, "main", main).expect("branch");
    Remote { repo, path, main }
}

/// `kcideploy plan -refresh -detailed-exitcode --cycle partial -f PLAN`: exit code, stdout,
/// stderr.
pub fn refreshed_plan(plan: &Path) -> (i32, String, String) {
    output(
        kcideploy()
            .args([
                "plan",
                "-refresh",
                "-detailed-exitcode",
                "--cycle",
                "partial",
                "-f",
            ])
            .arg(plan),
    )
}

/// Exit code, stdout, stderr.
pub fn output(cmd: &mut assert_cmd::Command) -> (i32, String, String) {
    let out = cmd.output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Serve `app` on 127.0.0.1 in its own thread; returns the base URL.
pub fn serve(app: axum::Router) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let _ = tx.send(listener.local_addr().expect("addr"));
            let _ = axum::serve(listener, app).await;
        });
    });
    format!("http://{}", rx.recv().expect("server started"))
}

/// POST a webhook delivery as GitHub does; returns the status and body.
pub fn post_webhook(
    url: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: Option<String>,
) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let mut req = client
            .post(format!("{url}/webhook"))
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .body(body.to_vec());
        if let Some(sig) = signature {
            req = req.header("x-hub-signature-256", sig);
        }
        let resp = req.send().await.expect("send");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    })
}

/// GET a URL; returns the status and body.
pub fn get(url: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        match reqwest::get(url).await {
            Ok(resp) => (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            ),
            Err(e) => (0, e.to_string()),
        }
    })
}

/// The smallest useful plan file: repo `pipe` with `pr/*` branches pending, one component
/// `config` (`config/**`) and one `command` step `restart` on it.
pub const ONE_STEP_PLAN: &str = r#"version: 1
name: t
repos:
  pipe: { url: repos/pipe.git, pending: { branches: "pr/*" } }
components:
  config: { repo: pipe, paths: ["config/**"] }
steps:
  restart: { kind: command, on: [config], with: { run: ["true"] } }
"#;

/// A TCP server on 127.0.0.1 that accepts every connection and never answers (a remote that
/// hangs); `host:port`. Connections stay open until the test process ends.
pub fn silent_listener() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming() {
            open.push(stream);
        }
    });
    host
}
