//! `ssh://user@host[:port]` Docker daemons, as the docker CLI reaches them: each connection
//! is `ssh ... host docker system dial-stdio`, speaking the daemon's HTTP API over the ssh
//! process's stdin and stdout. Connections are pooled by hyper; an ssh process ends with its
//! connection, or when kcideploy exits (its stdin closes): no master process outlives a run.
//! ssh runs with `BatchMode=yes` (no prompt: a key from the agent or `~/.ssh`, a host key
//! already in `known_hosts`) and `ConnectTimeout` of `timeouts.connect`; what it said on
//! stderr names the cause when a connection fails.

use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bollard::{BollardRequest, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Where and how to run `docker system dial-stdio`.
#[derive(Clone)]
struct Connector {
    /// `-l USER -p PORT ... -- HOST`.
    args: Vec<String>,
    /// What the last ssh process said on stderr.
    said: Arc<Mutex<String>>,
}

/// What ssh last said on stderr, for errors.
#[derive(Clone)]
pub struct Said(Arc<Mutex<String>>);

impl Said {
    /// Its last line, when it said something.
    pub fn last(&self) -> Option<String> {
        let text = self.0.lock().map(|t| t.clone()).unwrap_or_default();
        let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
        Some(line.trim().to_string())
    }
}

/// `ssh://[user@]host[:port]` → ssh's arguments up to the host.
fn ssh_args(address: &str, connect_timeout: u64) -> Vec<String> {
    let rest = address.trim_start_matches("ssh://").trim_end_matches('/');
    let (user, host_port) = match rest.rsplit_once('@') {
        Some((user, hp)) => (Some(user), hp),
        None => (None, rest),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() && !h.ends_with(':') => (h, Some(p)),
        _ => (host_port, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut args: Vec<String> = [
        "-o",
        "BatchMode=yes",
        "-o",
        &format!("ConnectTimeout={}", connect_timeout.max(1)),
        "-T",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(user) = user {
        args.extend(["-l".into(), user.to_string()]);
    }
    if let Some(port) = port {
        args.extend(["-p".into(), port.to_string()]);
    }
    args.extend(["--".into(), host.to_string()]);
    args
}

/// A client for the daemon at `address` (`ssh://...`), and what its ssh says.
pub fn client(address: &str, connect_timeout: u64, timeout: u64) -> Result<(Docker, Said), String> {
    let connector = Connector {
        args: ssh_args(address, connect_timeout),
        said: Arc::new(Mutex::new(String::new())),
    };
    let said = Said(connector.said.clone());
    let http = Arc::new(Client::builder(TokioExecutor::new()).build(connector));
    let transport = move |request: BollardRequest| {
        let http = Arc::clone(&http);
        async move {
            http.request(request)
                .await
                .map_err(bollard::errors::Error::from)
        }
    };
    let docker = Docker::connect_with_custom_transport(
        transport,
        Some("http://docker-over-ssh"),
        timeout,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|e| crate::support::text::error_chain(&e))?;
    Ok((docker, said))
}

impl tower_service::Service<hyper::Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let (args, said) = (self.args.clone(), self.said.clone());
        Box::pin(async move {
            let mut child = Command::new("ssh")
                .args(&args)
                .args(["docker", "system", "dial-stdio"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run ssh: {e}")))?;
            let missing = || std::io::Error::other("ssh without pipes");
            let stdin = child.stdin.take().ok_or_else(missing)?;
            let stdout = child.stdout.take().ok_or_else(missing)?;
            if let Some(mut stderr) = child.stderr.take() {
                tokio::spawn(async move {
                    let mut text = String::new();
                    let _ = stderr.read_to_string(&mut text).await;
                    if !text.trim().is_empty()
                        && let Ok(mut last) = said.lock()
                    {
                        *last = text;
                    }
                });
            }
            Ok(TokioIo::new(Stream {
                _child: child,
                stdin,
                stdout,
            }))
        })
    }
}

/// One connection: the ssh process's stdout to read, its stdin to write.
pub struct Stream {
    _child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::ssh_args;

    #[test]
    fn user_port_and_host_become_ssh_options() {
        let args = ssh_args("ssh://deploy@build.example.org:2222", 10);
        assert_eq!(
            args.join(" "),
            "-o BatchMode=yes -o ConnectTimeout=10 -T -l deploy -p 2222 -- build.example.org"
        );
        assert_eq!(
            ssh_args("ssh://build", 0).join(" "),
            "-o BatchMode=yes -o ConnectTimeout=1 -T -- build"
        );
        assert!(
            ssh_args("ssh://me@[::1]:22", 5)
                .join(" ")
                .ends_with("-l me -p 22 -- ::1")
        );
    }
}
