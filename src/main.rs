use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let on_terminal = std::io::stderr().is_terminal();
    // Logs and CI output keep each message on one line, so grep finds file:line:col.
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .wrap_lines(on_terminal)
                .build(),
        )
    }));
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
