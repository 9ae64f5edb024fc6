//! The simulation's journal: every record goes to a backing journal (memory or SQLite)
//! and, on the way, into a running digest and a tally of what happened to each task and
//! run.
//!
//! Owns the journal digest (FNV-1a, 64 bits, over the canonical JSON of every record in
//! order: `{"seq":..,"at_ms":..,"event":{..}}`, exactly as [`Record`](muster_core::journal::Record) serializes) and the
//! counts the report is made of: terminal states, `result_accepted` per task (duplicates,
//! G1/G2), results accepted under a superseded epoch (G2), stale results, reassignments, restarts, drop-outs. The tally is computed from
//! the records themselves, never from the runtime's own counters, so a task the runtime
//! forgot shows up as lost. It must not reorder or alter records (G6: the digest is of the
//! journal as written).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use uuid::Uuid;

pub use muster_core::ids::Fnv1a;
use muster_core::journal::{Event, Journal, JournalLayer};

/// Serializes like [`Record`](muster_core::journal::Record), without owning the event.
#[derive(Serialize)]
struct RecordRef<'a> {
    seq: u64,
    at_ms: u64,
    event: &'a Event,
}

#[derive(Debug, Default, Clone, Copy)]
struct TaskTrack {
    submitted_ms: u64,
    /// The epoch of its latest lease.
    epoch: u64,
    ended_ms: Option<u64>,
    terminals: u32,
    accepted: u32,
    escalated: bool,
    cancelled: bool,
    /// `effect_started` records (the simulated agents do at most one effect per task).
    effect_starts: u32,
    /// Whether an `effect_done` came.
    effect_done: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct RunTrack {
    started_ms: u64,
    ended_ms: Option<u64>,
    completed: bool,
}

/// How many ended tasks (and, apart, runs) are kept whole after their end, so that a late
/// terminal record for one of them is still classified exactly (a duplicate, a second
/// terminal). Older ones are folded into the counts and the latency histogram, which keeps
/// the tally's memory bounded however many tasks a simulation runs.
pub const TALLY_WINDOW: usize = 10_000;

/// Latencies counted per distinct value (virtual ms): exact percentiles in memory bounded
/// by the number of distinct values, not of tasks.
///
/// # Example
/// ```
/// use muster_scenario::Latencies;
///
/// let mut l = Latencies::default();
/// for ms in [5, 5, 7, 100] {
///     l.add(ms);
/// }
/// assert_eq!((l.len(), l.nearest_rank(0.5), l.max()), (4, Some(5), Some(100)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latencies {
    counts: BTreeMap<u64, u64>,
    n: u64,
}

impl Latencies {
    /// Counts one latency.
    pub fn add(&mut self, ms: u64) {
        *self.counts.entry(ms).or_default() += 1;
        self.n += 1;
    }

    /// How many latencies were counted.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The nearest-rank percentile `p` (0..=1): the smallest value with at least
    /// `ceil(p × n)` values at or below it; `None` when empty.
    pub fn nearest_rank(&self, p: f64) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((p * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (ms, c) in &self.counts {
            seen += c;
            if seen >= rank {
                return Some(*ms);
            }
        }
        self.max()
    }

    /// The largest.
    pub fn max(&self) -> Option<u64> {
        self.counts.keys().next_back().copied()
    }
}

/// Counts of ended tasks and runs: those folded out of the window, or (in `tally`) all.
#[derive(Debug, Default, Clone)]
struct Counts {
    tasks: u64,
    completed: u64,
    escalated: u64,
    cancelled: u64,
    duplicates: u64,
    multiple_terminals: u64,
    effects_run: u64,
    effects_repeated: u64,
    effects_unknown: u64,
    task_latencies: Latencies,
    runs: u64,
    runs_completed: u64,
    runs_escalated: u64,
    run_latencies: Latencies,
}

impl Counts {
    fn task(&mut self, task: &TaskTrack) {
        self.tasks += 1;
        if task.accepted > 1 {
            self.duplicates += 1;
        }
        if task.terminals > 1 {
            self.multiple_terminals += 1;
        }
        if task.effect_starts > 0 || task.effect_done {
            self.effects_run += 1;
            self.effects_repeated += u64::from(task.effect_starts.saturating_sub(1));
            self.effects_unknown += u64::from(!task.effect_done);
        }
        if let Some(end) = task.ended_ms {
            if task.accepted > 0 {
                self.completed += 1;
            } else if task.escalated {
                self.escalated += 1;
            } else if task.cancelled {
                self.cancelled += 1;
            }
            self.task_latencies
                .add(end.saturating_sub(task.submitted_ms));
        }
    }

    fn run(&mut self, run: &RunTrack) {
        self.runs += 1;
        if let Some(end) = run.ended_ms {
            if run.completed {
                self.runs_completed += 1;
            } else {
                self.runs_escalated += 1;
            }
            self.run_latencies.add(end.saturating_sub(run.started_ms));
        }
    }
}

/// What the records said, so far.
#[derive(Debug, Default)]
struct State {
    seq: u64,
    digest: Fnv1a,
    /// Tasks not yet ended, and the last [`TALLY_WINDOW`] ended (in `ended_tasks_order`).
    tasks: HashMap<Uuid, TaskTrack>,
    ended_tasks_order: VecDeque<Uuid>,
    runs: HashMap<Uuid, RunTrack>,
    ended_runs_order: VecDeque<Uuid>,
    retired: Counts,
    /// Tasks or runs seen to end, for progress.
    ended_tasks: u64,
    ended_runs: u64,
    stale: u64,
    superseded: u64,
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
/// use muster_core::journal::{Event, Journal, MemoryJournal};
/// use muster_scenario::TallyJournal;
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
    /// Tasks that did an effect (an `effect_started` or `effect_done`).
    pub effects_run: u64,
    /// `effect_started` records beyond a task's first for its effect: the effect was done
    /// again (must be 0 with the ledger).
    pub effects_repeated: u64,
    /// Effects started and never reported done (unknown outcome).
    pub effects_unknown: u64,
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
    /// `result_accepted` records under an epoch other than the task's latest
    /// `lease_granted` (G2: a fenced result was accepted; must be 0).
    pub accepted_superseded: u64,
    /// Leases after the first (attempt > 1).
    pub reassignments: u64,
    /// `child_restarted` records.
    pub restarts: u64,
    /// `agent_dropped_out` records.
    pub dropped_out: u64,
    /// `attempt_failed` records.
    pub failed_attempts: u64,
    /// Task latencies, submit to terminal, virtual ms.
    #[serde(skip)]
    pub task_latencies: Latencies,
    /// Run latencies, start to end, virtual ms.
    #[serde(skip)]
    pub run_latencies: Latencies,
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
        (
            s.retired.tasks + s.tasks.len() as u64,
            s.retired.runs + s.runs.len() as u64,
        )
    }

    /// Tasks and runs held whole now (not yet ended, or among the last [`TALLY_WINDOW`]
    /// ended): what the tally's memory grows with. At most the work in flight plus twice
    /// the window.
    pub fn held(&self) -> (usize, usize) {
        let s = self.state.lock();
        (s.tasks.len(), s.runs.len())
    }

    /// The summary now.
    pub fn tally(&self) -> Tally {
        let s = self.state.lock();
        let mut c = s.retired.clone();
        let (mut lost, mut runs_lost) = (0, 0);
        for task in s.tasks.values() {
            lost += u64::from(task.ended_ms.is_none());
            c.task(task);
        }
        for run in s.runs.values() {
            runs_lost += u64::from(run.ended_ms.is_none());
            c.run(run);
        }
        Tally {
            events: s.seq,
            digest: format!("{:016x}", s.digest.finish()),
            tasks: c.tasks,
            completed: c.completed,
            escalated: c.escalated,
            cancelled: c.cancelled,
            lost,
            duplicates: c.duplicates,
            multiple_terminals: c.multiple_terminals,
            effects_run: c.effects_run,
            effects_repeated: c.effects_repeated,
            effects_unknown: c.effects_unknown,
            runs: c.runs,
            runs_completed: c.runs_completed,
            runs_escalated: c.runs_escalated,
            runs_lost,
            stale_rejected: s.stale,
            accepted_superseded: s.superseded,
            reassignments: s.reassignments,
            restarts: s.restarts,
            dropped_out: s.dropped,
            failed_attempts: s.failed_attempts,
            task_latencies: c.task_latencies,
            run_latencies: c.run_latencies,
            span_ms: s.first_ms.map_or(0, |f| s.last_ms.saturating_sub(f)),
        }
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
            Event::LeaseGranted {
                task,
                attempt,
                epoch,
                ..
            } => {
                if *attempt > 1 {
                    self.reassignments += 1;
                }
                if let Some(t) = self.tasks.get_mut(task) {
                    t.epoch = *epoch;
                }
            }
            Event::AttemptFailed { .. } => self.failed_attempts += 1,
            Event::ResultAccepted { task, epoch, .. } => {
                if self.tasks.get(task).is_some_and(|t| t.epoch != *epoch) {
                    self.superseded += 1;
                }
                self.task_end(*task, at_ms, |t| t.accepted += 1)
            }
            // A reused result ends its task completed, like its own accepted one.
            Event::TaskReused { task, .. } => self.task_end(*task, at_ms, |t| t.accepted += 1),
            Event::TaskEscalated { task, to, .. } => {
                if to != "dead_letter" {
                    self.escalations_to_gates += 1;
                }
                self.task_end(*task, at_ms, |t| t.escalated = true);
            }
            Event::TaskCancelled { task, .. } => {
                self.task_end(*task, at_ms, |t| t.cancelled = true)
            }
            Event::ResultStale { .. } => self.stale += 1,
            // Effects come before their task's end; one of a task already out of the
            // window is not counted.
            Event::EffectStarted { task, .. } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.effect_starts += 1;
                }
            }
            Event::EffectDone { task, .. } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.effect_done = true;
                }
            }
            Event::ChildRestarted { .. } => self.restarts += 1,
            Event::AgentDroppedOut { .. } => self.dropped += 1,
            Event::RunStarted { run, .. } => {
                self.runs.entry(*run).or_default().started_ms = at_ms;
            }
            Event::RunEnded { run, status, .. } => {
                let completed = status == "completed";
                self.run_end(*run, at_ms, true, completed);
            }
            // A simulation stops at gates: nobody decides, so the run ends there, escalated.
            Event::GateWaiting { run, .. } => self.run_end(*run, at_ms, false, false),
            _ => {}
        }
    }

    /// A terminal record of `task`. One for a task no longer held (ended more than
    /// [`TALLY_WINDOW`] task ends ago) is a second terminal, counted as such (and as a
    /// duplicate if it accepts a result).
    fn task_end(&mut self, task: Uuid, at_ms: u64, mark: impl FnOnce(&mut TaskTrack)) {
        let held = self.tasks.contains_key(&task);
        if !held && self.retired.tasks > 0 {
            let mut late = TaskTrack::default();
            mark(&mut late);
            self.retired.multiple_terminals += 1;
            self.retired.duplicates += u64::from(late.accepted > 0);
            return;
        }
        let t = self.tasks.entry(task).or_default();
        mark(t);
        t.terminals += 1;
        if t.ended_ms.is_none() {
            t.ended_ms = Some(at_ms);
            self.ended_tasks += 1;
            self.ended_tasks_order.push_back(task);
            if self.ended_tasks_order.len() > TALLY_WINDOW
                && let Some(old) = self.ended_tasks_order.pop_front()
                && let Some(t) = self.tasks.remove(&old)
            {
                self.retired.task(&t);
            }
        }
    }

    /// A run's end (`set`: a `run_ended`, which says how it ended even after a gate).
    fn run_end(&mut self, run: Uuid, at_ms: u64, set: bool, completed: bool) {
        if !self.runs.contains_key(&run) && self.retired.runs > 0 {
            return; // a run retired from the window ended long ago
        }
        let r = self.runs.entry(run).or_default();
        let first = r.ended_ms.is_none();
        if set || first {
            r.ended_ms = Some(at_ms);
            r.completed = completed;
        }
        if first {
            self.ended_runs += 1;
            self.ended_runs_order.push_back(run);
            if self.ended_runs_order.len() > TALLY_WINDOW
                && let Some(old) = self.ended_runs_order.pop_front()
                && let Some(r) = self.runs.remove(&old)
            {
                self.retired.run(&r);
            }
        }
    }
}

impl JournalLayer for TallyJournal {
    fn inner(&self) -> &dyn Journal {
        &*self.inner
    }

    fn intercept(&self, at_ms: u64, event: Event) -> u64 {
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

    // No watermark: a simulation acknowledges nothing to a real caller, and waiting on a
    // writer thread would let the paused clock jump (G6); its journal is written behind,
    // and flushed when the simulation ends.
    fn forwards_watermark(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::journal::MemoryJournal;

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
                    input: serde_json::json!({}).into(),
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
                    output: serde_json::json!({}).into(),
                },
            );
        }
        let t = j.tally();
        assert_eq!((t.tasks, t.lost, t.duplicates, t.completed), (2, 1, 1, 1));
        assert_eq!(
            (t.task_latencies.len(), t.task_latencies.max()),
            (1, Some(5))
        );
    }

    fn submitted(task: Uuid) -> Event {
        Event::TaskSubmitted {
            task,
            capability: "c".into(),
            correlation: task,
            input: serde_json::json!({}).into(),
            attempts: 1,
            timeout_ms: 1,
            sender: "test".into(),
        }
    }

    fn accepted(task: Uuid) -> Event {
        Event::ResultAccepted {
            task,
            agent: "x#0".into(),
            epoch: 1,
            output: serde_json::json!({}).into(),
        }
    }

    #[test]
    fn a_result_accepted_under_a_superseded_epoch_is_counted() {
        let j = TallyJournal::new(Arc::new(MemoryJournal::default()));
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for t in [a, b] {
            j.append(0, submitted(t));
            for epoch in [1, 2] {
                j.append(
                    1,
                    Event::LeaseGranted {
                        task: t,
                        agent: "x#0".into(),
                        epoch,
                        attempt: epoch as u32,
                        envelope: Uuid::from_u128(9),
                        routed: None,
                    },
                );
            }
        }
        // `a` accepts its current lease's result, `b` a superseded one.
        j.append(2, accepted(a).with_epoch(2));
        j.append(2, accepted(b));
        let t = j.tally();
        assert_eq!(
            (t.accepted_superseded, t.completed, t.reassignments),
            (1, 2, 2)
        );
    }

    trait WithEpoch {
        fn with_epoch(self, e: u64) -> Self;
    }

    impl WithEpoch for Event {
        fn with_epoch(mut self, e: u64) -> Self {
            if let Event::ResultAccepted { epoch, .. } = &mut self {
                *epoch = e;
            }
            self
        }
    }

    #[test]
    fn the_tally_holds_a_bounded_window_of_ended_tasks_and_still_counts_every_one() {
        let backing = Arc::new(MemoryJournal::new(muster_core::journal::JournalConfig {
            retain_records: 1_000,
            ..muster_core::journal::JournalConfig::default()
        }));
        let j = TallyJournal::new(backing.clone());
        let n = TALLY_WINDOW as u128 * 3;
        for i in 0..n {
            let t = Uuid::from_u128(i + 1);
            j.append(i as u64, submitted(t));
            j.append(i as u64 + (i % 7) as u64, accepted(t));
        }
        let (held, _) = j.held();
        assert!(held <= TALLY_WINDOW, "{held} tasks held");
        assert!(backing.retained() <= 1_000);
        let t = j.tally();
        assert_eq!(
            (t.tasks, t.completed, t.lost, t.duplicates),
            (n as u64, n as u64, 0, 0)
        );
        assert_eq!(t.task_latencies.len(), n as u64);
        assert_eq!(t.task_latencies.max(), Some(6));
        assert_eq!(t.events, 2 * n as u64);
        // A second result for a task long folded out of the window is still a duplicate.
        j.append(n as u64 * 2, accepted(Uuid::from_u128(1)));
        let t = j.tally();
        assert_eq!(
            (t.duplicates, t.multiple_terminals, t.tasks),
            (1, 1, n as u64)
        );
    }
}
