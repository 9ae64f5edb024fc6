//! The simulation's journal: every record goes to a backing journal (memory or SQLite)
//! and, on the way, into a running digest and a tally of what happened to each task and
//! run.
//!
//! Owns the journal digest (FNV-1a, 64 bits, over the canonical JSON of every record in
//! order: `{"seq":..,"at_ms":..,"event":{..}}`, exactly as [`Record`] serializes) and the
//! counts the report is made of: terminal states, `result_accepted` per task (duplicates,
//! G1/G2), stale results, reassignments, restarts, drop-outs. The tally is computed from
//! the records themselves, never from the runtime's own counters, so a task the runtime
//! forgot shows up as lost. It must not reorder or alter records (G6: the digest is of the
//! journal as written).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use uuid::Uuid;

use crate::journal::{Event, Journal, Record};

/// FNV-1a, 64 bits: a stable hash with no dependency, fed through `io::Write`.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Write for Fnv1a {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serializes like [`Record`], without owning the event.
#[derive(Serialize)]
struct RecordRef<'a> {
    seq: u64,
    at_ms: u64,
    event: &'a Event,
}

#[derive(Debug, Default, Clone, Copy)]
struct TaskTrack {
    submitted_ms: u64,
    ended_ms: Option<u64>,
    terminals: u32,
    accepted: u32,
    escalated: bool,
    cancelled: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct RunTrack {
    started_ms: u64,
    ended_ms: Option<u64>,
    completed: bool,
}

/// What the records said, so far.
#[derive(Debug, Default)]
struct State {
    seq: u64,
    digest: Fnv1a,
    tasks: HashMap<Uuid, TaskTrack>,
    runs: HashMap<Uuid, RunTrack>,
    /// Tasks or runs seen to end, for progress.
    ended_tasks: u64,
    ended_runs: u64,
    stale: u64,
    reassignments: u64,
    restarts: u64,
    dropped: u64,
    failed_attempts: u64,
    escalations_to_gates: u64,
    first_ms: Option<u64>,
    last_ms: u64,
}

/// A journal that digests and tallies every record before the backing journal stores it.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use muster::journal::{Event, Journal, MemoryJournal};
/// use muster::scenario::TallyJournal;
///
/// let a = TallyJournal::new(Arc::new(MemoryJournal::default()));
/// let b = TallyJournal::new(Arc::new(MemoryJournal::default()));
/// a.append(5, Event::Note { text: "x".into() });
/// b.append(5, Event::Note { text: "x".into() });
/// assert_eq!(a.tally().digest, b.tally().digest);
/// ```
#[derive(Debug)]
pub struct TallyJournal {
    inner: Arc<dyn Journal>,
    state: Mutex<State>,
    sealed: std::sync::atomic::AtomicBool,
    /// Notified when a task or run ends (see [`TallyJournal::ended_changed`]).
    ended_changed: tokio::sync::Notify,
}

/// A summary of the records so far.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tally {
    /// Records.
    pub events: u64,
    /// FNV-1a 64 of the canonical JSON of every record, in order, as 16 hex digits.
    pub digest: String,
    /// Tasks submitted.
    pub tasks: u64,
    /// Tasks completed (a `result_accepted`).
    pub completed: u64,
    /// Tasks escalated.
    pub escalated: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Tasks with no terminal state.
    pub lost: u64,
    /// Tasks with more than one `result_accepted`.
    pub duplicates: u64,
    /// Tasks with more than one terminal event.
    pub multiple_terminals: u64,
    /// Workflow runs started.
    pub runs: u64,
    /// Runs that ended `completed`.
    pub runs_completed: u64,
    /// Runs that failed or stopped at a human gate.
    pub runs_escalated: u64,
    /// Runs with neither a `run_ended` nor a `gate_waiting`.
    pub runs_lost: u64,
    /// `result_stale` records.
    pub stale_rejected: u64,
    /// Leases after the first (attempt > 1).
    pub reassignments: u64,
    /// `child_restarted` records.
    pub restarts: u64,
    /// `agent_dropped_out` records.
    pub dropped_out: u64,
    /// `attempt_failed` records.
    pub failed_attempts: u64,
    /// Task latencies, submit to terminal, virtual ms (sorted).
    #[serde(skip)]
    pub task_latencies_ms: Vec<u64>,
    /// Run latencies, start to end, virtual ms (sorted).
    #[serde(skip)]
    pub run_latencies_ms: Vec<u64>,
    /// Virtual time between the first and last record, ms.
    pub span_ms: u64,
}

impl TallyJournal {
    /// Tallies in front of `inner`.
    pub fn new(inner: Arc<dyn Journal>) -> Self {
        TallyJournal {
            inner,
            state: Mutex::new(State::default()),
            sealed: std::sync::atomic::AtomicBool::new(false),
            ended_changed: tokio::sync::Notify::new(),
        }
    }

    /// Ends the simulation's record: the summary now, and later records (the teardown of
    /// a runtime stopped at its horizon: owners dropped with their tasks unfinished, stamped
    /// outside virtual time) still reach the backing journal but neither the digest nor
    /// the tally, so unfinished work stays visible as lost.
    pub fn seal(&self) -> Tally {
        let s = self.state.lock();
        self.sealed.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(s);
        self.tally()
    }

    /// Tasks and runs seen to end so far, for progress.
    pub fn ended(&self) -> (u64, u64) {
        let s = self.state.lock();
        (s.ended_tasks, s.ended_runs)
    }

    /// Resolves once a task or run has ended since the previous call returned (at once if
    /// one has already): the simulation waits on this instead of polling on a timer.
    pub async fn ended_changed(&self) {
        self.ended_changed.notified().await;
    }

    /// Tasks and runs seen to start so far.
    pub fn started(&self) -> (u64, u64) {
        let s = self.state.lock();
        (s.tasks.len() as u64, s.runs.len() as u64)
    }

    /// The summary now.
    pub fn tally(&self) -> Tally {
        let s = self.state.lock();
        let mut t = Tally {
            events: s.seq,
            digest: format!("{:016x}", s.digest.finish()),
            tasks: s.tasks.len() as u64,
            completed: 0,
            escalated: 0,
            cancelled: 0,
            lost: 0,
            duplicates: 0,
            multiple_terminals: 0,
            runs: s.runs.len() as u64,
            runs_completed: 0,
            runs_escalated: 0,
            runs_lost: 0,
            stale_rejected: s.stale,
            reassignments: s.reassignments,
            restarts: s.restarts,
            dropped_out: s.dropped,
            failed_attempts: s.failed_attempts,
            task_latencies_ms: Vec::with_capacity(s.tasks.len()),
            run_latencies_ms: Vec::with_capacity(s.runs.len()),
            span_ms: s.first_ms.map_or(0, |f| s.last_ms.saturating_sub(f)),
        };
        for task in s.tasks.values() {
            if task.accepted > 1 {
                t.duplicates += 1;
            }
            if task.terminals > 1 {
                t.multiple_terminals += 1;
            }
            match task.ended_ms {
                None => t.lost += 1,
                Some(end) => {
                    if task.accepted > 0 {
                        t.completed += 1;
                    } else if task.escalated {
                        t.escalated += 1;
                    } else if task.cancelled {
                        t.cancelled += 1;
                    }
                    t.task_latencies_ms
                        .push(end.saturating_sub(task.submitted_ms));
                }
            }
        }
        for run in s.runs.values() {
            match run.ended_ms {
                None => t.runs_lost += 1,
                Some(end) => {
                    if run.completed {
                        t.runs_completed += 1;
                    } else {
                        t.runs_escalated += 1;
                    }
                    t.run_latencies_ms.push(end.saturating_sub(run.started_ms));
                }
            }
        }
        t.task_latencies_ms.sort_unstable();
        t.run_latencies_ms.sort_unstable();
        t
    }
}

impl State {
    fn note(&mut self, at_ms: u64, e: &Event) {
        self.first_ms.get_or_insert(at_ms);
        self.last_ms = self.last_ms.max(at_ms);
        match e {
            Event::TaskSubmitted { task, .. } => {
                self.tasks.entry(*task).or_default().submitted_ms = at_ms;
            }
            Event::LeaseGranted { attempt, .. } if *attempt > 1 => self.reassignments += 1,
            Event::AttemptFailed { .. } => self.failed_attempts += 1,
            // A reused result ends its task completed, like its own accepted one.
            Event::ResultAccepted { task, .. } | Event::TaskReused { task, .. } => {
                let t = self.tasks.entry(*task).or_default();
                t.accepted += 1;
                Self::end(&mut self.ended_tasks, t, at_ms);
            }
            Event::TaskEscalated { task, to, .. } => {
                if to != "dead_letter" {
                    self.escalations_to_gates += 1;
                }
                let t = self.tasks.entry(*task).or_default();
                t.escalated = true;
                Self::end(&mut self.ended_tasks, t, at_ms);
            }
            Event::TaskCancelled { task, .. } => {
                let t = self.tasks.entry(*task).or_default();
                t.cancelled = true;
                Self::end(&mut self.ended_tasks, t, at_ms);
            }
            Event::ResultStale { .. } => self.stale += 1,
            Event::ChildRestarted { .. } => self.restarts += 1,
            Event::AgentDroppedOut { .. } => self.dropped += 1,
            Event::RunStarted { run, .. } => {
                self.runs.entry(*run).or_default().started_ms = at_ms;
            }
            Event::RunEnded { run, status, .. } => {
                let r = self.runs.entry(*run).or_default();
                if r.ended_ms.is_none() {
                    self.ended_runs += 1;
                }
                r.ended_ms = Some(at_ms);
                r.completed = status == "completed";
            }
            // A simulation stops at gates: nobody decides, so the run ends there, escalated.
            Event::GateWaiting { run, .. } => {
                let r = self.runs.entry(*run).or_default();
                if r.ended_ms.is_none() {
                    self.ended_runs += 1;
                    r.ended_ms = Some(at_ms);
                }
            }
            _ => {}
        }
    }

    fn end(ended: &mut u64, t: &mut TaskTrack, at_ms: u64) {
        t.terminals += 1;
        if t.ended_ms.is_none() {
            t.ended_ms = Some(at_ms);
            *ended += 1;
        }
    }
}

impl Journal for TallyJournal {
    fn append(&self, at_ms: u64, event: Event) -> u64 {
        let mut s = self.state.lock();
        if self.sealed.load(std::sync::atomic::Ordering::SeqCst) {
            return self.inner.append(at_ms, event);
        }
        s.seq += 1;
        let seq = s.seq;
        let r = RecordRef {
            seq,
            at_ms,
            event: &event,
        };
        // Writing into a hasher cannot fail; a serialization error would be a bug in
        // `Event`, and then the digest still covers the seq and time.
        if serde_json::to_writer(&mut s.digest, &r).is_err() {
            let mut d = s.digest;
            d.update(&seq.to_le_bytes());
            s.digest = d;
        }
        s.digest.update(b"\n");
        let ended = (s.ended_tasks, s.ended_runs);
        s.note(at_ms, &event);
        if ended != (s.ended_tasks, s.ended_runs) {
            self.ended_changed.notify_one();
        }
        // Under the lock, so the backing journal's order and numbering are ours.
        let inner_seq = self.inner.append(at_ms, event);
        debug_assert_eq!(inner_seq, seq);
        seq
    }

    fn read_after(&self, after: u64) -> Vec<Record> {
        self.inner.read_after(after)
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn sync_point(&self, seq: u64) {
        self.inner.sync_point(seq)
    }

    // No `watermark`: a simulation acknowledges nothing to a real caller, and waiting on a
    // writer thread would let the paused clock jump (G6); its journal is written behind,
    // and flushed when the simulation ends.

    fn max_payload_bytes(&self) -> usize {
        self.inner.max_payload_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::MemoryJournal;

    #[test]
    fn the_digest_is_fnv1a_over_the_records_json() {
        let j = TallyJournal::new(Arc::new(MemoryJournal::default()));
        j.append(7, Event::Note { text: "a".into() });
        let rec = &j.read_after(0)[0];
        let mut h = Fnv1a::default();
        h.update(serde_json::to_string(rec).unwrap().as_bytes());
        h.update(b"\n");
        assert_eq!(j.tally().digest, format!("{:016x}", h.finish()));
        // FNV-1a's published test vector.
        let mut v = Fnv1a::default();
        v.update(b"a");
        assert_eq!(v.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn lost_and_duplicate_tasks_are_counted_from_records() {
        let j = TallyJournal::new(Arc::new(MemoryJournal::default()));
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for t in [a, b] {
            j.append(
                0,
                Event::TaskSubmitted {
                    task: t,
                    capability: "c".into(),
                    correlation: t,
                    input: serde_json::json!({}),
                    attempts: 1,
                    timeout_ms: 1,
                    sender: "test".into(),
                },
            );
        }
        for _ in 0..2 {
            j.append(
                5,
                Event::ResultAccepted {
                    task: a,
                    agent: "x#0".into(),
                    epoch: 1,
                    output: serde_json::json!({}),
                },
            );
        }
        let t = j.tally();
        assert_eq!((t.tasks, t.lost, t.duplicates, t.completed), (2, 1, 1, 1));
        assert_eq!(t.task_latencies_ms, vec![5]);
    }
}
