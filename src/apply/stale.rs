//! Is a saved plan still true? Compare its fingerprint with one made now, and say what moved.

use crate::planner::Fingerprint;
use crate::support::text::short;

/// Everything that moved between `saved` and `now`; empty when the plan still holds.
/// `own_serial`: the state serial moved only through a run of this very plan (resume).
pub fn differences(saved: &Fingerprint, now: &Fingerprint, own_serial: bool) -> Vec<String> {
    let mut out = Vec::new();
    if saved.plan_file != now.plan_file {
        out.push("the plan file changed".to_string());
    }
    if saved.state_lineage.is_some() && saved.state_lineage != now.state_lineage {
        out.push(format!(
            "the state was replaced: lineage {} is now {}",
            saved.state_lineage.as_deref().unwrap_or("none"),
            now.state_lineage.as_deref().unwrap_or("none")
        ));
    }
    if saved.state_serial != now.state_serial && !own_serial {
        out.push(format!(
            "the state moved from serial {} to {}: another apply ran since",
            saved.state_serial, now.state_serial
        ));
    }
    for (repo, old) in &saved.repos {
        let Some(new) = now.repos.get(repo) else {
            out.push(format!("repo `{repo}` is no longer in the plan file"));
            continue;
        };
        if old.base != new.base {
            out.push(format!(
                "repo `{repo}`: the base moved from {} to {}",
                short(&old.base),
                short(&new.base)
            ));
        }
        for (id, head) in &old.heads {
            match new.heads.get(id) {
                None => out.push(format!("repo `{repo}`: change {id} is gone")),
                Some(h) if h != head => out.push(format!(
                    "repo `{repo}`: change {id} moved from {} to {}",
                    short(head),
                    short(h)
                )),
                _ => {}
            }
        }
        for (id, head) in &new.heads {
            if !old.heads.contains_key(id) {
                out.push(format!("repo `{repo}`: new change {id} ({})", short(head)));
            }
        }
    }
    for repo in now.repos.keys() {
        if !saved.repos.contains_key(repo) {
            out.push(format!("repo `{repo}` was added to the plan file"));
        }
    }
    out
}
