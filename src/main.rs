use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = kcideploy::cli::normalize_args(std::env::args());
    let cli = kcideploy::cli::Cli::parse_from(args);
    match kcideploy::cli::run(cli) {
        Ok(status) => ExitCode::from(status.code()),
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(kcideploy::exit::ExitStatus::Error.code())
        }
    }
}
