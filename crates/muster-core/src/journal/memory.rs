//! The in-memory journal: a bounded ring of the most recent records. For tests, benches,
//! simulations and runtimes that need no history on disk.
//!
//! Owns the retention bound of a journal kept in memory: at most
//! [`JournalConfig::retain_records`] records (10,000 by default) and, if set, none older
//! than [`JournalConfig::retain_for`] behind the newest; older records are dropped as new
//! ones arrive, so a runtime that runs for weeks holds a bounded history (memory held per
//! finished task must not grow). Sequence numbers stay gap-free and keep counting:
//! [`Journal::len`] is the number of records ever appended, [`MemoryJournal::retained`]
//! how many are still held, and [`Journal::read_after`] returns the retained ones only.
//! Whatever must see every record (a digest, a tally) sees it as it is appended, in front
//! of this journal (as `TallyJournal` does); the whole history belongs in the SQLite
//! journal, which is what recovery reads. It must not grow without bound.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;

use super::{Event, Journal, JournalConfig, Record};

/// Keeps the most recent records in memory, within a bound.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Journal, JournalConfig, MemoryJournal};
///
/// let j = MemoryJournal::default();
/// j.append(5, Event::Note { text: "hello".into() });
/// assert_eq!(j.read_after(0)[0].seq, 1);
///
/// // A ring of two records: the oldest go, the numbering goes on.
/// let small = MemoryJournal::new(JournalConfig { retain_records: 2, ..JournalConfig::default() });
/// for t in 0..5 {
///     small.append(t, Event::Note { text: t.to_string() });
/// }
/// assert_eq!(small.len(), 5);
/// assert_eq!(small.retained(), 2);
/// assert_eq!(small.read_after(0)[0].seq, 4);
/// ```
#[derive(Debug)]
pub struct MemoryJournal {
    inner: Mutex<Ring>,
    retain_records: usize,
    retain_for: Option<Duration>,
    max_payload_bytes: usize,
}

#[derive(Debug, Default)]
struct Ring {
    records: VecDeque<Record>,
    /// Records ever appended: the last sequence number.
    len: u64,
}

impl Default for MemoryJournal {
    fn default() -> Self {
        MemoryJournal::new(JournalConfig::default())
    }
}

impl MemoryJournal {
    /// Numbers `event` and keeps it (evicting by the retention bounds); returns the record
    /// evicted by count, for the caller to free once the lock is released.
    fn push(&self, g: &mut Ring, at_ms: u64, event: Event) -> Option<Record> {
        g.len += 1;
        if self.retain_records == 0 {
            return None;
        }
        let mut evicted = None;
        if g.records.len() >= self.retain_records {
            evicted = g.records.pop_front();
        }
        if let Some(age) = self.retain_for {
            let horizon = at_ms.saturating_sub(age.as_millis() as u64);
            while g.records.front().is_some_and(|r| r.at_ms < horizon) {
                g.records.pop_front();
            }
        }
        let seq = g.len;
        g.records.push_back(Record { seq, at_ms, event });
        evicted
    }

    /// A memory journal with `config`'s retention bound and payload limit.
    pub fn new(config: JournalConfig) -> Self {
        MemoryJournal {
            inner: Mutex::new(Ring::default()),
            retain_records: config.retain_records,
            retain_for: config.retain_for,
            max_payload_bytes: config.max_payload_bytes,
        }
    }

    /// Records held now (at most [`JournalConfig::retain_records`]).
    pub fn retained(&self) -> usize {
        self.inner.lock().records.len()
    }

    /// Records dropped from the ring so far (appended minus retained).
    pub fn dropped(&self) -> u64 {
        let g = self.inner.lock();
        g.len - g.records.len() as u64
    }
}

impl Journal for MemoryJournal {
    fn append(&self, at_ms: u64, event: Event) -> u64 {
        let mut g = self.inner.lock();
        // The evicted record is freed after the lock is released: its destructor (the
        // envelope, the payload's map) is the costly part, and no other shard waits on it.
        let evicted = self.push(&mut g, at_ms, event);
        let seq = g.len;
        drop(g);
        drop(evicted);
        seq
    }

    /// The group under one lock: numbered consecutively, nothing between its records.
    fn append_group(&self, at_ms: u64, events: Vec<Event>) -> u64 {
        let mut g = self.inner.lock();
        let evicted: Vec<Option<Record>> = events
            .into_iter()
            .map(|event| self.push(&mut g, at_ms, event))
            .collect();
        let last = g.len;
        drop(g);
        drop(evicted);
        last
    }

    fn read_after(&self, after: u64) -> Vec<Record> {
        self.read_batch(after, usize::MAX)
    }

    fn read_batch(&self, after: u64, max: usize) -> Vec<Record> {
        let g = self.inner.lock();
        // Sequence numbers in the ring are consecutive: the first one settles the offset.
        let first = g.records.front().map_or(g.len + 1, |r| r.seq);
        let skip = after.saturating_add(1).saturating_sub(first) as usize;
        g.records.iter().skip(skip).take(max).cloned().collect()
    }

    fn len(&self) -> u64 {
        self.inner.lock().len
    }

    fn model_call_counts(&self, tasks: &[uuid::Uuid]) -> HashMap<(uuid::Uuid, u64), u32> {
        // Counted under the lock: no record is cloned.
        let mut counts = HashMap::new();
        if !tasks.is_empty() {
            let g = self.inner.lock();
            super::count_model_calls(g.records.iter().map(|r| &r.event), tasks, &mut counts);
        }
        counts
    }

    fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_numbered_consecutively_while_others_append() {
        let j = std::sync::Arc::new(MemoryJournal::default());
        let other = j.clone();
        let singles = std::thread::spawn(move || {
            for at in 0..2_000 {
                note(&other, at);
            }
        });
        let mut groups = Vec::new();
        for _ in 0..200 {
            let text = |t: &str| Event::Note { text: t.into() };
            let last = j.append_group(0, vec![text("g1"), text("g2"), text("g3")]);
            groups.push(last);
        }
        singles.join().expect("the other appender");
        let records = j.read_after(0);
        for last in groups {
            let texts: Vec<String> = records
                .iter()
                .filter(|r| (last - 2..=last).contains(&r.seq))
                .map(|r| match &r.event {
                    Event::Note { text } => text.clone(),
                    other => other.kind().to_string(),
                })
                .collect();
            assert_eq!(texts, ["g1", "g2", "g3"], "the group ending at {last}");
        }
    }

    fn note(j: &MemoryJournal, at: u64) {
        j.append(
            at,
            Event::Note {
                text: at.to_string(),
            },
        );
    }

    #[test]
    fn reads_are_in_order_and_gap_free() {
        let j = MemoryJournal::default();
        for i in 0..1034 {
            note(&j, i);
        }
        let all = j.read_after(0);
        assert_eq!(all.len(), 1034);
        assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        let tail = j.read_after(515);
        assert_eq!(tail[0].seq, 516);
        assert_eq!(tail.len(), 1034 - 515);
    }

    #[test]
    fn the_ring_holds_at_most_its_capacity_and_keeps_numbering() {
        let j = MemoryJournal::new(JournalConfig {
            retain_records: 100,
            ..JournalConfig::default()
        });
        for i in 0..1000 {
            note(&j, i);
            assert!(j.retained() <= 100);
        }
        assert_eq!((j.len(), j.retained(), j.dropped()), (1000, 100, 900));
        let kept = j.read_after(0);
        assert_eq!(kept.first().map(|r| r.seq), Some(901));
        assert_eq!(kept.last().map(|r| r.seq), Some(1000));
        assert_eq!(j.read_after(950).len(), 50);
        assert!(j.read_after(1000).is_empty());
    }

    #[test]
    fn records_older_than_the_age_bound_are_dropped() {
        let j = MemoryJournal::new(JournalConfig {
            retain_for: Some(Duration::from_millis(10)),
            ..JournalConfig::default()
        });
        for at in 0..100 {
            note(&j, at);
        }
        let kept = j.read_after(0);
        assert_eq!(kept.first().map(|r| r.at_ms), Some(89));
        assert_eq!(kept.len(), 11);
        assert_eq!(j.len(), 100);
    }

    #[test]
    fn a_ring_of_zero_keeps_nothing_but_counts() {
        let j = MemoryJournal::new(JournalConfig {
            retain_records: 0,
            ..JournalConfig::default()
        });
        for at in 0..10 {
            assert_eq!(j.append(at, Event::Note { text: "x".into() }), at + 1);
        }
        assert!(j.read_after(0).is_empty());
        assert_eq!(j.len(), 10);
    }
}
