//! `@kcibot status`: where a PR stands, from what `/status` knows.

use super::deploy::short;
use crate::config::Cycle;
use crate::server::status::{ChangeState, Status};

/// The answer to `@kcibot status` on PR `number` of `repo`.
pub(super) fn pr_status(status: &Status, repo: &str, number: u64) -> String {
    let id = format!("#{number}");
    let seen = status
        .changes
        .iter()
        .find(|c| c.repo == repo && c.change == id);
    let mut line = match (seen, &status.last) {
        (Some(c), Some(last)) if c.state == ChangeState::Included => format!(
            "{id} at `{}` was included in the last deploy ({} cycle, {}, {}).",
            short(&c.head),
            last.cycle.as_str(),
            last.result,
            last.finished_at.strftime("%Y-%m-%d %H:%M UTC")
        ),
        (Some(c), _) => format!(
            "{id} at `{}` was left out of the last deploy: {}{}.",
            short(&c.head),
            c.state,
            c.detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ),
        (None, _) => format!("{id} was not part of a deploy by this server yet."),
    };
    if let Some(run) = &status.running {
        line.push_str(&format!(
            " A {} cycle is running since {}.",
            run.cycle.as_str(),
            run.started_at.strftime("%H:%M UTC")
        ));
    } else if let Some(next) = status.next_deploy {
        line.push_str(&format!(
            " Next deploy: {} cycle at {}.",
            status.next_cycle.map(Cycle::as_str).unwrap_or("partial"),
            next.strftime("%Y-%m-%d %H:%M UTC")
        ));
    }
    line
}
