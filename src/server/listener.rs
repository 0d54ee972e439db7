//! The HTTP/1 accept loop of `serve`, hardened against clients that open connections and say
//! nothing: each connection must send its request headers within [`HEADER_TIMEOUT`], at most
//! [`MAX_CONNECTIONS`] are open at once (fewer if the open-file limit is lower), and the
//! open-file soft limit is raised to the hard limit at start. Bodies are limited by the
//! webhook handler ([`super::endpoint`]).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// A connection that has not sent its request headers within this is closed (hyper's
/// `header_read_timeout`; it also bounds how long a kept-alive connection may stay idle).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many connections at once, whatever the open-file limit allows.
pub const MAX_CONNECTIONS: usize = 4096;

/// Files kept free for everything else (state, queue, git, Docker) when the open-file
/// limit caps the connections.
const FILES_RESERVED: u64 = 256;

/// On stop, running requests get this long to finish.
const DRAIN: Duration = Duration::from_secs(10);

/// Raise the open-file soft limit to the hard limit; returns the soft limit now in force.
pub fn raise_open_files() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// How many connections may be open at once with `open_files` file descriptors.
pub fn connection_cap(open_files: u64) -> usize {
    let by_files = open_files.saturating_sub(FILES_RESERVED).max(16);
    usize::try_from(by_files)
        .unwrap_or(usize::MAX)
        .min(MAX_CONNECTIONS)
}

/// Serve `router` on `listener` until `stop` counts a signal, then let running requests
/// finish (at most [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    cap: usize,
    mut stop: watch::Receiver<u32>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(cap));
    let (closing_tx, closing) = watch::channel(0u32);
    tracing::info!("at most {cap} connections at once");
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: wait a
                    // little instead of spinning.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let mut closing = closing.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => log_connection_error(r),
                _ = stopped(&mut closing) => {
                    conn.as_mut().graceful_shutdown();
                    log_connection_error(conn.await);
                }
            }
        });
    }
    let _ = closing_tx.send(1);
    // Every slot free again: every connection has ended.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN:?}: closed");
    }
    Ok(())
}

/// Wait until `stop` counts a signal (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<u32>) {
    let _ = stop.wait_for(|n| *n > 0).await;
}

fn log_connection_error(result: Result<(), hyper::Error>) {
    if let Err(e) = result
        && !e.is_incomplete_message()
    {
        tracing::debug!("connection: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_files_for_the_rest() {
        assert_eq!(connection_cap(1024), 768);
        assert_eq!(connection_cap(1_048_576), MAX_CONNECTIONS);
        assert_eq!(connection_cap(100), 16);
    }
}
