//! The in-memory journal: records in fixed-size chunks behind a mutex. For tests, benches
//! and simulations.
//!
//! Chunks (rather than one growing vector) keep appends O(1) without ever copying the
//! records already written: a long benchmark would otherwise spend its time re-copying a
//! vector of millions of events each time it doubled.

use parking_lot::Mutex;

use super::{Event, Journal, Record};

// Small enough (~60 KB) that a chunk comes from the heap, not a fresh mmap.
const CHUNK: usize = 512;

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
    inner: Mutex<Chunks>,
}

#[derive(Debug, Default)]
struct Chunks {
    chunks: Vec<Vec<Record>>,
    len: u64,
}

impl Journal for MemoryJournal {
    fn append(&self, at_ms: u64, event: Event) -> u64 {
        let mut g = self.inner.lock();
        g.len += 1;
        let seq = g.len;
        match g.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => c.push(Record { seq, at_ms, event }),
            _ => {
                let mut c = Vec::with_capacity(CHUNK);
                c.push(Record { seq, at_ms, event });
                g.chunks.push(c);
            }
        }
        seq
    }

    fn read_after(&self, after: u64) -> Vec<Record> {
        let g = self.inner.lock();
        let skip = after as usize;
        let first = skip / CHUNK;
        let mut out = Vec::with_capacity((g.len as usize).saturating_sub(skip));
        for (i, c) in g.chunks.iter().enumerate().skip(first) {
            let from = if i == first { skip % CHUNK } else { 0 };
            out.extend(c.iter().skip(from).cloned());
        }
        out
    }

    fn len(&self) -> u64 {
        self.inner.lock().len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_across_chunks_are_in_order_and_gap_free() {
        let j = MemoryJournal::default();
        for i in 0..(CHUNK * 2 + 10) {
            j.append(
                i as u64,
                Event::Note {
                    text: i.to_string(),
                },
            );
        }
        let all = j.read_after(0);
        assert_eq!(all.len(), CHUNK * 2 + 10);
        assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        let tail = j.read_after(CHUNK as u64 + 3);
        assert_eq!(tail[0].seq, CHUNK as u64 + 4);
        assert_eq!(tail.len(), CHUNK + 7);
    }
}
