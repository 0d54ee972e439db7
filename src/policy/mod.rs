//! The staging policy, pure with time passed in: which cycle to run ([`cycle`]), the
//! cooldown between deploys, and the scheduler the server drives.

pub mod cycle;

pub use cycle::{CycleDecision, CycleRequest, cooldown_until, decide};
