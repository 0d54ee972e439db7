//! The event-driven side: `kcideploy serve`. Webhooks are checked ([`webhook`]), queued
//! durably ([`endpoint`]), fed to the staging policy ([`policy`], plus the `schedule:` cron in
//! [`crate::support::cron`]); `@kcibot` comments are parsed by [`command`]; [`serve`] ties them together with
//! the deploys, `/status` and `/metrics` ([`metrics`]).

pub mod command;
pub mod endpoint;
pub mod metrics;
pub mod policy;
pub mod queue;
pub mod serve;
pub mod webhook;
