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
    // Warnings (rate-limit waits, retries) on stderr; RUST_LOG=debug for more.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
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
