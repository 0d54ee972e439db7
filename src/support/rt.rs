//! The one tokio runtime. `main` creates it and runs the command line on one of its blocking
//! threads; synchronous code that needs to wait for async work calls [`block_on`], which
//! drives the work on the calling thread with that runtime's timers, I/O and tasks. Only a
//! library caller without a runtime (a test calling the library directly) gets a private
//! current-thread runtime for the call.

use std::future::Future;

/// Wait for `work` on the runtime this thread belongs to (or a private one when there is
/// none). Must not be called from async code: use `.await` there.
pub fn block_on<F: Future>(work: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(work),
        Err(_) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("cannot start a tokio runtime: {e}"));
            let out = runtime.block_on(work);
            // A prompt still waiting on stdin (the run was stopped) does not hold the return.
            runtime.shutdown_background();
            out
        }
    }
}

/// The process's runtime, made once in `main`: a few worker threads for the server's
/// connections and the steps' I/O, and the blocking pool for synchronous work.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_code_waits_on_the_runtime_it_runs_in_or_a_private_one() {
        assert_eq!(block_on(async { 1 + 1 }), 2, "no runtime: a private one");
        let runtime = build().expect("runtime");
        let seen = runtime.block_on(async {
            tokio::task::spawn_blocking(|| {
                block_on(async {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    tokio::runtime::Handle::current().runtime_flavor()
                })
            })
            .await
            .expect("join")
        });
        assert_eq!(
            seen,
            tokio::runtime::RuntimeFlavor::MultiThread,
            "the main runtime"
        );
    }
}
