//! `@kcibot deploy [SHA]` and `@kcibot trigger` (the same as a full cycle): approve the PR's
//! head for the next deploy, then ask the scheduler for a deploy now.

use jiff::Timestamp;
use tokio::time::Instant;

use super::Ctx;
use crate::config::Cycle;
use crate::forge::github::GitHubError;
use crate::policy::scheduler::Reaction;
use crate::server::clock::when;
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
        let (full_name, number) = (ctx.comment.full_name, ctx.comment.number);
        if !ctx.replay {
            match self.approve(ctx, sha).await {
                Ok(line) => lines.push(line),
                Err(e) => {
                    if !matches!(e, NotApproved::HeadMoved { .. }) {
                        tracing::warn!("{full_name}#{number}: cannot approve: {e}");
                    }
                    lines.push(format!("Not deploying #{number}: {}.", e.sentence()));
                    return false;
                }
            }
        }
        self.requested.insert((full_name.to_string(), number));
        self.request = Some(format!(
            "@{} {} by {} on {full_name}#{number}",
            self.hub.config.file.server.bot,
            match cycle {
                Cycle::Full => "trigger",
                Cycle::Partial => "deploy",
            },
            ctx.comment.author
        ));
        let reaction = self.sched.request(Instant::now(), cycle);
        if reaction == Reaction::RestartRunning {
            self.restart();
        }
        lines.push(self.explain(reaction, cycle));
        true
    }

    /// Approve the PR's current head (recorded in state by the next deploy); with `sha`, only
    /// if the head starts with it.
    async fn approve(&self, ctx: &Ctx<'_>, sha: Option<&str>) -> Result<String, NotApproved> {
        let (full_name, number) = (ctx.comment.full_name, ctx.comment.number);
        let gh = self.github.as_ref().ok_or(NotApproved::NoToken)?;
        let pr = gh
            .get_one(&format!("/repos/{full_name}/pulls/{number}"))
            .await
            .map_err(NotApproved::GitHub)?;
        let head = pr["head"]["sha"]
            .as_str()
            .ok_or(NotApproved::NoHead)?
            .to_string();
        let pr_author = pr["user"]["login"].as_str().unwrap_or("?").to_string();
        if let Some(sha) = sha
            && !head.starts_with(sha)
        {
            return Err(NotApproved::HeadMoved {
                head,
                sha: sha.to_string(),
            });
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
            .map_err(NotApproved::Store)?;
        Ok(format!(
            "Approved #{number} by @{pr_author} at `{}` for {}; a later push needs a new approval.",
            short(&head),
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

/// Why `@kcibot deploy` approved nothing. Only `HeadMoved` is the commenter's to fix and is
/// posted as it is; the others are internal, logged whole, and answered with a sentence.
#[derive(Debug, thiserror::Error)]
enum NotApproved {
    #[error("the head is {head}, not {sha}")]
    HeadMoved { head: String, sha: String },
    #[error("no GitHub token to read the PR with")]
    NoToken,
    #[error("{0}")]
    GitHub(GitHubError),
    #[error("the PR object has no head.sha")]
    NoHead,
    #[error("cannot keep the approval: {0}")]
    Store(std::io::Error),
}

impl NotApproved {
    /// What the PR is told (after "Not deploying #N: ").
    fn sentence(&self) -> String {
        const LOOK: &str = "nothing was approved; the server log has the details";
        match self {
            NotApproved::HeadMoved { head, sha } => format!(
                "its head is `{}` now, not `{sha}`: nothing approved; look at the new commits and approve again",
                short(head)
            ),
            NotApproved::NoToken => {
                format!("this server has no GitHub token to read the PR with; {LOOK}")
            }
            NotApproved::GitHub(e) => format!("{}; {LOOK}", github_trouble(e)),
            NotApproved::NoHead => {
                format!("GitHub's answer about this PR has no head commit; {LOOK}")
            }
            NotApproved::Store(_) => {
                format!("the server could not keep the approval on its disk; {LOOK}")
            }
        }
    }
}

/// A failed GitHub call in words for a PR: no route, no message, no URL.
fn github_trouble(e: &GitHubError) -> &'static str {
    match e {
        GitHubError::RateLimited { .. } => {
            "GitHub's rate limit for this server is used up, so I could not read the PR; try again later"
        }
        GitHubError::Network { .. } => "I could not reach GitHub to read the PR",
        GitHubError::Status { status, .. } if status.as_u16() == 401 => {
            "GitHub refused this server's token when I read the PR"
        }
        GitHubError::Status { .. } => "GitHub would not give me this PR",
        GitHubError::NoToken { .. } | GitHubError::Setup(_) => {
            "this server cannot call GitHub to read the PR"
        }
        GitHubError::Unexpected { .. } | GitHubError::ForeignHost { .. } => {
            "GitHub's answer about this PR was not what I expected"
        }
    }
}

/// The first 12 digits of a SHA (all of it if shorter or not ASCII).
pub(super) fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
