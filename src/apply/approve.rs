//! Confirmation of `approve: true` steps. Asking never blocks other steps: the executor awaits
//! an [`Approver`]'s answer as one more event, while the steps already running go on.

use std::future::Future;
use std::io::{BufRead, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// What the approver is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequest {
    pub plan: String,
    pub run_id: String,
    pub step: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approved,
    /// Not run, and why (`not approved`, `awaiting approval: ...`); the run stops before it
    /// and a later apply resumes there.
    Refused(String),
}

/// A future answer.
pub type Answer = Pin<Box<dyn Future<Output = Decision> + Send + 'static>>;

/// Decides whether an `approve: true` step may run. An implementation must not block the
/// calling thread (use `spawn_blocking` for blocking I/O); the server's bot can implement
/// this to ask on the PR.
pub trait Approver: Send + Sync {
    fn approve(&self, request: ApprovalRequest) -> Answer;
}

/// `-auto-approve`: every step runs.
pub struct AutoApprove;

impl Approver for AutoApprove {
    fn approve(&self, _: ApprovalRequest) -> Answer {
        Box::pin(async { Decision::Approved })
    }
}

/// Nobody to ask (no terminal, a service): the step waits for a later apply with
/// `-auto-approve`.
pub struct AwaitApproval;

/// Why an [`AwaitApproval`] step did not run.
pub const AWAITING: &str = "awaiting approval: apply again with -auto-approve, or on a terminal";

impl Approver for AwaitApproval {
    fn approve(&self, _: ApprovalRequest) -> Answer {
        Box::pin(async { Decision::Refused(AWAITING.into()) })
    }
}

type Input = Box<dyn BufRead + Send>;
type Output = Box<dyn Write + Send>;

/// Asks on a terminal (or any reader and writer), one question at a time, on a blocking
/// thread; only `yes` approves.
pub struct TerminalPrompt {
    io: Arc<Mutex<(Input, Output)>>,
}

impl TerminalPrompt {
    /// Ask on stdin/stdout.
    pub fn stdio() -> TerminalPrompt {
        TerminalPrompt::new(
            Box::new(std::io::BufReader::new(std::io::stdin())),
            Box::new(std::io::stdout()),
        )
    }

    pub fn new(input: Input, output: Output) -> TerminalPrompt {
        TerminalPrompt {
            io: Arc::new(Mutex::new((input, output))),
        }
    }
}

impl Approver for TerminalPrompt {
    fn approve(&self, request: ApprovalRequest) -> Answer {
        let io = self.io.clone();
        Box::pin(async move {
            let asked = tokio::task::spawn_blocking(move || {
                let Ok(mut io) = io.lock() else {
                    return Decision::Refused("not approved: the prompt failed before".into());
                };
                let (input, output) = &mut *io;
                let _ = write!(
                    output,
                    "\nStep `{}` needs approval. Run it? Only 'yes' will be accepted: ",
                    request.step
                );
                let _ = output.flush();
                let mut answer = String::new();
                match input.read_line(&mut answer) {
                    Ok(_) if answer.trim() == "yes" => Decision::Approved,
                    _ => Decision::Refused("not approved".into()),
                }
            })
            .await;
            asked.unwrap_or_else(|e| Decision::Refused(format!("not approved: {e}")))
        })
    }
}

/// The approver `-auto-approve` and the terminal call for: auto-approve, else a prompt when
/// stdin is a terminal, else wait for a later apply.
pub fn for_options(auto_approve: bool) -> Arc<dyn Approver> {
    use std::io::IsTerminal;
    if auto_approve {
        Arc::new(AutoApprove)
    } else if std::io::stdin().is_terminal() {
        Arc::new(TerminalPrompt::stdio())
    } else {
        Arc::new(AwaitApproval)
    }
}
