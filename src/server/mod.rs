//! The event-driven side (the `serve` issue): webhooks and `@kcibot` commands. This module
//! holds the pure parts so far — signature check, typed events, the command parser; the HTTP
//! endpoint, the durable queue and the policy scheduler build on them.

pub mod command;
pub mod endpoint;
pub mod policy;
pub mod webhook;
