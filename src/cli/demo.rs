//! `kcideploy demo`: local repos with pending branches, a seeded state, and their plan.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};
use jiff::Timestamp;
use miette::{Context, IntoDiagnostic, Result};

use crate::exit::ExitStatus;
use crate::gitops::scratch::{Edit, commit, set_branch};
use crate::planner::CycleRequest;
use crate::state::{ChangeRef, CycleTimes, RepoState, State};
use crate::workspace::{PlanRequest, Workspace};

/// The embedded demo plan file.
pub const DEMO_PLAN: &str = include_str!("../../plans/demo.yaml");

const ALICE: (&str, &str) = ("Alice", "alice@example.org");
const BOB: (&str, &str) = ("Bob", "bob@example.org");
const MALLORY: (&str, &str) = ("Mallory", "mallory@example.net");

/// A demo branch: name, author, commit time, edits, message.
type PendingBranch<'a> = (&'a str, (&'a str, &'a str), i64, &'a [Edit<'a>], &'a str);

/// What [`build`] made.
pub struct Demo {
    pub dir: PathBuf,
    pub plan_file: PathBuf,
}

/// Create the demo in `dir`: two bare repos with `main` and pending `pr/*` branches, the plan
/// file, and a state recording both `main`s as deployed two hours before `now`.
pub fn build(dir: &Path, now: Timestamp) -> Result<Demo> {
    let t = now.as_second();
    let repos = dir.join("repos");
    std::fs::create_dir_all(&repos).into_diagnostic()?;
    let main = pipeline_repo(&repos, t)?;
    let api_main = api_repo(&repos, t)?;
    let plan_file = plan_and_state(dir, main, api_main, t)?;
    Ok(Demo {
        dir: dir.to_path_buf(),
        plan_file,
    })
}

const DAY: i64 = 86_400;

fn git(what: &str) -> String {
    format!("demo: cannot {what}")
}

/// kernelci-pipeline: `main` and the pending branches, one for each reason a change is
/// merged or left out. Returns `main`.
fn pipeline_repo(repos: &Path, t: i64) -> Result<Oid> {
    let day = DAY;
    let pipeline = Repository::init_bare(repos.join("kernelci-pipeline.git"))
        .into_diagnostic()
        .wrap_err(git("create kernelci-pipeline"))?;
    let main = commit(
        &pipeline,
        None,
        &[
            ("README.md", Some("# kernelci-pipeline\n")),
            ("doc/setup.md", Some("How to set up the pipeline.\n")),
            (
                "config/pipeline.yaml",
                Some("trees:\n  mainline: {}\nlabs:\n  lava-collabora: {}\n"),
            ),
            ("config/jobs.yaml", Some("jobs:\n  baseline: {}\n")),
            ("src/trigger.py", Some("print('trigger')\n")),
            ("requirements.txt", Some("requests\n")),
            ("docker-compose.yaml", Some("services:\n  trigger: {}\n")),
        ],
        ALICE,
        t - 10 * day,
        "Initial pipeline",
    )
    .into_diagnostic()
    .wrap_err(git("commit"))?;
    let branches: Vec<PendingBranch<'_>> = vec![
        (
            "pr/1",
            ALICE,
            t - day,
            &[(
                "config/pipeline.yaml",
                Some("trees:\n  mainline: {}\n  next: {}\nlabs:\n  lava-collabora: {}\n"),
            )],
            "config: add the next tree",
        ),
        (
            "pr/2",
            MALLORY,
            t - day,
            &[("src/trigger.py", Some("print('pwned')\n"))],
            "trigger: improve",
        ),
        (
            "pr/3",
            BOB,
            t - day,
            &[(
                "config/pipeline.yaml",
                Some("trees:\n  mainline: {}\n  stable: {}\nlabs:\n  lava-collabora: {}\n"),
            )],
            "config: add the stable tree",
        ),
        (
            "pr/4",
            BOB,
            t - day,
            &[
                ("README.md", Some("# kernelci-pipeline\n\nSee doc/.\n")),
                ("doc/setup.md", Some("Set up.\n")),
            ],
            "doc: tidy up",
        ),
        (
            "pr/6",
            ALICE,
            t - 30 * day,
            &[("config/jobs.yaml", Some("jobs: {}\n"))],
            "jobs: old experiment",
        ),
        (
            "pr/10",
            ALICE,
            t - 3600,
            &[("src/trigger.py", Some("print('trigger v2')\n"))],
            "trigger: retry on timeouts",
        ),
        (
            "pr/wip-rework",
            ALICE,
            t - 3600,
            &[("src/new.py", Some("pass\n"))],
            "WIP",
        ),
    ];
    set_branch(&pipeline, "main", main).into_diagnostic()?;
    for (name, author, time, edits, message) in branches {
        let head = commit(&pipeline, Some(main), edits, author, time, message)
            .into_diagnostic()
            .wrap_err(git("commit"))?;
        set_branch(&pipeline, name, head).into_diagnostic()?;
    }
    Ok(main)
}

/// kernelci-api: `main` and one pending change to its tests. Returns `main`.
fn api_repo(repos: &Path, t: i64) -> Result<Oid> {
    let day = DAY;
    let api = Repository::init_bare(repos.join("kernelci-api.git"))
        .into_diagnostic()
        .wrap_err(git("create kernelci-api"))?;
    let api_main = commit(
        &api,
        None,
        &[
            ("api/main.py", Some("app = 'api'\n")),
            (
                "docker-compose.yaml",
                Some("services:\n  api: {}\n  db: {}\n  redis: {}\n"),
            ),
            ("tests/test_api.py", Some("def test(): pass\n")),
        ],
        BOB,
        t - 10 * day,
        "Initial API",
    )
    .into_diagnostic()
    .wrap_err(git("commit"))?;
    set_branch(&api, "main", api_main).into_diagnostic()?;
    let api_pr = commit(
        &api,
        Some(api_main),
        &[("tests/test_api.py", Some("def test(): assert True\n"))],
        BOB,
        t - day,
        "tests: assert something",
    )
    .into_diagnostic()?;
    set_branch(&api, "pr/7", api_pr).into_diagnostic()?;
    Ok(api_main)
}

/// The plan file (the embedded demo plan), its schema, and a state recording both `main`s
/// as deployed two hours before `t`. Returns the plan file.
fn plan_and_state(dir: &Path, main: Oid, api_main: Oid, t: i64) -> Result<PathBuf> {
    let plan_file = dir.join("demo.yaml");
    let text = DEMO_PLAN.replace("../schemas/plan.schema.json", "plan.schema.json");
    std::fs::write(&plan_file, text).into_diagnostic()?;
    std::fs::write(
        dir.join("plan.schema.json"),
        crate::config::schema::plan_schema_json(),
    )
    .into_diagnostic()?;

    // Until `apply` records it, seed state as if both `main`s were deployed 2 hours ago.
    let config = crate::config::Config::load(&plan_file)?;
    let deployed = |oid: Oid| RepoState {
        deployed: oid.to_string(),
        base: Some(oid.to_string()),
        included: Vec::<ChangeRef>::new(),
        deployed_at: Timestamp::from_second(t - 7200).ok(),
    };
    let mut state = State::new();
    state
        .repos
        .insert("kernelci-pipeline".into(), deployed(main));
    state
        .repos
        .insert("kernelci-api".into(), deployed(api_main));
    state.cycles = CycleTimes {
        last_partial: Timestamp::from_second(t - 7200).ok(),
        last_full: Timestamp::from_second(t - 7200).ok(),
    };
    crate::state::Backend::open(&config)?.write(&mut state)?;
    Ok(plan_file)
}

/// `kcideploy demo`: plan, apply (real pushes into the local bare repos), plan again.
pub fn run(dir: Option<&Path>, color: bool) -> Result<ExitStatus> {
    let dir = match dir {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d).into_diagnostic()?.next().is_some() {
                miette::bail!(
                    "{} is not empty: give `kcideploy demo --dir` a new or empty directory",
                    d.display()
                );
            }
            std::fs::create_dir_all(d).into_diagnostic()?;
            d.to_path_buf()
        }
        None => tempfile::Builder::new()
            .prefix("kcideploy-demo-")
            .tempdir()
            .into_diagnostic()?
            .keep(),
    };
    let now = Timestamp::now();
    let demo = build(&dir, now)?;
    println!("Demo in {}:", demo.dir.display());
    println!("  repos/kernelci-pipeline.git  main + pr/1 pr/2 pr/3 pr/4 pr/6 pr/10 pr/wip-rework");
    println!("  repos/kernelci-api.git       main + pr/7");
    println!("  state: both `main`s deployed 2 hours ago (full cycle)\n");
    println!("$ kcideploy plan -f {}\n", demo.plan_file.display());
    let ws = Workspace::load(&demo.plan_file, None)?;
    let request = PlanRequest {
        cycle: CycleRequest::Auto,
        now: Some(now),
        ..Default::default()
    };
    let (_, plan) = ws.fetch_and_plan(&request)?;
    print!("{}", crate::planner::render::text(&plan, color));

    println!(
        "\n$ kcideploy apply -f {} -auto-approve\n",
        demo.plan_file.display()
    );
    let lock = ws.backend.lock("apply", std::time::Duration::ZERO)?;
    let mut reporter = crate::apply::events::PlainReporter::default();
    let report = crate::deploy::run_apply(
        ws.config.clone(),
        plan,
        &ws.backend,
        &lock,
        Default::default(),
        &mut reporter,
    )?;
    drop(lock);
    if !report.succeeded() {
        miette::bail!("the demo's apply did not succeed: {}", report.result);
    }
    let pushed = Repository::open_bare(demo.dir.join("repos/kernelci-pipeline.git"))
        .and_then(|r| r.refname_to_id("refs/heads/staging.kernelci.org"))
        .map(|o| o.to_string())
        .unwrap_or_else(|_| "(not pushed)".into());
    println!(
        "\nrepos/kernelci-pipeline.git: staging.kernelci.org is now {}",
        crate::support::text::short(&pushed)
    );

    println!("\n$ kcideploy plan -f {}\n", demo.plan_file.display());
    let mut ws = ws;
    ws.reload_state()?;
    let (_, again) = ws.fetch_and_plan(&PlanRequest::default())?;
    print!("{}", crate::planner::render::text(&again, color));
    println!(
        "\nTry: kcideploy state history -f {0}\n     kcideploy plan -f {0} --cycle full",
        demo.plan_file.display()
    );
    Ok(ExitStatus::Success)
}
