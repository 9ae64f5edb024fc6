//! Dead letters: the most recent envelopes that could not be delivered, with their reason.
//!
//! Owns a bounded ring ([`DEFAULT_DEAD_LETTERS`] by default) and the count of every dead
//! letter ever kept, so a runtime that fails envelopes for weeks holds a bounded list. The
//! record that nothing was dropped silently is the journal: every dead letter is first
//! journaled `envelope_failed` (by the router), and the SQLite journal keeps them all. It
//! must not grow without bound.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use super::envelope::Envelope;
use super::failure::FailureReason;

/// How many dead letters a runtime keeps in memory by default (the most recent ones).
pub const DEFAULT_DEAD_LETTERS: usize = 1_000;

/// An undeliverable envelope and why.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The envelope.
    pub envelope: Arc<Envelope>,
    /// Why it was not delivered.
    pub reason: FailureReason,
    /// Details.
    pub detail: String,
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

/// The most recent dead letters, at most `capacity` of them, and how many there were.
///
/// # Example
/// ```
/// use muster_core::messaging::DeadLetters;
///
/// let d = DeadLetters::with_capacity(10);
/// assert!(d.is_empty());
/// assert_eq!((d.len(), d.total(), d.dropped()), (0, 0, 0));
/// ```
#[derive(Debug)]
pub struct DeadLetters {
    ring: Mutex<Ring>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Ring {
    list: VecDeque<DeadLetter>,
    total: u64,
}

impl Default for DeadLetters {
    fn default() -> Self {
        DeadLetters::with_capacity(DEFAULT_DEAD_LETTERS)
    }
}

impl DeadLetters {
    /// A list keeping the `capacity` most recent dead letters.
    pub fn with_capacity(capacity: usize) -> Self {
        DeadLetters {
            ring: Mutex::new(Ring::default()),
            capacity,
        }
    }

    pub(crate) fn push(&self, d: DeadLetter) {
        let mut g = self.ring.lock();
        g.total += 1;
        if self.capacity == 0 {
            return;
        }
        if g.list.len() >= self.capacity {
            g.list.pop_front();
        }
        g.list.push_back(d);
    }

    /// The dead letters kept, oldest first.
    pub fn list(&self) -> Vec<DeadLetter> {
        self.ring.lock().list.iter().cloned().collect()
    }

    /// How many are kept now (at most the capacity).
    pub fn len(&self) -> usize {
        self.ring.lock().list.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Dead letters ever, kept or not.
    pub fn total(&self) -> u64 {
        self.ring.lock().total
    }

    /// Dead letters no longer kept (older than the most recent `capacity`); the journal
    /// still has each.
    pub fn dropped(&self) -> u64 {
        let g = self.ring.lock();
        g.total - g.list.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::Recipient;

    #[test]
    fn the_ring_keeps_the_most_recent_and_counts_the_dropped() {
        let d = DeadLetters::with_capacity(3);
        for i in 0..10u64 {
            let e = Envelope::new(
                "t",
                Recipient::Capability("c".into()),
                "s",
                serde_json::json!(i),
            );
            d.push(DeadLetter {
                envelope: Arc::new(e),
                reason: FailureReason::NoCapableAgent,
                detail: String::new(),
                at_ms: i,
            });
        }
        let kept: Vec<u64> = d.list().iter().map(|l| l.at_ms).collect();
        assert_eq!(kept, vec![7, 8, 9]);
        assert_eq!((d.len(), d.total(), d.dropped()), (3, 10, 7));
    }
}
