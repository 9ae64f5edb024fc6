//! A journal that writes behind its appends, as a durable one does, with the caller in
//! charge of when: [`HeldJournal`], for tests of what waits for a record to be written
//! (an outcome, a claimed effect, a progress line) and what must not wait for others.
//!
//! It keeps its records in a [`MemoryJournal`] and reports them written through the same
//! [`Watermark`] a durable journal's writer moves. It must not be used to keep records
//! that matter: nothing is ever written anywhere.

use std::sync::Arc;

use tokio::sync::watch;

use super::{Event, Journal, MemoryJournal, Record, Watermark};

/// When a [`HeldJournal`] calls its records written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// Only when told ([`HeldJournal::write_up_to`]).
    WhenTold,
    /// Each record as soon as it is appended, with another writer's record appended right
    /// behind it and left unwritten (someone else's slow commit).
    Racing,
    /// Up to a record as soon as someone asks for it ([`Journal::want`]), on the asking
    /// thread, as the SQLite journal does in relaxed mode when nothing else commits.
    WhenWanted,
}

/// A memory journal whose writes are acknowledged when the caller says so.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, HeldJournal, Journal};
///
/// let j = HeldJournal::new();
/// let seq = j.append(0, Event::Note { text: "hello".into() });
/// assert!(!j.written().covers(seq));
/// j.write_up_to(seq);
/// assert!(j.written().covers(seq));
///
/// // Racing: a record is written at once, but another one lands behind it unwritten.
/// let r = HeldJournal::racing();
/// let seq = r.append(0, Event::Note { text: "mine".into() });
/// assert!(r.written().covers(seq));
/// assert!(!r.written().covers(r.len()));
/// ```
#[derive(Debug)]
pub struct HeldJournal {
    memory: Arc<MemoryJournal>,
    written: watch::Sender<Watermark>,
    writes: Writes,
}

impl Default for HeldJournal {
    fn default() -> Self {
        Self::new()
    }
}

impl HeldJournal {
    /// A journal that writes nothing until [`write_up_to`](Self::write_up_to).
    pub fn new() -> Self {
        Self::with(Writes::WhenTold)
    }

    /// A journal that writes each record as it is appended while another writer races it:
    /// right behind each record, another one is appended that is never written.
    pub fn racing() -> Self {
        Self::with(Writes::Racing)
    }

    /// A journal that writes up to a record when someone asks for it
    /// ([`Journal::want`]), before `want` returns.
    ///
    /// # Example
    /// ```
    /// use muster_core::journal::{Event, HeldJournal, Journal};
    ///
    /// let j = HeldJournal::writing_when_wanted();
    /// let seq = j.append(0, Event::Note { text: "hello".into() });
    /// assert!(!j.written().covers(seq));
    /// j.want(seq);
    /// assert!(j.written().covers(seq));
    /// ```
    pub fn writing_when_wanted() -> Self {
        Self::with(Writes::WhenWanted)
    }

    fn with(writes: Writes) -> Self {
        HeldJournal {
            memory: Arc::new(MemoryJournal::default()),
            written: watch::channel(Watermark::default()).0,
            writes,
        }
    }

    /// Calls every record up to `seq` written (never fewer than already are).
    pub fn write_up_to(&self, seq: u64) {
        self.written.send_modify(|w| w.written = w.written.max(seq));
    }

    /// Stops the writer: what is not written now never will be.
    pub fn stop(&self) {
        self.written.send_modify(|w| w.stopped = true);
    }

    /// How far it has written.
    pub fn written(&self) -> Watermark {
        *self.written.borrow()
    }

    /// The records, written or not.
    pub fn memory(&self) -> &Arc<MemoryJournal> {
        &self.memory
    }
}

impl Journal for HeldJournal {
    fn append(&self, at_ms: u64, event: Event) -> u64 {
        let seq = self.memory.append(at_ms, event);
        if self.writes == Writes::Racing {
            self.write_up_to(seq);
            self.memory.append(
                at_ms,
                Event::Note {
                    text: "another writer's record, not written yet".into(),
                },
            );
        }
        seq
    }

    fn append_group(&self, at_ms: u64, events: Vec<Event>) -> u64 {
        let last = self.memory.append_group(at_ms, events);
        if self.writes == Writes::Racing {
            self.write_up_to(last);
            self.memory.append(
                at_ms,
                Event::Note {
                    text: "another writer's record, not written yet".into(),
                },
            );
        }
        last
    }

    fn read_after(&self, after: u64) -> Vec<Record> {
        self.memory.read_after(after)
    }

    fn len(&self) -> u64 {
        self.memory.len()
    }

    fn watermark(&self) -> Option<watch::Receiver<Watermark>> {
        Some(self.written.subscribe())
    }

    fn want(&self, seq: u64) {
        if self.writes == Writes::WhenWanted {
            self.write_up_to(seq);
        }
    }
}
