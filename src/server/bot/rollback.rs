//! `@kcibot rollback [RUN_ID]`: the next deploy (now) deploys again what an earlier successful
//! run deployed, as `kcideploy rollback` does. Maintainers only, as every command.

use tokio::time::Instant;

use crate::config::Cycle;
use crate::policy::scheduler::Reaction;
use crate::server::clock::when;
use crate::server::worker::Worker;

impl Worker {
    /// Check that the run can be rolled back to, then ask for a deploy now that rolls back to
    /// it; whether a deploy was asked for.
    pub(super) fn rollback(&mut self, run: Option<&str>, lines: &mut Vec<String>) -> bool {
        let name = self.hub.config.file.name.clone();
        let state = match self.hub.backend.read() {
            Ok(Some(state)) => state,
            Ok(None) => {
                lines.push(format!(
                    "Not rolling back {name}: nothing was deployed yet."
                ));
                return false;
            }
            Err(e) => {
                tracing::warn!("rollback: {e}");
                lines.push(format!(
                    "Not rolling back {name}: the server cannot read its state; the server log has the details."
                ));
                return false;
            }
        };
        let to = match crate::planner::scope::rollback_run(&state, run) {
            Ok(r) => r.id.clone(),
            Err(e) => {
                lines.push(format!("Not rolling back {name}: {e}."));
                return false;
            }
        };
        self.rollback = Some(to.clone());
        let reaction = self.sched.request(Instant::now(), Cycle::Partial);
        if reaction == Reaction::RestartRunning {
            self.restart();
        }
        let start = match reaction {
            Reaction::Scheduled(at) => format!("starting {}", when(at)),
            Reaction::RestartRunning => "stopping the running partial deploy for it".to_string(),
            Reaction::Queued => "starting right after the running deploy".to_string(),
        };
        lines.push(format!(
            "Rolling back {name} to the revisions run `{to}` deployed (pending changes left \
             out; only the steps whose inputs differ run), {start}. The next deploy after it \
             includes the pending changes again: leave out the bad one first."
        ));
        true
    }
}
