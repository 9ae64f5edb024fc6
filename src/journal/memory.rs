//! The in-memory journal: a vector behind a mutex. For tests, benches and simulations.

use parking_lot::Mutex;

use super::{Event, Journal, Record};

/// Keeps every record in memory.
///
/// # Example
/// ```
/// use muster::journal::{Event, Journal, MemoryJournal};
///
/// let j = MemoryJournal::default();
/// j.append(5, Event::Note { text: "hello".into() });
/// assert_eq!(j.read_after(0)[0].seq, 1);
/// ```
#[derive(Debug, Default)]
pub struct MemoryJournal {
    records: Mutex<Vec<Record>>,
}

impl Journal for MemoryJournal {
    fn append(&self, at_ms: u64, event: Event) -> u64 {
        let mut r = self.records.lock();
        let seq = r.len() as u64 + 1;
        r.push(Record { seq, at_ms, event });
        seq
    }

    fn read_after(&self, after: u64) -> Vec<Record> {
        let r = self.records.lock();
        r.iter().skip(after as usize).cloned().collect()
    }

    fn len(&self) -> u64 {
        self.records.lock().len() as u64
    }
}
