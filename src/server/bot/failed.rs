//! A deploy asked for with `@kcibot deploy` or `trigger` that could not run: its steps never
//! reported on the PR, so the bot says there what failed and where to look. The error itself
//! is in the server log (the worker logs every failed deploy) and in `/status`.

use std::collections::BTreeSet;

use crate::config::Cycle;
use crate::server::worker::Worker;

impl Worker {
    /// Tell each PR in `asked` that the deploy asked for there did not run. `run_id`: the
    /// run it had started, if it got that far.
    pub(in crate::server) async fn tell_failure(
        &self,
        asked: &BTreeSet<(String, u64)>,
        cycle: Cycle,
        run_id: Option<&str>,
    ) {
        if asked.is_empty() {
            return;
        }
        let what = self.what_failed(run_id);
        for (full_name, number) in asked {
            let text = format!(
                "The {} deploy of {} asked for here did not run: {what}. Nothing new was \
                 deployed; it is tried again after the cooldown. The server log has the \
                 error; `/status` on the server shows this deploy, and `kcideploy state \
                 history` the runs.",
                cycle.as_str(),
                self.hub.config.file.name
            );
            tracing::info!("{full_name}#{number}: told that the deploy did not run");
            self.reply(full_name, *number, &text).await;
        }
    }

    /// What failed, in words for a PR: found out again here, since the deploy's error is
    /// only text.
    fn what_failed(&self, run_id: Option<&str>) -> String {
        if let Some(run) = run_id {
            return format!(
                "run `{run}` stopped with an internal error (not a step failure); its step \
                 logs are in the run's log directory"
            );
        }
        match self.hub.backend.holder() {
            Ok(Some(holder)) => format!(
                "the state is locked by another `{}` run (since {}), so no deploy could \
                 start; when that run is gone for good, `kcideploy force-unlock` frees it",
                holder.operation,
                holder.created.strftime("%Y-%m-%d %H:%M UTC")
            ),
            _ => "it stopped before its first step: loading the plan file, reading the state, \
                  fetching the repos or planning failed"
                .into(),
        }
    }
}
