//! The staging policy, pure with time passed in: which cycle to run ([`cycle`]), the
//! cooldown between deploys, and the [`scheduler`] the server drives (settle, cooldown,
//! restart budget, full-cycle interval).

pub mod cycle;
pub mod scheduler;

pub use cycle::{CycleDecision, CycleRequest, cooldown_until, decide};
