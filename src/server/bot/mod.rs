//! `@kcibot`: commands in PR comments. [`parser`] reads them; the worker checks that the
//! commenter may command the bot, runs one handler per command ([`deploy`] for `deploy` and
//! `trigger`, [`rollback`], [`status`], [`help`]) and answers every comment once ([`reply`]).

mod deploy;
mod failed;
mod help;
pub mod parser;
mod permission;
mod reply;
mod resume;
mod rollback;
mod status;

use parser::{BotCommand, Parsed};

use super::endpoint::Entry;
use super::worker::{Handled, Worker};
use crate::config::Cycle;
pub(in crate::server) use permission::placeholders;

/// A new comment on a PR, as the webhook told it.
pub(super) struct Comment<'a> {
    /// `owner/name` on GitHub.
    pub(super) full_name: &'a str,
    pub(super) number: u64,
    /// The commenter's login, for messages only.
    pub(super) author: &'a str,
    /// The commenter's numeric GitHub user id: what permission is checked by.
    pub(super) author_id: u64,
    /// OWNER, MEMBER, COLLABORATOR, CONTRIBUTOR, NONE, ...
    pub(super) association: &'a str,
    pub(super) body: &'a str,
}

/// The comment a command came from, and the plan file's name for its repo.
struct Ctx<'a> {
    comment: &'a Comment<'a>,
    repo: String,
    /// The comment was answered before a restart: do again only what state does not keep.
    replay: bool,
}

impl Worker {
    /// Answer the `@kcibot` commands of a comment. `Keep` when a deploy was asked for.
    pub(super) async fn comment(&mut self, entry: &Entry, comment: &Comment<'_>) -> Handled {
        let hub = self.hub.clone();
        let server = &hub.config.file.server;
        // The bot's own comments (as a user or a GitHub App, `name[bot]`) are never commands.
        if comment
            .author
            .trim_end_matches("[bot]")
            .eq_ignore_ascii_case(&server.bot)
        {
            return Handled::Ack;
        }
        let commands = parser::parse(comment.body, &server.bot);
        if commands.is_empty() {
            return Handled::Ack;
        }
        let Some((repo, _)) = self.hub.repo_for(comment.full_name) else {
            return self.unknown_repo(comment.full_name);
        };
        let ctx = Ctx {
            comment,
            repo,
            replay: entry.replied,
        };
        let (number, author) = (comment.number, comment.author);
        let permitted = permission::permitted(server, comment.author_id, comment.association);
        let mut lines = Vec::new();
        let mut keep = false;
        if permitted {
            for cmd in commands {
                keep |= self.command(&ctx, cmd, &mut lines).await;
            }
        } else {
            tracing::info!(
                "{}#{number}: @{author} (id {}) may not command the bot",
                comment.full_name,
                comment.author_id
            );
            lines.push(help::refusal(author, &server.bot));
        }
        if !ctx.replay {
            tracing::info!(
                "{}#{number}: @{author}: {}",
                comment.full_name,
                lines.join(" / ")
            );
            self.reply(comment.full_name, number, &lines.join("\n\n"))
                .await;
            if let Err(e) = self.hub.queue.mark_replied(&entry.delivery).await {
                tracing::warn!("cannot mark delivery {} answered: {e}", entry.delivery);
            }
        }
        if keep { Handled::Keep } else { Handled::Ack }
    }

    /// Run one command, adding its answer to `lines`; whether it asked for a deploy.
    async fn command(
        &mut self,
        ctx: &Ctx<'_>,
        cmd: Result<Parsed, parser::ParseError>,
        lines: &mut Vec<String>,
    ) -> bool {
        let bot = &self.hub.config.file.server.bot;
        match cmd {
            Err(e) => lines.push(help::unknown(&e, bot)),
            Ok(Parsed {
                command: BotCommand::Help,
                ..
            }) => lines.push(help::text(bot)),
            Ok(Parsed {
                command: BotCommand::Status,
                ..
            }) => {
                let status = self.hub.status().clone();
                lines.push(status::pr_status(&status, &ctx.repo, ctx.comment.number));
            }
            Ok(Parsed {
                command: BotCommand::Deploy,
                sha,
                ..
            }) => {
                return self
                    .deploy(ctx, Cycle::Partial, sha.as_deref(), lines)
                    .await;
            }
            Ok(Parsed {
                command: BotCommand::Trigger,
                sha,
                ..
            }) => return self.deploy(ctx, Cycle::Full, sha.as_deref(), lines).await,
            Ok(Parsed {
                command: BotCommand::Rollback,
                run,
                ..
            }) => return self.rollback(run.as_deref(), lines),
            Ok(Parsed {
                command: BotCommand::Resume,
                ..
            }) => lines.push(self.resume().await),
        }
        false
    }
}
