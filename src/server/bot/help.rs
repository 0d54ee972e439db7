//! `@kcibot help`, and the answers that point to it: an unknown command, a refusal.

use super::parser::ParseError;

/// Where the commands are listed.
pub(super) fn line(bot: &str) -> String {
    format!("Comment `@{bot} help` for the commands.")
}

/// The answer to `@kcibot help`.
pub(super) fn text(bot: &str) -> String {
    format!(
        "Commands (maintainers only):\n\
         - `@{bot} deploy [SHA]`: deploy staging now with this PR included (partial cycle, no \
         test kernel); approves the PR's current head if its author is not trusted (with a SHA, \
         only if the head is that commit).\n\
         - `@{bot} trigger`: the same, as a full cycle (test kernel and result check).\n\
         - `@{bot} rollback [RUN_ID]`: deploy again what an earlier successful run deployed \
         (by default the last good one before the newest run; `kcideploy state history` lists \
         them), pending changes left out; only the steps whose inputs differ run.\n\
         - `@{bot} status`: where this PR stands and when the next deploy is.\n\
         - `@{bot} help`: this text."
    )
}

/// The answer to a command the bot does not know.
pub(super) fn unknown(error: &ParseError, bot: &str) -> String {
    format!("{error}. {}", line(bot))
}

/// The answer to a commenter who may not command the bot.
pub(super) fn refusal(author: &str, bot: &str) -> String {
    format!(
        "Sorry @{author}, only the maintainers of this deployment can command me; \
         nothing was done. A maintainer can comment `@{bot} deploy` to include this PR."
    )
}
