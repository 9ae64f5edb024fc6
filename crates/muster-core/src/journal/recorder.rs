//! The recorder: the small handle every actor journals through (a journal and the clock
//! that stamps its records), so that no actor needs more of the runtime than this to
//! write history.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use super::event::Event;
use super::{Journal, Watermark};
use crate::clock::Clock;

/// A journal and the runtime clock: appends events stamped with the runtime's time.
///
/// Cheap to clone (an `Arc` and a copy of the clock). Every actor that writes history
/// receives one at start; none reaches for a runtime-wide context.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use muster_core::clock::Clock;
/// use muster_core::journal::{Event, MemoryJournal, Recorder};
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
    watermark: Option<watch::Receiver<Watermark>>,
}

/// A record the journal could not write (its writer failed or stopped first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the journal stopped before it wrote record {seq} (written up to {written})")]
pub struct Unwritten {
    /// The record waited for.
    pub seq: u64,
    /// How far the journal got.
    pub written: u64,
}

impl Recorder {
    /// A recorder writing to `journal`, stamping with `clock`.
    pub fn new(journal: Arc<dyn Journal>, clock: Clock) -> Self {
        let watermark = journal.watermark();
        Recorder {
            journal,
            clock,
            watermark,
        }
    }

    /// What to await before reporting or acting on record `seq`: `None` when it is
    /// written already (or the journal's `append` is the write, or it wrote the record
    /// when asked to: the SQLite journal in relaxed mode commits on the asking thread when
    /// nothing else commits), else a future that ends once the journal has written it, or
    /// fails if the journal stops first.
    pub fn until_written(
        &self,
        seq: u64,
    ) -> Option<impl Future<Output = Result<(), Unwritten>> + 'static + use<>> {
        let mut rx = self.ask_written(seq)?.clone();
        Some(async move {
            let reached = rx
                .wait_for(|w| w.covers(seq) || w.stopped)
                .await
                .map(|w| *w);
            match reached {
                Ok(w) if w.covers(seq) => Ok(()),
                Ok(w) => Err(Unwritten {
                    seq,
                    written: w.written,
                }),
                Err(_) => Err(Unwritten { seq, written: 0 }),
            }
        })
    }

    /// Appends `event` stamped now and returns once the journal has written it (at once
    /// for a journal whose `append` is the write).
    pub async fn record_written(&self, event: Event) -> Result<u64, Unwritten> {
        let seq = self.record(event);
        if let Some(w) = self.until_written(seq) {
            w.await?;
        }
        Ok(seq)
    }

    /// Asks the journal to write record `seq` now; the watermark to wait on for it, or
    /// `None` when there is nothing to wait for (as [`Recorder::until_written`]).
    pub(crate) fn ask_written(&self, seq: u64) -> Option<&watch::Receiver<Watermark>> {
        let rx = self.watermark.as_ref()?;
        if rx.borrow().covers(seq) {
            return None;
        }
        self.journal.want(seq);
        // A journal may commit on the caller's thread when asked (SQLite, relaxed, with
        // nothing else committing): then there is nothing to wait for.
        if rx.borrow().covers(seq) {
            return None;
        }
        Some(rx)
    }

    /// Appends `events` stamped now as one group ([`Journal::append_group`]: one commit)
    /// and waits until the group is written; returns the last record's sequence number.
    ///
    /// # Example
    /// ```
    /// # async fn demo() -> Result<(), muster_core::journal::Unwritten> {
    /// use std::sync::Arc;
    /// use muster_core::clock::Clock;
    /// use muster_core::journal::{Event, Journal, MemoryJournal, Recorder};
    ///
    /// let j = Arc::new(MemoryJournal::default());
    /// let r = Recorder::new(j.clone(), Clock::fixed(0));
    /// let note = |t: &str| Event::Note { text: t.into() };
    /// assert_eq!(r.record_group_written(vec![note("a"), note("b")]).await?, 2);
    /// # Ok(()) }
    /// ```
    pub async fn record_group_written(&self, events: Vec<Event>) -> Result<u64, Unwritten> {
        let last = self.journal.append_group(self.clock.now_ms(), events);
        if let Some(w) = self.until_written(last) {
            w.await?;
        }
        Ok(last)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::HeldJournal;

    fn note() -> Event {
        Event::Note { text: "x".into() }
    }

    #[test]
    fn a_journal_that_writes_when_asked_leaves_nothing_to_wait_for() {
        // The SQLite journal in relaxed mode commits on the asking thread when nothing
        // else commits: the caller then goes on without a wait (and without a task
        // spawned to wait).
        let r = Recorder::new(
            Arc::new(HeldJournal::writing_when_wanted()),
            Clock::fixed(0),
        );
        let seq = r.record(note());
        assert!(r.until_written(seq).is_none(), "written when asked");
        // One that writes later leaves a wait.
        let r = Recorder::new(Arc::new(HeldJournal::new()), Clock::fixed(0));
        let seq = r.record(note());
        assert!(r.until_written(seq).is_some(), "not written yet");
    }
}
