//! kcideploy: deploy KernelCI staging and production from a YAML plan file.
//!
//! Data flow: plan file → [`config`] → [`forge`] snapshot → [`planner`] (merge with
//! [`gitops`], affected components, triggered steps, policy) → [`planner::Plan`].

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
