//! The journal: the core's trait, records and in-memory ring ([`muster_core::journal`]),
//! plus the durable backend ([`SqliteJournal`], one SQLite file, every record) and the
//! read side that reconstructs runs and tasks from records ([`inspect`]).

pub use muster_core::journal::*;

pub mod inspect;
pub mod sqlite;

pub use sqlite::{Durability, SqliteJournal};
