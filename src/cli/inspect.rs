//! Verbs that only read: validate, graph, schema, show, completions, man.

use std::io::Write;
use std::path::Path;

use miette::{IntoDiagnostic, Result};

use super::args::Cli;
use super::plan::{read_saved_plan, to_json};
use crate::config::Config;
use crate::exit::ExitStatus;
use crate::planner;

pub fn validate(file: &Path) -> Result<ExitStatus> {
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
    Ok(ExitStatus::Success)
}

pub fn graph(file: &Path, plan: Option<&Path>) -> Result<ExitStatus> {
    let config = Config::load(file)?;
    let saved = plan.map(read_saved_plan).transpose()?;
    print!("{}", planner::render::dot(&config, saved.as_ref()));
    Ok(ExitStatus::Success)
}

pub fn schema(reference: bool) -> Result<ExitStatus> {
    if reference {
        print!("{}", crate::config::schema::reference_markdown());
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

pub fn man() -> Result<ExitStatus> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .into_diagnostic()?;
    let _ = std::io::stdout().write_all(&out);
    Ok(ExitStatus::Success)
}
