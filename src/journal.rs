//! The journal: every event the runtime produces, in order, with a sequence number.
//!
//! Owns the [`Event`] vocabulary and the [`Journal`] trait with its backends. It is the
//! source of truth for inspection (G5) and, with a durable backend, for recovery. Appends
//! must be cheap and must never block the hot path on a disk write per event.

pub mod event;
pub mod memory;

pub use event::{Event, Record};
pub use memory::MemoryJournal;

/// Where events go.
///
/// Implementations are shared by every actor of a runtime; `append` is called on the hot
/// path and must not block on I/O per event.
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Appends an event stamped `at_ms`; returns its sequence number (from 1).
    fn append(&self, at_ms: u64, event: Event) -> u64;
    /// Every record with a sequence number greater than `after`, in order.
    fn read_after(&self, after: u64) -> Vec<Record>;
    /// The number of records.
    fn len(&self) -> u64;
    /// Whether the journal holds no records.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
