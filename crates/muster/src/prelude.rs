//! The handles most programs use, in one import: `use muster::prelude::*;`. The core's
//! prelude ([`muster_core::prelude`]) plus, with their features, the workflow extension
//! ([`WorkflowExt`]: `run_workflow`, `approve` ...) and the durable journal
//! ([`SqliteJournal`], [`Durability`]).
//!
//! # Example
//! ```no_run
//! use muster::prelude::*;
//! use std::sync::Arc;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let journal = Arc::new(SqliteJournal::open(".muster/journal.db", Durability::Relaxed)?);
//! let muster = Muster::builder().journal(journal).start().await?;
//! # let _ = muster; Ok(()) }
//! ```

pub use muster_core::prelude::*;
#[cfg(feature = "sqlite")]
pub use muster_sqlite::{Durability, SqliteJournal};
#[cfg(feature = "workflow")]
pub use muster_workflow::WorkflowExt;
