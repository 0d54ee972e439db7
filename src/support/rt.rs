//! The one tokio runtime. `main` creates it and runs the command line on one of its blocking
//! threads; synchronous code that needs to wait for async work calls [`block_on`], which
//! drives the work on the calling thread with that runtime's timers, I/O and tasks. Only a
//! library caller without a runtime (a test calling the library directly) gets another: one
//! made on first use for the whole process ([`fallback`]), so that a task spawned during
//! one call (a database connection) keeps running for the next.

use std::future::Future;
use std::sync::OnceLock;

/// Wait for `work` on the runtime this thread belongs to (or the process-wide fallback when
/// there is none). Must not be called from async code: use `.await` there.
pub fn block_on<F: Future>(work: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(work),
        Err(_) => fallback().block_on(work),
    }
}

/// Like [`block_on`], but also from async code on the multi-thread runtime (its worker
/// hands its other tasks off while this waits: `block_in_place`): for a synchronous API that
/// both kinds of caller use (a state backend's read). Never from a current-thread runtime's
/// async code.
pub fn wait<F: Future>(work: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(work))
        }
        Ok(handle) => handle.block_on(work),
        Err(_) => fallback().block_on(work),
    }
}

/// The runtime of this thread, or the process-wide fallback: where a task that must outlive
/// the call that starts it is spawned.
pub fn handle() -> tokio::runtime::Handle {
    tokio::runtime::Handle::try_current().unwrap_or_else(|_| fallback().clone())
}

/// The runtime of a process that has no runtime of its own (a library test): made once, on
/// first use, with one worker thread so that spawned tasks run between calls.
fn fallback() -> &'static tokio::runtime::Handle {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("kcideploy-fallback")
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("cannot start a tokio runtime: {e}"))
        })
        .handle()
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
    fn sync_code_waits_on_the_runtime_it_runs_in_or_the_fallback() {
        assert_eq!(block_on(async { 1 + 1 }), 2, "no runtime: the fallback");
        // A task spawned during one call still runs after it: the fallback is not per call.
        let (tx, rx) = std::sync::mpsc::channel();
        block_on(async move {
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let _ = tx.send(tokio::runtime::Handle::current().runtime_flavor());
            });
        });
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)),
            Ok(tokio::runtime::RuntimeFlavor::MultiThread),
            "the task outlived the call"
        );
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
