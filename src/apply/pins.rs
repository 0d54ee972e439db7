//! The digests a plan pins: for every `kubernetes` step the plan runs, each `pin_images`
//! reference is resolved in its registry when the plan is made, and the plan shows and
//! keeps `pin_images.<key>.digest`. Apply then pins exactly that digest (what a reviewer
//! approved is what deploys, even if the tag moved since); a digest the plan could not
//! resolve is resolved by the step itself.

use crate::config::Config;
use crate::config::kinds::KindSettings;
use crate::planner::params::{ParamChange, Vars};
use crate::planner::{Action, Plan};
use crate::state::State;

use super::kinds::registry::{ImageRef, resolve};

/// The plan's key for the digest `pin_images.<key>` resolved to.
pub fn digest_key(pin: &str) -> String {
    format!("pin_images.{pin}.digest")
}

/// Resolve the pins of every `kubernetes` step the plan runs into its params (and into its
/// changes, against the digest its last success pinned). The warnings say which could not
/// be resolved and why; those are left to apply.
pub fn resolve_plan_pins(config: &Config, state: Option<&State>, plan: &mut Plan) -> Vec<String> {
    crate::support::rt::block_on(resolve_async(config, state, plan, None))
}

/// [`resolve_plan_pins`], but the pins `recorded` (by step, then key: what an earlier run
/// pinned) are taken as they are instead of asking the registry: a rollback deploys the
/// digests the run it goes back to deployed, not what the tags name now.
pub fn reuse_plan_pins(
    config: &Config,
    state: Option<&State>,
    plan: &mut Plan,
    recorded: &Recorded,
) -> Vec<String> {
    crate::support::rt::block_on(resolve_async(config, state, plan, Some(recorded)))
}

/// Pinned digests by step, then `pin_images` key.
pub type Recorded = std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

async fn resolve_async(
    config: &Config,
    state: Option<&State>,
    plan: &mut Plan,
    recorded: Option<&Recorded>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let timeouts = &config.file.timeouts;
    // Made for the first digest to resolve: most plans have none, and making a client
    // (reading the system's CA certificates) was a tenth of a no-op plan.
    let mut client = None;
    let vars_repos = plan.repos.clone();
    let vars = Vars {
        repos: &vars_repos,
        cycle: plan.cycle,
        plan: &plan.name,
    };
    for step in plan.steps.iter_mut().filter(|s| s.action == Action::Run) {
        let KindSettings::Kubernetes(with) = config.settings(&step.name) else {
            continue;
        };
        let last = state
            .and_then(|s| s.steps.get(&step.name))
            .and_then(|r| r.params.as_ref());
        for (pin, written) in &with.pin_images {
            let earlier = recorded
                .and_then(|r| r.get(&step.name))
                .and_then(|r| r.get(pin))
                .cloned();
            let resolved = match (earlier, vars.substitute(written)) {
                (Some(digest), _) => Ok(digest),
                (None, Err(e)) => Err(e),
                (None, Ok(text)) => match ImageRef::parse(&text) {
                    Ok(image) => {
                        if client.is_none() {
                            match crate::support::http::http_client(timeouts.connect.0) {
                                Ok(c) => client = Some(c),
                                Err(e) => {
                                    warnings.push(format!("digests not resolved: {e}"));
                                    return warnings;
                                }
                            }
                        }
                        let Some(client) = &client else { continue };
                        resolve(client, &image, timeouts.registry.0, timeouts.connect.0).await
                    }
                    Err(e) => Err(e),
                },
            };
            let digest = match resolved {
                Ok(d) => d,
                Err(e) => {
                    warnings.push(format!(
                        "{}: pin_images.{pin}: {e}; apply resolves it",
                        step.name
                    ));
                    continue;
                }
            };
            let key = digest_key(pin);
            let old = last.and_then(|p| p.get(&key)).cloned();
            // The planner compared the settings without the digest: its view of this key
            // (gone) is replaced by the comparison of the digests.
            step.changes.retain(|c| c.key != key);
            if last.is_some() && old.as_deref() != Some(digest.as_str()) {
                step.changes.push(ParamChange {
                    key: key.clone(),
                    old,
                    new: Some(digest.clone()),
                });
            }
            step.params.insert(key, digest);
        }
    }
    warnings
}
