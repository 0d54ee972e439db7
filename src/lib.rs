//! kcideploy: deploy KernelCI staging and production from a YAML plan file.
//!
//! Data flow: plan file → [`config`] and state → [`forge`] snapshot → staged by [`gitops`]
//! → [`planner`] (pure; cycle from [`policy`]) → [`planner::Plan`], all through
//! [`workspace`]; then [`apply`] (with [`blame`] and [`notify`], in [`deploy`]) runs it, from
//! the [`cli`] or the [`server`]. Each module imports only from the ones below it
//! (README "Architecture", tests/layers.rs).

// Functions stay under 100 lines (threshold in clippy.toml); CI denies warnings.
#![warn(clippy::too_many_lines)]

pub mod apply;
pub mod blame;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod exit;
pub mod forge;
pub mod gitops;
pub mod kernelci;
pub mod notify;
pub mod planner;
pub mod policy;
pub mod server;
pub mod state;
pub mod support;
pub mod workspace;
