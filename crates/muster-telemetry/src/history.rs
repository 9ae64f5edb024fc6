//! The last hour of a node's work in ten-second samples, for a dashboard that draws it
//! without a Prometheus server: tasks completed, the task latency's p50 and p99, and
//! failed attempts and reassignments by capability.
//!
//! Owns [`History`]: fed the journal's records (by [`Metrics::observe`](super::Metrics)),
//! it keeps a ring of at most [`SAMPLES`] samples, each [`INTERVAL_MS`] of the records'
//! own time (their `at_ms`, so a replay or a simulation keeps its own clock), and
//! answers a [`HistoryDoc`]. Memory is bounded whatever the journal holds: a sample is a
//! fixed histogram and at most [`CAPABILITY_CAP`] capabilities (the rest fold into
//! `other`); tasks waiting for their result are remembered up to a cap, oldest forgotten
//! first. It must not read the journal or the clock itself.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use uuid::Uuid;

use super::bounded::{Bounded, LabelCap};
use muster_core::journal::{Event, Record};

/// The time one sample covers, ms.
pub const INTERVAL_MS: u64 = 10_000;
/// How many samples the ring keeps: an hour.
pub const SAMPLES: usize = 360;
/// Distinct capabilities counted by name; the rest are counted as `other`.
pub const CAPABILITY_CAP: usize = 32;
/// Tasks remembered while they wait for their result (for their latency).
pub const OPEN_TASKS: usize = 100_000;

/// The latency histogram's buckets: upper bounds in ms, each 25% above the one before,
/// from 1 ms to about 2.5 hours; a quantile is answered as its bucket's upper bound.
const BUCKETS: usize = 72;

fn bucket_bound(i: usize) -> f64 {
    1.25f64.powi(i as i32)
}

fn bucket_of(ms: u64) -> usize {
    (0..BUCKETS)
        .find(|&i| ms as f64 <= bucket_bound(i))
        .unwrap_or(BUCKETS - 1)
}

#[derive(Debug, Clone)]
struct Sample {
    start_ms: u64,
    completed: u64,
    latency: [u32; BUCKETS],
    failures: BTreeMap<String, u64>,
    reassignments: BTreeMap<String, u64>,
}

impl Sample {
    fn new(start_ms: u64) -> Self {
        Sample {
            start_ms,
            completed: 0,
            latency: [0; BUCKETS],
            failures: BTreeMap::new(),
            reassignments: BTreeMap::new(),
        }
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        let n: u64 = self.latency.iter().map(|&c| u64::from(c)).sum();
        if n == 0 {
            return None;
        }
        let rank = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &c) in self.latency.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some((bucket_bound(i) * 10.0).round() / 10.0);
            }
        }
        None
    }
}

/// One sample of [`HistoryDoc`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleDoc {
    /// Where the sample starts, Unix ms.
    pub at_ms: u64,
    /// Tasks whose result was accepted.
    pub tasks: u64,
    /// `tasks` per second of the sample.
    pub tasks_per_s: f64,
    /// The median latency (submission to accepted result) of those tasks, ms (`null`
    /// when none completed), to 25%.
    pub p50_ms: Option<f64>,
    /// The 99th percentile, ms, to 25%.
    pub p99_ms: Option<f64>,
    /// Failed attempts, by capability.
    pub failures: BTreeMap<String, u64>,
    /// Leases granted to a second or later attempt, by capability.
    pub reassignments: BTreeMap<String, u64>,
}

/// What `GET /v1/metrics/history` answers: the samples, oldest first, up to `now_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryDoc {
    /// [`INTERVAL_MS`].
    pub interval_ms: u64,
    /// [`SAMPLES`].
    pub max_samples: usize,
    /// [`CAPABILITY_CAP`].
    pub capability_cap: usize,
    /// The samples, oldest first (empty ones included, from the first record observed).
    pub samples: Vec<SampleDoc>,
}

/// A ring of samples of the last hour (see the module docs).
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Record};
/// use muster_telemetry::history::History;
/// use serde_json::json;
///
/// let mut h = History::default();
/// let task = uuid::Uuid::now_v7();
/// let at = |ms, event| Record { seq: 1, at_ms: ms, event };
/// h.observe(&at(1_000, Event::TaskSubmitted { task, capability: "echo".into(),
///     correlation: task, input: json!({}).into(), attempts: 1, timeout_ms: 1000,
///     sender: String::new() }));
/// h.observe(&at(1_040, Event::ResultAccepted { task, agent: "echo#0".into(), epoch: 1,
///     output: json!({}).into() }));
/// let doc = h.doc(5_000);
/// assert_eq!(doc.samples.len(), 1);
/// assert_eq!(doc.samples[0].tasks, 1);
/// assert!(doc.samples[0].p50_ms.unwrap() >= 40.0);
/// ```
#[derive(Debug)]
pub struct History {
    ring: VecDeque<Sample>,
    capabilities: LabelCap,
    /// task → (first submission, capability label).
    open: Bounded<Uuid, (u64, String)>,
}

impl Default for History {
    fn default() -> Self {
        History {
            ring: VecDeque::new(),
            capabilities: LabelCap::new(CAPABILITY_CAP),
            open: Bounded::new(OPEN_TASKS),
        }
    }
}

impl History {
    /// The sample that holds `at_ms`, rolling the ring forward to it; `None` for a time
    /// older than the ring.
    fn sample(&mut self, at_ms: u64) -> Option<&mut Sample> {
        let start = at_ms - at_ms % INTERVAL_MS;
        let last = self.ring.back().map(|s| s.start_ms);
        match last {
            None => self.ring.push_back(Sample::new(start)),
            Some(l) if start > l => {
                let gap = (start - l) / INTERVAL_MS;
                if gap as usize > SAMPLES {
                    self.ring.clear();
                    self.ring.push_back(Sample::new(start));
                } else {
                    for k in 1..=gap {
                        self.ring.push_back(Sample::new(l + k * INTERVAL_MS));
                    }
                }
                while self.ring.len() > SAMPLES {
                    self.ring.pop_front();
                }
            }
            Some(_) => {}
        }
        self.ring.iter_mut().rev().find(|s| s.start_ms == start)
    }

    /// Counts one journal record (the caller sees each record once, in order).
    pub fn observe(&mut self, r: &Record) {
        match &r.event {
            // A resumed task is submitted again: its latency runs from the first.
            Event::TaskSubmitted {
                task, capability, ..
            } if !self.open.contains(task) => {
                let cap = self.capabilities.label(capability);
                self.open.insert(*task, (r.at_ms, cap));
            }
            // A reused result ends its task with an output, as an accepted one does.
            Event::ResultAccepted { task, .. } | Event::TaskReused { task, .. } => {
                let opened = self.open.remove(task);
                if let Some(s) = self.sample(r.at_ms) {
                    s.completed += 1;
                    if let Some((submitted, _)) = opened {
                        let b = bucket_of(r.at_ms.saturating_sub(submitted));
                        s.latency[b] = s.latency[b].saturating_add(1);
                    }
                }
            }
            Event::AttemptFailed { task, .. } => {
                let cap = self.capability(task);
                if let Some(s) = self.sample(r.at_ms) {
                    *s.failures.entry(cap).or_default() += 1;
                }
            }
            Event::LeaseGranted { task, attempt, .. } if *attempt > 1 => {
                let cap = self.capability(task);
                if let Some(s) = self.sample(r.at_ms) {
                    *s.reassignments.entry(cap).or_default() += 1;
                }
            }
            Event::TaskEscalated { task, .. } | Event::TaskCancelled { task, .. } => {
                self.open.remove(task);
            }
            _ => {}
        }
    }

    fn capability(&mut self, task: &Uuid) -> String {
        self.open
            .get_mut(task)
            .map_or_else(|| super::bounded::OTHER.to_string(), |(_, c)| c.clone())
    }

    /// The samples up to `now_ms` (empty ones added up to it), oldest first.
    pub fn doc(&mut self, now_ms: u64) -> HistoryDoc {
        if !self.ring.is_empty() {
            let _ = self.sample(now_ms);
        }
        let secs = INTERVAL_MS as f64 / 1000.0;
        HistoryDoc {
            interval_ms: INTERVAL_MS,
            max_samples: SAMPLES,
            capability_cap: CAPABILITY_CAP,
            samples: self
                .ring
                .iter()
                .map(|s| SampleDoc {
                    at_ms: s.start_ms,
                    tasks: s.completed,
                    tasks_per_s: (s.completed as f64 / secs * 100.0).round() / 100.0,
                    p50_ms: s.quantile(0.5),
                    p99_ms: s.quantile(0.99),
                    failures: s.failures.clone(),
                    reassignments: s.reassignments.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(at_ms: u64, event: Event) -> Record {
        Record {
            seq: 1,
            at_ms,
            event,
        }
    }

    fn submitted(task: Uuid, cap: &str) -> Event {
        Event::TaskSubmitted {
            task,
            capability: cap.into(),
            correlation: task,
            input: json!({}).into(),
            attempts: 3,
            timeout_ms: 1000,
            sender: String::new(),
        }
    }

    #[test]
    fn the_ring_keeps_an_hour_whatever_it_is_fed() {
        let mut h = History::default();
        // Two hours of one task a second.
        for s in 0..7_200u64 {
            let t = Uuid::now_v7();
            h.observe(&rec(s * 1000, submitted(t, "echo")));
            h.observe(&rec(
                s * 1000 + 5,
                Event::ResultAccepted {
                    task: t,
                    agent: "echo#0".into(),
                    epoch: 1,
                    output: json!({}).into(),
                },
            ));
        }
        let doc = h.doc(7_200_000);
        assert_eq!(doc.samples.len(), SAMPLES);
        assert_eq!(doc.samples.last().map(|s| s.at_ms), Some(7_200_000));
        assert_eq!(doc.samples[0].tasks, 10);
        assert!(h.open.len() <= 1);
    }

    #[test]
    fn capabilities_past_the_cap_fold_into_other() {
        let mut h = History::default();
        for i in 0..(CAPABILITY_CAP + 10) {
            let t = Uuid::now_v7();
            h.observe(&rec(0, submitted(t, &format!("cap-{i}"))));
            h.observe(&rec(
                1,
                Event::AttemptFailed {
                    task: t,
                    agent: "a#0".into(),
                    epoch: 1,
                    reason: "timeout".into(),
                    detail: String::new(),
                },
            ));
        }
        let doc = h.doc(2);
        let failures = &doc.samples[0].failures;
        assert_eq!(failures.len(), CAPABILITY_CAP + 1);
        assert_eq!(failures.get("other"), Some(&10));
    }

    #[test]
    fn quantiles_come_from_the_latencies() {
        let mut h = History::default();
        for ms in [10u64, 10, 10, 10, 1000] {
            let t = Uuid::now_v7();
            h.observe(&rec(0, submitted(t, "echo")));
            h.observe(&rec(
                ms,
                Event::ResultAccepted {
                    task: t,
                    agent: "echo#0".into(),
                    epoch: 1,
                    output: json!({}).into(),
                },
            ));
        }
        let s = &h.doc(5_000).samples[0];
        let (p50, p99) = (s.p50_ms.unwrap(), s.p99_ms.unwrap());
        assert!((10.0..12.6).contains(&p50), "{p50}");
        assert!((1000.0..1250.0).contains(&p99), "{p99}");
    }

    #[test]
    fn every_way_a_task_ends_forgets_it_and_a_reused_result_counts_as_done() {
        let mut h = History::default();
        let (reused, escalated, cancelled) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        for t in [reused, escalated, cancelled] {
            h.observe(&rec(0, submitted(t, "echo")));
        }
        h.observe(&rec(
            7,
            Event::TaskReused {
                task: reused,
                original: Uuid::now_v7(),
                output: json!({}).into(),
            },
        ));
        h.observe(&rec(
            8,
            Event::TaskEscalated {
                task: escalated,
                to: "human".into(),
                reason: "no agent".into(),
            },
        ));
        h.observe(&rec(
            9,
            Event::TaskCancelled {
                task: cancelled,
                reason: "by hand".into(),
            },
        ));
        assert_eq!(h.open.len(), 0);
        assert_eq!(h.doc(5_000).samples[0].tasks, 1);
    }
}
