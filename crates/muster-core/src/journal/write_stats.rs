//! How a journal that writes behind `append` is doing: group commits, records written,
//! commit latency and batch size, counted with atomics by the writer and read by anyone
//! (the telemetry layer renders them as Prometheus histograms).
//!
//! It only counts; it must not slow the writer (one atomic add per field per commit) nor
//! decide anything from what it counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the commit-latency buckets, in seconds (the last bucket is `+Inf`).
pub const COMMIT_SECONDS_BOUNDS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// Upper bounds of the batch-size buckets, in records per commit (the last is `+Inf`).
pub const BATCH_RECORDS_BOUNDS: [f64; 8] = [1.0, 2.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 8192.0];

/// A journal writer's counters: a journal implementation with a writer of its own (the
/// SQLite journal's writer thread) counts its commits here and answers
/// [`Journal::write_stats`](super::Journal::write_stats) from them.
#[derive(Debug, Default)]
pub struct WriteCounters {
    commits: AtomicU64,
    records: AtomicU64,
    nanos: AtomicU64,
    commit_buckets: [AtomicU64; COMMIT_SECONDS_BOUNDS.len()],
    batch_buckets: [AtomicU64; BATCH_RECORDS_BOUNDS.len()],
}

impl WriteCounters {
    /// Counts one group commit of `records` records that took `took`.
    pub fn commit(&self, records: usize, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = COMMIT_SECONDS_BOUNDS.iter().position(|b| secs <= *b) {
            self.commit_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let n = records as f64;
        if let Some(i) = BATCH_RECORDS_BOUNDS.iter().position(|b| n <= *b) {
            self.batch_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> WriteStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriteStats {
            commits: load(&self.commits),
            records: load(&self.records),
            commit_seconds: load(&self.nanos) as f64 / 1e9,
            commit_buckets: self.commit_buckets.iter().map(load).collect(),
            batch_buckets: self.batch_buckets.iter().map(load).collect(),
        }
    }
}

/// What a journal's writer has done since it was opened (see
/// [`Journal::write_stats`](super::Journal::write_stats)).
///
/// A journal whose `append` is the write (memory) has none; the SQLite journal of the
/// `muster` crate counts its group commits (its docs show them).
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Journal, MemoryJournal};
///
/// let j = MemoryJournal::default();
/// j.append(0, Event::Note { text: "x".into() });
/// assert!(j.write_stats().is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteStats {
    /// Group commits (one transaction each).
    pub commits: u64,
    /// Records committed.
    pub records: u64,
    /// Time spent committing, in seconds, summed.
    pub commit_seconds: f64,
    /// Commits per latency bucket ([`COMMIT_SECONDS_BOUNDS`]; not cumulative; a commit
    /// slower than the last bound is in none).
    pub commit_buckets: Vec<u64>,
    /// Commits per batch-size bucket ([`BATCH_RECORDS_BOUNDS`]; not cumulative).
    pub batch_buckets: Vec<u64>,
}
