//! A journal that tells listeners what it appends: [`TapJournal`] wraps another journal and
//! broadcasts every appended [`Record`] on a bounded tokio broadcast channel.
//!
//! It owns the live feed of the journal (what `muster serve`'s event stream and metrics
//! follow) and nothing else: the wrapped journal stays the source of truth. The channel is
//! bounded, so a listener that falls behind loses its place (`RecvError::Lagged`) and must
//! re-read what it missed from the journal ([`Journal::read_after`]) rather than drop it;
//! appends never wait for a listener. With no listener, an append costs one atomic load
//! more than the wrapped journal's. It must not interpret events.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::{Event, Journal, JournalLayer, Record};

/// Records buffered per listener before it lags, by default.
pub const DEFAULT_TAP_CAPACITY: usize = 1024;

/// A journal that broadcasts every appended record to its listeners.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use muster_core::journal::{Event, Journal, MemoryJournal, TapJournal};
///
/// let tap = TapJournal::new(Arc::new(MemoryJournal::default()), 16);
/// let mut live = tap.subscribe();
/// let seq = tap.append(7, Event::Note { text: "hello".into() });
/// let r = live.try_recv().unwrap();
/// assert_eq!((r.seq, r.at_ms), (seq, 7));
/// assert_eq!(tap.read_after(0).len(), 1); // the wrapped journal has it too
/// ```
#[derive(Debug)]
pub struct TapJournal {
    inner: Arc<dyn Journal>,
    tx: broadcast::Sender<Arc<Record>>,
}

impl TapJournal {
    /// Wraps `inner`; each listener buffers up to `capacity` records (at least 1).
    pub fn new(inner: Arc<dyn Journal>, capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        TapJournal { inner, tx }
    }

    /// A listener: receives every record appended from now on. One that falls more than
    /// the capacity behind gets `Lagged` and should re-read from [`Journal::read_after`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        self.tx.subscribe()
    }

    /// How many listeners there are now.
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The wrapped journal.
    pub fn inner(&self) -> &Arc<dyn Journal> {
        &self.inner
    }
}

impl JournalLayer for TapJournal {
    fn inner(&self) -> &dyn Journal {
        &*self.inner
    }

    fn intercept(&self, at_ms: u64, event: Event) -> u64 {
        if self.tx.receiver_count() == 0 {
            return self.inner.append(at_ms, event);
        }
        let copy = event.clone();
        let seq = self.inner.append(at_ms, event);
        // No listener left between the check and the send is not an error.
        let _ = self.tx.send(Arc::new(Record {
            seq,
            at_ms,
            event: copy,
        }));
        seq
    }

    /// The group goes to the wrapped journal whole (one commit), then to the listeners.
    fn intercept_group(&self, at_ms: u64, events: Vec<Event>) -> u64 {
        if self.tx.receiver_count() == 0 {
            return self.inner.append_group(at_ms, events);
        }
        let copies = events.clone();
        let n = copies.len() as u64;
        let last = self.inner.append_group(at_ms, events);
        // Numbered consecutively, ending at `last`.
        for (seq, event) in (last + 1 - n..=last).zip(copies) {
            let _ = self.tx.send(Arc::new(Record { seq, at_ms, event }));
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::MemoryJournal;

    #[test]
    fn a_lagging_listener_is_told_and_the_journal_keeps_everything() {
        let tap = TapJournal::new(Arc::new(MemoryJournal::default()), 2);
        let mut slow = tap.subscribe();
        for i in 0..5 {
            tap.append(
                i,
                Event::Note {
                    text: i.to_string(),
                },
            );
        }
        assert!(matches!(
            slow.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(3))
        ));
        assert_eq!(tap.read_after(0).len(), 5);
    }
}
