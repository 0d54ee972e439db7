//! A PR's plan preview (as Atlantis gives one): what this change alone would trigger on top
//! of what is deployed, and whether it merges with the other pending changes. Computed from
//! the forge's data and git merges only, so an untrusted author's change is previewed the
//! same way: no code of the change runs. For the preview the change is let in whatever the
//! screening would say (trust, draft, skip label, age, its own CI); a change blamed at this
//! head stays out, with its reason.

use miette::Result;

use super::{PlanRequest, Workspace};
use crate::forge::{ForgeSnapshot, PendingChange};
use crate::planner::{Excluded, Plan, Screened};

/// One change's preview.
pub struct Preview {
    pub repo: String,
    pub change: PendingChange,
    /// The plan with this change as the only pending one.
    pub alone: Plan,
    /// The plan with every pending change and this one let in: does it merge?
    pub together: Plan,
    /// Why staging leaves it out as things are (untrusted, draft, blamed...), if it does.
    pub left_out: Option<Excluded>,
    /// It is deployed already, at this head.
    pub deployed: bool,
}

/// `snapshot` with `id` of `repo` let in (trusted, not a draft, no skip label, fresh) and,
/// unless `others`, every other pending change of every repo left aside.
fn with_change(
    snapshot: &ForgeSnapshot,
    repo: &str,
    id: &str,
    skip_label: &str,
    others: bool,
    now: jiff::Timestamp,
) -> ForgeSnapshot {
    let mut snap = snapshot.clone();
    for (name, r) in snap.repos.iter_mut() {
        if name != repo {
            if !others {
                r.changes.clear();
            }
            continue;
        }
        if !others {
            r.changes.retain(|c| c.id == id);
        }
        let mut trusted = r.trusted.clone().unwrap_or_default();
        for c in r.changes.iter_mut().filter(|c| c.id == id) {
            c.draft = false;
            c.labels.retain(|l| l != skip_label);
            c.updated_at = now;
            trusted.push(c.author.clone());
        }
        if r.trusted.is_some() || !others {
            r.trusted = Some(trusted);
        }
    }
    snap
}

impl Workspace {
    /// The preview of change `id` (`#12`, or a branch name for a git forge) of `repo`.
    pub fn preview(
        &self,
        snapshot: &ForgeSnapshot,
        repo: &str,
        id: &str,
        request: &PlanRequest,
    ) -> Result<Preview> {
        let Some(snap) = snapshot.repos.get(repo) else {
            let known: Vec<&String> = snapshot.repos.keys().collect();
            miette::bail!(
                "no repo `{repo}` in {} (its repos: {known:?})",
                self.plan_file
            );
        };
        let Some(change) = snap.changes.iter().find(|c| c.id == id).cloned() else {
            let open: Vec<&str> = snap.changes.iter().map(|c| c.id.as_str()).collect();
            miette::bail!(
                "{repo} has no pending change {id} (pending: {})",
                if open.is_empty() {
                    "none".to_string()
                } else {
                    open.join(", ")
                }
            );
        };
        let now = request.now.unwrap_or_else(jiff::Timestamp::now);
        let repo_cfg = &self.config.file.repos[repo];
        let skip_label = &repo_cfg.pending.skip_label;
        let left_out =
            crate::planner::screen_repo(&self.config, repo, snap, self.state.as_ref(), now)
                .into_iter()
                .find_map(|s| match s {
                    Screened::Out(e) if e.id == id => Some(e),
                    _ => None,
                });
        let deployed = self
            .state
            .as_ref()
            .and_then(|s| s.repos.get(repo))
            .is_some_and(|r| {
                r.included
                    .iter()
                    .any(|c| c.id == id && c.head == change.head)
            });
        let alone = with_change(snapshot, repo, id, skip_label, false, now);
        let together = with_change(snapshot, repo, id, skip_label, true, now);
        // Its own CI gates it (`require_checks`) as its author does: the preview lets it in.
        let mut config = self.config.clone();
        if let Some(r) = config.file.repos.get_mut(repo) {
            r.pending.require_checks = None;
        }
        let ws = Workspace {
            config,
            backend: self.backend.clone(),
            state: self.state.clone(),
            cache_dir: self.cache_dir.clone(),
            plan_file: self.plan_file.clone(),
        };
        Ok(Preview {
            repo: repo.to_string(),
            change,
            alone: ws.plan(&alone, request)?,
            together: ws.plan(&together, request)?,
            left_out,
            deployed,
        })
    }
}
