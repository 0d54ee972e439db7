#![warn(clippy::too_many_lines)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use kcideploy::cli::{Cli, Command};
use kcideploy::exit::ExitStatus;

fn main() -> ExitCode {
    let args = kcideploy::cli::normalize_args(std::env::args());
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are answers, not errors.
            return ExitCode::from(if e.use_stderr() {
                ExitStatus::Usage.code()
            } else {
                ExitStatus::Success.code()
            });
        }
    };
    let on_terminal = std::io::stderr().is_terminal();
    let color = on_terminal && !cli.no_color && std::env::var_os("NO_COLOR").is_none();
    // Logs and CI output keep each message on one line, so grep finds file:line:col.
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .wrap_lines(on_terminal)
                .color(color)
                .build(),
        )
    }));
    // Warnings (rate-limit waits, retries) on stderr; RUST_LOG=debug for more. Colours only
    // on a terminal, and never with --no-color or NO_COLOR (journals and files get plain text).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .without_time()
        .try_init();
    if reads_only(&cli.command) {
        // Output piped into `head` ends quietly, as with other Unix tools, instead of a panic
        // on the closed pipe. Verbs that change things keep ignoring SIGPIPE: a reader going
        // away must not kill a deploy half-way, nor the server.
        // SAFETY: no other thread exists yet, and SIG_DFL is the default disposition.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    // The one tokio runtime. The command line runs on one of its blocking threads; what it
    // waits for (steps, HTTP, the server) runs on the runtime (kcideploy::support::rt).
    let runtime = match kcideploy::support::rt::build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            return ExitCode::from(ExitStatus::Error.code());
        }
    };
    let result = runtime
        .block_on(async { tokio::task::spawn_blocking(move || kcideploy::cli::run(cli)).await });
    // A terminal prompt still waiting for an answer (the run was stopped) does not hold the
    // exit.
    runtime.shutdown_background();
    match result {
        Ok(Ok(status)) => ExitCode::from(status.code()),
        Ok(Err(report)) => {
            eprintln!("{report:?}");
            ExitCode::from(ExitStatus::Error.code())
        }
        Err(e) => {
            eprintln!("kcideploy stopped unexpectedly: {e}");
            ExitCode::from(ExitStatus::Error.code())
        }
    }
}

/// Verbs that only print: a closed pipe may end them.
fn reads_only(command: &Command) -> bool {
    !matches!(
        command,
        Command::Apply(_)
            | Command::Run { .. }
            | Command::Serve { .. }
            | Command::Demo { .. }
            | Command::Man { dir: Some(_) }
            | Command::ForceUnlock { .. }
            | Command::Exclusions {
                action: Some(_),
                ..
            }
    )
}
