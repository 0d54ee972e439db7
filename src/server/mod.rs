//! The event-driven side: `kcideploy serve`. Webhooks are checked ([`webhook`]), queued
//! durably ([`endpoint`], [`queue`]) and fed by the [`worker`] to the staging policy
//! ([`crate::policy::scheduler`], plus the `schedule:` cron in [`crate::support::cron`]), which starts deploys
//! ([`run_deploy`]); `@kcibot` comments go to the [`bot`]; [`routes`] serves `/status`
//! ([`status`]) and `/metrics` ([`metrics`]); [`serve`] starts it all.

mod approvals;
pub mod bot;
mod clock;
pub mod dashboard;
pub mod deliveries;
pub mod endpoint;
mod hub;
pub mod leader;
mod listener;
pub mod metrics;
pub mod pg_queue;
mod preview;
pub mod queue;
mod replicas;
mod routes;
mod run_deploy;
pub mod serve;
pub mod status;
mod triggers;
pub mod webhook;
mod worker;
