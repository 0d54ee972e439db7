//! `@kcibot resume`: give back what a stop-the-line step paused, as `kcideploy resume` does,
//! under the state lock (refused while a deploy holds it). Maintainers only, as every command.

use crate::server::worker::Worker;

impl Worker {
    /// Resume; the reply.
    pub(super) async fn resume(&mut self) -> String {
        let name = self.hub.config.file.name.clone();
        let backend = self.hub.backend.clone();
        let lock = match backend.lock("@kcibot resume", std::time::Duration::ZERO) {
            Ok(lock) => lock,
            Err(_) => {
                return format!(
                    "Not resuming {name} now: a deploy holds its state; ask again when it has finished."
                );
            }
        };
        let mut state = match backend.read() {
            Ok(Some(state)) => state,
            Ok(None) => return format!("Nothing of {name} is paused: nothing was deployed yet."),
            Err(e) => {
                tracing::warn!("@kcibot resume: {e}");
                return format!(
                    "Not resuming {name}: the server cannot read its state; the server log has the details."
                );
            }
        };
        let lines = match crate::apply::resume::resume_async(&self.hub.config, &mut state).await {
            Ok(lines) => lines,
            Err(e) => {
                tracing::warn!("@kcibot resume: {e}");
                return format!(
                    "Not resuming {name}: giving the replicas back failed; the server log has the details."
                );
            }
        };
        if lines.is_empty() {
            return format!("Nothing of {name} is paused.");
        }
        if let Err(e) = backend.write(&mut state) {
            tracing::warn!("@kcibot resume: {e}");
        }
        drop(lock);
        let done: Vec<String> = lines.iter().map(|l| format!("- {l}")).collect();
        format!("Resumed {name}:\n{}", done.join("\n"))
    }
}
