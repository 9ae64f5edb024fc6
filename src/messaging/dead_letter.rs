//! Dead letters: every envelope that could not be delivered, with its reason.

use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use super::envelope::Envelope;
use super::failure::FailureReason;

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

/// The dead-letter list. Nothing leaves it: it is the record that nothing was dropped.
#[derive(Debug, Default)]
pub struct DeadLetters {
    list: Mutex<Vec<DeadLetter>>,
}

impl DeadLetters {
    pub(crate) fn push(&self, d: DeadLetter) {
        self.list.lock().push(d);
    }

    /// Every dead letter so far, oldest first.
    pub fn list(&self) -> Vec<DeadLetter> {
        self.list.lock().clone()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.list.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
