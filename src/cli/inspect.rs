//! Verbs that only read: validate, coverage, graph, schema, show, completions, man.

use std::io::Write;
use std::path::Path;

use miette::{IntoDiagnostic, Result, WrapErr};

use super::args::{Cli, CoverageArgs};
use super::plan::{read_saved_plan, to_json};
use crate::config::Config;
use crate::exit::ExitStatus;
use crate::planner;
use crate::workspace::Workspace;

/// Check a plan file; `strict`: also its coverage (offline or not, and the cache directory).
pub fn validate(file: &Path, strict: Option<(bool, Option<&Path>)>) -> Result<ExitStatus> {
    let config = Config::load(file)?;
    config
        .warnings()
        .iter()
        .for_each(|w| eprintln!("warning: {w}"));
    let f = &config.file;
    println!(
        "{}: valid plan file `{}` ({} repo(s), {} component(s), {} step(s))",
        file.display(),
        f.name,
        f.repos.len(),
        f.components.len(),
        f.steps.len()
    );
    let Some((offline, cache_dir)) = strict else {
        return Ok(ExitStatus::Success);
    };
    let ws = Workspace::load(file, cache_dir)?;
    let report = ws.coverage(offline, jiff::Timestamp::now())?;
    print!("{}", planner::coverage::render(&report));
    Ok(coverage_status(&report))
}

/// `coverage`: every file of each repo in a component or ignored with a reason.
pub fn coverage(args: CoverageArgs) -> Result<ExitStatus> {
    let ws = Workspace::load(&args.file, args.cache_dir.as_deref())?;
    let report = ws.coverage(args.offline, jiff::Timestamp::now())?;
    let text = if args.json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&report).into_diagnostic()?
        )
    } else {
        planner::coverage::render(&report)
    };
    // A closed pipe (`| head`) is not an error.
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(coverage_status(&report))
}

fn coverage_status(report: &[planner::coverage::RepoCoverage]) -> ExitStatus {
    if report.iter().all(|r| r.uncovered.is_empty()) {
        ExitStatus::Success
    } else {
        ExitStatus::Uncovered
    }
}

pub fn graph(file: &Path, plan: Option<&Path>) -> Result<ExitStatus> {
    let config = Config::load(file)?;
    let saved = plan.map(read_saved_plan).transpose()?;
    print!("{}", planner::render::dot(&config, saved.as_ref()));
    Ok(ExitStatus::Success)
}

pub fn schema(reference: bool, included: bool) -> Result<ExitStatus> {
    if reference {
        print!("{}", crate::config::schema::reference_markdown());
    } else if included {
        println!("{}", crate::config::schema::include_schema_json());
    } else {
        println!("{}", crate::config::schema::plan_schema_json());
    }
    Ok(ExitStatus::Success)
}

pub fn show(planfile: &Path, json: bool, color: bool) -> Result<ExitStatus> {
    let plan = read_saved_plan(planfile)?;
    if json {
        println!("{}", to_json(&plan)?);
    } else {
        print!("{}", planner::render::text(&plan, color));
    }
    Ok(ExitStatus::Success)
}

pub fn completions(shell: clap_complete::Shell) -> Result<ExitStatus> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kcideploy", &mut out);
    // A closed pipe (`| head`) is not an error.
    let _ = std::io::stdout().write_all(&out);
    Ok(ExitStatus::Success)
}

/// The man page on stdout, or with `dir` one page per command and subcommand written there
/// (`kcideploy.1`, `kcideploy-plan.1`, `kcideploy-state-show.1`, ...).
pub fn man(dir: Option<&Path>) -> Result<ExitStatus> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let Some(dir) = dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut out)
            .into_diagnostic()?;
        let _ = std::io::stdout().write_all(&out);
        return Ok(ExitStatus::Success);
    };
    std::fs::create_dir_all(dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    write_pages(&cmd, "kcideploy", dir, &mut written)?;
    println!("Wrote {} man pages to {}.", written.len(), dir.display());
    Ok(ExitStatus::Success)
}

/// `cmd`'s page as `<name>.1`, then its subcommands' as `<name>-<sub>.1`.
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<String>,
) -> Result<()> {
    let page = cmd
        .clone()
        .name(name.to_string())
        .bin_name(name.replace('-', " "));
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .into_diagnostic()?;
    let path = dir.join(format!("{name}.1"));
    crate::support::write_atomic(&path, &out)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", path.display()))?;
    written.push(name.to_string());
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
