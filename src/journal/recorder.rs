//! The recorder: the small handle every actor journals through (a journal and the clock
//! that stamps its records), so that no actor needs more of the runtime than this to
//! write history.

use std::sync::Arc;

use super::event::Event;
use super::Journal;
use crate::clock::Clock;

/// A journal and the runtime clock: appends events stamped with the runtime's time.
///
/// Cheap to clone (an `Arc` and a copy of the clock). Every actor that writes history
/// receives one at start; none reaches for a runtime-wide context.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use muster::clock::Clock;
/// use muster::journal::{Event, MemoryJournal, Recorder};
///
/// let rec = Recorder::new(Arc::new(MemoryJournal::default()), Clock::fixed(1_000));
/// let seq = rec.record(Event::Note { text: "hello".into() });
/// assert_eq!(seq, 1);
/// assert_eq!(rec.journal().read_after(0)[0].at_ms, 1_000);
/// ```
#[derive(Debug, Clone)]
pub struct Recorder {
    journal: Arc<dyn Journal>,
    clock: Clock,
}

impl Recorder {
    /// A recorder writing to `journal`, stamping with `clock`.
    pub fn new(journal: Arc<dyn Journal>, clock: Clock) -> Self {
        Recorder { journal, clock }
    }

    /// Appends `event` stamped now; returns its sequence number.
    pub fn record(&self, event: Event) -> u64 {
        self.journal.append(self.clock.now_ms(), event)
    }

    /// Appends `event` stamped `at_ms` (a time the caller already read).
    pub fn record_at(&self, at_ms: u64, event: Event) -> u64 {
        self.journal.append(at_ms, event)
    }

    /// Now, in Unix milliseconds of the runtime clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The runtime clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The journal written to.
    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }
}
