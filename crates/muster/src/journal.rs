//! The journal: the core's trait, records and in-memory ring ([`muster_core::journal`]),
//! plus, behind their features, the durable backend (`sqlite`: one SQLite file, every
//! record, from `muster-sqlite`) and the read side that reconstructs runs and tasks from
//! records (`inspect`, from `muster-workflow`).

pub use muster_core::journal::*;

#[cfg(feature = "sqlite")]
pub use muster_sqlite as sqlite;
#[cfg(feature = "sqlite")]
pub use muster_sqlite::{Durability, SqliteJournal};
#[cfg(feature = "workflow")]
pub use muster_workflow::inspect;
