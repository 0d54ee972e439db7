//! `state migrate`: copy a plan's state from one backend to another with its lineage, serial
//! and history (the journal's step ends folded in), refusing to replace a state of another
//! lineage or a newer one.

use super::{Backend, State, StateError};

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migrated {
    /// Copied: the serial and the number of runs in the history.
    Copied { serial: u64, runs: usize },
    /// The target already holds this state at this serial.
    AlreadyThere { serial: u64 },
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum MigrateError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    State(#[from] StateError),
    #[error("nothing to migrate: no state in the {from}")]
    NoState { from: String },
    #[error(
        "the {to} holds another state (lineage {found}) than the {from} (lineage {lineage}): not replaced"
    )]
    #[diagnostic(help(
        "each state keeps its lineage for life: migrate to an empty target, or remove that state first if it is not needed"
    ))]
    OtherLineage {
        from: String,
        to: String,
        lineage: String,
        found: String,
    },
    #[error(
        "the {to} holds a newer serial ({found}) of this state than the {from} ({serial}): not replaced"
    )]
    Newer {
        from: String,
        to: String,
        serial: u64,
        found: u64,
    },
    #[error("the source and the target are the same: {0}")]
    Same(String),
}

/// Copy the state of `from` to `to` (the caller holds both locks).
pub fn migrate(from: &Backend, to: &Backend) -> Result<Migrated, MigrateError> {
    if from.describe() == to.describe() {
        return Err(MigrateError::Same(from.describe()));
    }
    let Some(state) = from.read()? else {
        return Err(MigrateError::NoState {
            from: from.describe(),
        });
    };
    let existing = to.read()?;
    if let Some(found) = &existing {
        if found.lineage != state.lineage {
            return Err(MigrateError::OtherLineage {
                from: from.describe(),
                to: to.describe(),
                lineage: state.lineage,
                found: found.lineage.clone(),
            });
        }
        if found.serial == state.serial {
            return Ok(Migrated::AlreadyThere {
                serial: state.serial,
            });
        }
        if found.serial > state.serial {
            return Err(MigrateError::Newer {
                from: from.describe(),
                to: to.describe(),
                serial: state.serial,
                found: found.serial,
            });
        }
    }
    let runs = state.history.len();
    let serial = state.serial;
    write_exactly(to, state, existing.map_or(0, |s| s.serial))?;
    Ok(Migrated::Copied { serial, runs })
}

/// Write `state` keeping its serial, over the target's state of serial `over` (0: none).
fn write_exactly(to: &Backend, mut state: State, over: u64) -> Result<(), StateError> {
    let serial = state.serial;
    match to {
        Backend::Local(local) => {
            // The write adds one.
            state.serial = serial.saturating_sub(1);
            local.write(&mut state)
        }
        Backend::Postgres(pg) => crate::support::rt::wait(pg.write_at(&mut state, over, serial)),
    }
}
