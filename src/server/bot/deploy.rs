//! `@kcibot deploy [SHA]` and `@kcibot trigger` (the same as a full cycle): approve the PR's
//! head for the next deploy, then ask the scheduler for a deploy now.

use jiff::Timestamp;
use tokio::time::Instant;

use super::Ctx;
use crate::config::Cycle;
use crate::server::clock::when;
use crate::server::policy::Reaction;
use crate::server::worker::Worker;
use crate::state::Approval;

impl Worker {
    /// Handle `deploy` (`Cycle::Partial`) or `trigger` (`Cycle::Full`); whether a deploy was
    /// asked for.
    pub(super) async fn deploy(
        &mut self,
        ctx: &Ctx<'_>,
        cycle: Cycle,
        sha: Option<&str>,
        lines: &mut Vec<String>,
    ) -> bool {
        let number = ctx.comment.number;
        if !ctx.replay {
            match self.approve(ctx, sha).await {
                Ok(line) => lines.push(line),
                Err(e) => {
                    lines.push(format!("Not deploying #{number}: {e}."));
                    return false;
                }
            }
        }
        let reaction = self.sched.request(Instant::now(), cycle);
        if reaction == Reaction::RestartRunning {
            self.restart();
        }
        lines.push(self.explain(reaction, cycle));
        true
    }

    /// Approve the PR's current head (recorded in state by the next deploy); with `sha`, only
    /// if the head starts with it.
    async fn approve(&self, ctx: &Ctx<'_>, sha: Option<&str>) -> Result<String, String> {
        let (full_name, number) = (ctx.comment.full_name, ctx.comment.number);
        let gh = self
            .github
            .as_ref()
            .ok_or("no GitHub token to read the PR with")?;
        let pr = gh
            .get_one(&format!("/repos/{full_name}/pulls/{number}"))
            .await
            .map_err(|e| e.to_string())?;
        let head = pr["head"]["sha"]
            .as_str()
            .ok_or("the PR has no head.sha")?
            .to_string();
        let pr_author = pr["user"]["login"].as_str().unwrap_or("?").to_string();
        if let Some(sha) = sha
            && !head.starts_with(sha)
        {
            return Err(format!(
                "its head is `{}` now, not `{sha}`: nothing approved; look at the new commits and approve again",
                &head[..head.len().min(12)]
            ));
        }
        self.hub
            .approvals
            .add(Approval {
                repo: ctx.repo.clone(),
                change: format!("#{number}"),
                head: head.clone(),
                by: ctx.comment.author.to_string(),
                at: Timestamp::now(),
            })
            .map_err(|e| format!("cannot keep the approval: {e}"))?;
        Ok(format!(
            "Approved #{number} by @{pr_author} at `{}` for {}; a later push needs a new approval.",
            &head[..head.len().min(12)],
            self.hub.config.file.name
        ))
    }

    /// When the asked-for deploy starts.
    fn explain(&self, reaction: Reaction, cycle: Cycle) -> String {
        let what = match cycle {
            Cycle::Partial => "a partial deploy (no test kernel)",
            Cycle::Full => "a full cycle (deploy, test kernel, result check)",
        };
        match reaction {
            Reaction::Scheduled(at) => format!("Starting {what} {}.", when(at)),
            Reaction::RestartRunning => {
                format!("Restarting the running partial deploy to include it: {what}, now.")
            }
            Reaction::Queued => format!(
                "A {} cycle is running; {what} starts right after it.",
                self.sched.running().map(Cycle::as_str).unwrap_or("deploy")
            ),
        }
    }
}
