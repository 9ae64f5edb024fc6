//! The journal: every event the runtime produces, in order, with a sequence number.
//!
//! Owns the [`Event`] vocabulary and the [`Journal`] trait with its backends: in memory
//! ([`MemoryJournal`], a bounded ring of the most recent records) and durable
//! (`SqliteJournal` in the `muster` crate, one SQLite file, every record). It is the source of truth for
//! inspection (G5) and, with the durable backend, for recovery. Appends must be
//! cheap and must never block the hot path on a disk write per event: the SQLite backend
//! hands each record to a writer thread that commits them in batches.
//!
//! Payloads are bounded ([`JournalConfig::max_payload_bytes`], 4 MiB by default). `append`
//! cannot refuse an event (it returns its sequence number), so the bound is enforced where
//! payloads enter the runtime, with [`check_payload`]: `Muster::submit` checks every task
//! input against [`Journal::max_payload_bytes`] and refuses an oversized one.

pub mod event;
pub mod held;
pub mod memory;
pub mod model_call;
pub mod recorder;
pub mod runs;
pub mod tap;
pub mod usage;
pub mod write_stats;

use std::path::PathBuf;

use serde_json::Value;

pub use event::{Event, Record};
pub use held::HeldJournal;
pub use memory::MemoryJournal;
pub use model_call::{CallMessage, ModelCall, TurnKind};
pub use recorder::{Recorder, Unwritten};
pub use runs::{RunEntry, RunQuery, RunStatus};
pub use tap::TapJournal;
pub use usage::{Usage, UsageTotals};
pub use write_stats::WriteStats;

/// Where events go.
///
/// Implementations are shared by every actor of a runtime; `append` is called on the hot
/// path and must not block on I/O per event.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Journal, MemoryJournal};
///
/// let j = MemoryJournal::default();
/// let seq = j.append(1_000, Event::Note { text: "started".into() });
/// j.sync_point(seq); // a no-op in memory; waits for the writer with SQLite
/// assert_eq!(j.len(), 1);
/// assert!(j.watermark().is_none()); // in memory, `append` is the write
/// ```
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Appends an event stamped `at_ms`; returns its sequence number (from 1).
    fn append(&self, at_ms: u64, event: Event) -> u64;
    /// Appends `events`, each stamped `at_ms`, in order, as one **group**: a journal that
    /// writes behind `append` (SQLite) numbers them consecutively and commits them in one
    /// transaction, so that after a crash either every record of the group is in the file
    /// or none is (a retry's first records: a reader never finds half of them). Returns
    /// the last record's sequence number (0 for no events); the group's records are
    /// numbered consecutively up to it (a listener derives their numbers from it). The
    /// default appends them one by one, which keeps that only for a journal nobody else
    /// appends to at the same time: a shared journal overrides it (the memory and SQLite
    /// journals do).
    ///
    /// # Example
    /// ```
    /// use muster_core::journal::{Event, Journal, MemoryJournal};
    ///
    /// let j = MemoryJournal::default();
    /// let note = |t: &str| Event::Note { text: t.into() };
    /// let last = j.append_group(5, vec![note("one"), note("two")]);
    /// assert_eq!((last, j.len()), (2, 2));
    /// ```
    fn append_group(&self, at_ms: u64, events: Vec<Event>) -> u64 {
        events
            .into_iter()
            .fold(0, |_, event| self.append(at_ms, event))
    }
    /// Every record with a sequence number greater than `after`, in order (of a bounded
    /// journal, [`MemoryJournal`], those it still retains).
    fn read_after(&self, after: u64) -> Vec<Record>;
    /// The number of records ever appended: the last sequence number. A bounded journal
    /// ([`MemoryJournal`]) may retain fewer.
    fn len(&self) -> u64;
    /// Whether the journal holds no records.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Blocks until record `seq` is written, for a journal that writes behind `append`
    /// (SQLite: in the file, and synced with `Durability::Sync`); a no-op otherwise.
    /// For callers outside the runtime's thread; the runtime itself awaits the
    /// [`Journal::watermark`] instead.
    fn sync_point(&self, seq: u64) {
        let _ = seq;
    }
    /// Says that a caller is about to wait for record `seq` to be written (on the
    /// [`Journal::watermark`]): a journal that gathers records into group commits commits
    /// what it holds at once instead of gathering more, and may do so on the calling
    /// thread before it returns (the SQLite journal in relaxed mode, when nothing else
    /// commits), so callers look at the watermark again after it. A no-op by default.
    ///
    /// # Example
    /// ```
    /// use muster_core::journal::{Event, Journal, MemoryJournal};
    ///
    /// let j = MemoryJournal::default();
    /// let seq = j.append(0, Event::Note { text: "acknowledge me".into() });
    /// j.want(seq); // in memory `append` is the write; the SQLite journal commits now
    /// assert!(j.watermark().is_none());
    /// ```
    fn want(&self, seq: u64) {
        let _ = seq;
    }
    /// For a journal that writes behind `append` (SQLite: records go to a writer thread
    /// that commits them in groups), how far it has written. The runtime waits on it
    /// before it reports or acts on a record — a task's outcome returned to its caller, a
    /// workflow step's completion, a gate, a run's end — so nothing is acknowledged that
    /// a crash of the process could lose. `None` (the default) for a journal whose
    /// `append` is the write (memory).
    fn watermark(&self) -> Option<tokio::sync::watch::Receiver<Watermark>> {
        None
    }
    /// The largest serialized payload this journal accepts, in bytes (see
    /// [`check_payload`]).
    fn max_payload_bytes(&self) -> usize {
        JournalConfig::default().max_payload_bytes
    }
    /// At most `max` records with a sequence number greater than `after`, in order: a
    /// bounded [`Journal::read_after`] for readers that follow a journal in batches.
    ///
    /// # Example
    /// ```
    /// use muster_core::journal::{Event, Journal, MemoryJournal};
    ///
    /// let j = MemoryJournal::default();
    /// for i in 0..5 { j.append(i, Event::Note { text: i.to_string() }); }
    /// let batch = j.read_batch(1, 2);
    /// assert_eq!(batch.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);
    /// ```
    fn read_batch(&self, after: u64, max: usize) -> Vec<Record> {
        let mut records = self.read_after(after);
        records.truncate(max);
        records
    }
    /// For a journal that writes behind `append`, what its writer has done (commits,
    /// records, commit latency, batch sizes); `None` (the default) for one whose `append`
    /// is the write (memory).
    fn write_stats(&self) -> Option<WriteStats> {
        None
    }
    /// The runs [`RunQuery`] asks for, newest first. A journal with an index of runs (the
    /// SQLite journal's `runs` table) answers in time that grows with the page; the
    /// default scans every record it holds ([`runs::scan_runs`]).
    ///
    /// # Example
    /// ```
    /// use muster_core::journal::{Event, Journal, MemoryJournal, RunQuery, RunStatus};
    ///
    /// let j = MemoryJournal::default();
    /// for _ in 0..3 {
    ///     let run = uuid::Uuid::now_v7();
    ///     j.append(0, Event::RunStarted { run, workflow: "w".into(), file: "w.toml".into(), input: serde_json::json!({}) });
    ///     j.append(1, Event::GateWaiting { run, gate: "g".into(), question: "?".into() });
    /// }
    /// let page = j.runs(&RunQuery { status: Some(RunStatus::Waiting), limit: 2, ..RunQuery::default() });
    /// assert_eq!(page.len(), 2);
    /// assert!(page[0].started_seq > page[1].started_seq); // newest first
    /// ```
    fn runs(&self, query: &RunQuery) -> Vec<RunEntry> {
        let records = self.read_after(0);
        let inputs: std::collections::HashMap<uuid::Uuid, &serde_json::Value> = records
            .iter()
            .filter(|_| !query.input.is_empty())
            .filter_map(|r| match &r.event {
                Event::RunStarted { run, input, .. } => Some((*run, input)),
                _ => None,
            })
            .collect();
        let mut all = runs::scan_runs(&records);
        all.reverse();
        let scan = match (query.input.is_empty(), query.scan) {
            (false, Some(n)) => n,
            _ => usize::MAX,
        };
        all.into_iter()
            .filter(|e| query.admits(e))
            .take(scan)
            .filter(|e| {
                query.input.is_empty() || inputs.get(&e.run).is_some_and(|i| query.admits_input(i))
            })
            .take(query.limit)
            .collect()
    }
    /// One run's entry in the index, if the journal holds the run.
    ///
    /// # Example
    /// ```
    /// use muster_core::journal::{Event, Journal, MemoryJournal};
    ///
    /// let j = MemoryJournal::default();
    /// let run = uuid::Uuid::now_v7();
    /// j.append(0, Event::RunStarted { run, workflow: "w".into(), file: "w.toml".into(), input: serde_json::json!({}) });
    /// assert_eq!(j.run_entry(run).map(|e| e.workflow), Some("w".to_string()));
    /// assert!(j.run_entry(uuid::Uuid::now_v7()).is_none());
    /// ```
    fn run_entry(&self, run: uuid::Uuid) -> Option<RunEntry> {
        runs::scan_runs(&self.read_after(0))
            .into_iter()
            .find(|e| e.run == run)
    }
    /// The records that tell the story of `id`, in order: a run's own records and its
    /// tasks' (the records whose correlation is the run), or a task's records. A journal
    /// indexed by run answers in time that grows with that story; the default scans
    /// ([`runs::scan_records_of`]). Callers that need an exact view filter further.
    ///
    /// # Example
    /// ```
    /// use muster_core::journal::{Event, Journal, MemoryJournal};
    ///
    /// let j = MemoryJournal::default();
    /// let run = uuid::Uuid::now_v7();
    /// j.append(0, Event::Note { text: "not the run's".into() });
    /// j.append(0, Event::StepEntered { run, step: "a".into(), visit: 1 });
    /// assert_eq!(j.records_of(run).iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
    /// ```
    fn records_of(&self, id: uuid::Uuid) -> Vec<Record> {
        runs::scan_records_of(&self.read_after(0), id)
    }
    /// How many `model_call` records each lease of `tasks` has: `(task, epoch)` → count.
    /// Recorded model calls are kept out of a run's story ([`Event::task_only`]), so a
    /// run's reader (its document counts them per lease) asks here instead of decoding
    /// them. The default reads each task's records from an indexed journal, or scans the
    /// journal once; a journal that can count without decoding (SQLite: its `kind`, `task`
    /// and `epoch` columns) should say so.
    ///
    /// # Example
    /// ```
    /// use muster_core::journal::{Event, Journal, MemoryJournal, ModelCall, TurnKind};
    ///
    /// let j = MemoryJournal::default();
    /// let task = uuid::Uuid::now_v7();
    /// let call = ModelCall {
    ///     attempt: 1, turn: 0, kind: TurnKind::First, round: 0, model: "m".into(),
    ///     messages: Vec::new(), answer: None, error: None, usage: None, latency_ms: 0,
    ///     truncated: false,
    /// };
    /// for _ in 0..2 {
    ///     j.append(0, Event::ModelCall { task, agent: "a#0".into(), epoch: 3, call: Box::new(call.clone()) });
    /// }
    /// assert_eq!(j.model_call_counts(&[task]).get(&(task, 3)), Some(&2));
    /// ```
    fn model_call_counts(
        &self,
        tasks: &[uuid::Uuid],
    ) -> std::collections::HashMap<(uuid::Uuid, u64), u32> {
        let mut counts = std::collections::HashMap::new();
        if tasks.is_empty() {
            return counts;
        }
        let records = if self.indexed() {
            tasks.iter().flat_map(|t| self.records_of(*t)).collect()
        } else {
            self.read_after(0)
        };
        count_model_calls(records.iter().map(|r| &r.event), tasks, &mut counts);
        counts
    }
    /// Whether [`Journal::runs`], [`Journal::run_entry`] and [`Journal::records_of`] are
    /// answered from an index (cost per page or per run) rather than by a scan of the
    /// whole journal (cost per record held).
    fn indexed(&self) -> bool {
        false
    }
}

/// A journal that wraps another and sees every append (a live feed, a tally): it
/// implements [`JournalLayer::intercept`] and names its [`JournalLayer::inner`] journal,
/// and every other [`Journal`] method forwards to the inner journal by construction, so
/// no wrapper can forget one (and fall back to a default that reads the whole journal).
///
/// # Example
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use muster_core::journal::{Event, Journal, JournalLayer, MemoryJournal};
///
/// #[derive(Debug)]
/// struct Counting { inner: Arc<dyn Journal>, seen: AtomicU64 }
///
/// impl JournalLayer for Counting {
///     fn inner(&self) -> &dyn Journal { &*self.inner }
///     fn intercept(&self, at_ms: u64, event: Event) -> u64 {
///         self.seen.fetch_add(1, Ordering::Relaxed);
///         self.inner.append(at_ms, event)
///     }
/// }
///
/// let j = Counting { inner: Arc::new(MemoryJournal::default()), seen: AtomicU64::new(0) };
/// j.append(0, Event::Note { text: "x".into() });
/// assert_eq!((j.seen.load(Ordering::Relaxed), j.read_batch(0, 10).len()), (1, 1));
/// ```
pub trait JournalLayer: Send + Sync + std::fmt::Debug {
    /// The wrapped journal: every method but `append` is answered by it.
    fn inner(&self) -> &dyn Journal;
    /// What the layer does with an append: it must append `event` to [`JournalLayer::inner`]
    /// (or to a journal that numbers the same way) and return that sequence number.
    fn intercept(&self, at_ms: u64, event: Event) -> u64;
    /// What the layer does with a group ([`Journal::append_group`]). The default passes
    /// each record through [`intercept`](JournalLayer::intercept), which keeps the
    /// layer's own work but not the group's one commit: a layer over a durable journal
    /// overrides it to append the group to the inner journal whole.
    fn intercept_group(&self, at_ms: u64, events: Vec<Event>) -> u64 {
        events
            .into_iter()
            .fold(0, |_, event| self.intercept(at_ms, event))
    }
    /// Whether callers may wait on the inner journal's [`Journal::watermark`]. A layer
    /// that must never make the runtime wait on a writer thread (a simulation on a paused
    /// clock) says no; the default is yes.
    fn forwards_watermark(&self) -> bool {
        true
    }
}

impl<L: JournalLayer> Journal for L {
    fn append(&self, at_ms: u64, event: Event) -> u64 {
        self.intercept(at_ms, event)
    }
    fn append_group(&self, at_ms: u64, events: Vec<Event>) -> u64 {
        self.intercept_group(at_ms, events)
    }
    fn read_after(&self, after: u64) -> Vec<Record> {
        self.inner().read_after(after)
    }
    fn len(&self) -> u64 {
        self.inner().len()
    }
    fn is_empty(&self) -> bool {
        self.inner().is_empty()
    }
    fn sync_point(&self, seq: u64) {
        self.inner().sync_point(seq)
    }
    fn want(&self, seq: u64) {
        self.inner().want(seq)
    }
    fn watermark(&self) -> Option<tokio::sync::watch::Receiver<Watermark>> {
        if self.forwards_watermark() {
            self.inner().watermark()
        } else {
            None
        }
    }
    fn max_payload_bytes(&self) -> usize {
        self.inner().max_payload_bytes()
    }
    fn read_batch(&self, after: u64, max: usize) -> Vec<Record> {
        self.inner().read_batch(after, max)
    }
    fn write_stats(&self) -> Option<WriteStats> {
        self.inner().write_stats()
    }
    fn runs(&self, query: &RunQuery) -> Vec<RunEntry> {
        self.inner().runs(query)
    }
    fn run_entry(&self, run: uuid::Uuid) -> Option<RunEntry> {
        self.inner().run_entry(run)
    }
    fn records_of(&self, id: uuid::Uuid) -> Vec<Record> {
        self.inner().records_of(id)
    }
    fn model_call_counts(
        &self,
        tasks: &[uuid::Uuid],
    ) -> std::collections::HashMap<(uuid::Uuid, u64), u32> {
        self.inner().model_call_counts(tasks)
    }
    fn indexed(&self) -> bool {
        self.inner().indexed()
    }
}

/// Adds to `counts` the `model_call` records among `events` of the tasks in `tasks`, per
/// `(task, epoch)`: the rule behind [`Journal::model_call_counts`].
pub fn count_model_calls<'a>(
    events: impl Iterator<Item = &'a Event>,
    tasks: &[uuid::Uuid],
    counts: &mut std::collections::HashMap<(uuid::Uuid, u64), u32>,
) {
    let tasks: std::collections::HashSet<&uuid::Uuid> = tasks.iter().collect();
    for e in events {
        if let Event::ModelCall { task, epoch, .. } = e
            && tasks.contains(task)
        {
            let n = counts.entry((*task, *epoch)).or_default();
            *n = n.saturating_add(1);
        }
    }
}

/// How far a journal that writes behind `append` has got (see [`Journal::watermark`]).
///
/// # Example
/// ```
/// use muster_core::journal::Watermark;
///
/// let w = Watermark { written: 7, stopped: false };
/// assert!(w.covers(7) && !w.covers(8));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watermark {
    /// Every record up to this sequence number is written.
    pub written: u64,
    /// The writer has stopped (closed, or failed): `written` moves no more.
    pub stopped: bool,
}

impl Watermark {
    /// Whether record `seq` is written.
    pub fn covers(&self, seq: u64) -> bool {
        self.written >= seq
    }
}

/// Settings of a journal backend.
///
/// # Example
/// ```
/// use muster_core::journal::JournalConfig;
///
/// let c = JournalConfig { max_payload_bytes: 1 << 20, ..JournalConfig::default() };
/// assert!(c.max_payload_bytes < JournalConfig::default().max_payload_bytes);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalConfig {
    /// The largest serialized payload (task input or output) accepted, in bytes.
    /// Default 4 MiB.
    pub max_payload_bytes: usize,
    /// Fault injection: the SQLite writer waits this long before every commit, as a slow
    /// disk would (`muster run` reads it from `MUSTER_JOURNAL_COMMIT_DELAY`, e.g. `20ms`).
    /// For failure drills and tests; zero by default.
    pub commit_delay: std::time::Duration,
    /// How long the SQLite writer gathers records that nobody waits for before it commits
    /// them (a record waited for, by a task's outcome, a step, a gate or a flush, is
    /// committed at once with everything before it). Bounds what a crash can lose of
    /// records not yet acknowledged to anyone. Default 2 ms.
    pub commit_window: std::time::Duration,
    /// The in-memory journal ([`MemoryJournal`]) keeps at most this many of the most recent
    /// records; older ones are dropped as new ones arrive (sequence numbers keep counting).
    /// Default [`DEFAULT_RETAIN_RECORDS`] (10,000). Zero keeps none. The SQLite journal
    /// keeps every record on disk and ignores it.
    pub retain_records: usize,
    /// The in-memory journal also drops records older than this behind the newest one
    /// (`None`, the default: no age bound). The SQLite journal ignores it.
    pub retain_for: Option<std::time::Duration>,
}

/// How many records an in-memory journal keeps by default ([`JournalConfig::retain_records`]):
/// a few MB at the runtime's typical record sizes; a larger ring costs time too (allocator and cache).
pub const DEFAULT_RETAIN_RECORDS: usize = 10_000;

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            max_payload_bytes: 4 * 1024 * 1024,
            commit_delay: std::time::Duration::ZERO,
            commit_window: std::time::Duration::from_millis(2),
            retain_records: DEFAULT_RETAIN_RECORDS,
            retain_for: None,
        }
    }
}

/// What can go wrong opening, writing or reading a journal. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// No journal at this path.
    #[error("{}: no journal here (the file does not exist or is empty)", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a SQLite database at all (a text file, random bytes...).
    #[error("{}: not a muster journal: the file is not a SQLite database ({detail}); it was left unchanged", path.display())]
    NotSqlite {
        /// The file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// A SQLite database that is not a muster journal.
    #[error("{}: not a muster journal: a SQLite database without the muster `meta` marker ({detail}); it was left unchanged", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What was found (its tables, or its marker).
        detail: String,
    },
    /// A muster journal of a format version this build does not read.
    #[error("{}: muster journal version {found}, this build reads versions 1 to {expected} (a journal written by a newer muster: open it with that muster)", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: String,
        /// The version this build writes and reads.
        expected: u32,
    },
    /// A file-system error (creating the parent directory, reading the header...).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// SQLite refused an operation.
    #[error("{}: {context}: {source}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What was being done.
        context: String,
        /// SQLite's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The writer thread failed or has stopped; records after `durable` may be lost.
    #[error("{}: the journal writer {message} (durable up to seq {durable})", path.display())]
    Writer {
        /// The file.
        path: PathBuf,
        /// What happened.
        message: String,
        /// The last record known to be on disk.
        durable: u64,
    },
    /// Another process holds the journal: one writer per journal file.
    #[error("{}: the journal is in use by another muster process (pid {pid}); one process writes a journal at a time: wait for it to end, or give this one another --journal", path.display())]
    Locked {
        /// The journal file.
        path: PathBuf,
        /// The process holding it, as its lock file says (`unknown` if unreadable).
        pid: String,
    },
    /// A payload over the journal's size limit.
    #[error(
        "the payload of task {task} is {bytes} bytes, over the journal's limit of {limit} bytes"
    )]
    PayloadTooLarge {
        /// The task (its id, or its capability before it has one).
        task: String,
        /// Its serialized size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

/// Checks that a task's payload, serialized as JSON, fits the journal's limit; returns
/// its size. Call it where payloads enter the runtime: `Muster::submit` does for task
/// inputs (refusing the task with `SubmitError::InvalidTask`).
///
/// # Example
/// ```
/// use muster_core::journal::{check_payload, JournalError};
/// use serde_json::json;
///
/// assert!(check_payload("t1", &json!({"a": 1}), 100).is_ok());
/// let big = json!({"data": "x".repeat(200)});
/// let err = check_payload("t1", &big, 100).unwrap_err();
/// assert!(matches!(err, JournalError::PayloadTooLarge { .. }));
/// assert!(err.to_string().contains("task t1"));
/// ```
pub fn check_payload(
    task: impl std::fmt::Display,
    value: &Value,
    limit: usize,
) -> Result<(), JournalError> {
    // A cheap upper bound settles almost every payload without serializing it; only one
    // that might be too large is measured exactly.
    if upper_bound_len(value, limit) <= limit {
        return Ok(());
    }
    let bytes = serialized_len(value);
    if bytes > limit {
        return Err(JournalError::PayloadTooLarge {
            task: task.to_string(),
            bytes,
            limit,
        });
    }
    Ok(())
}

/// An upper bound of `value`'s compact JSON length (every string char escaped to six
/// bytes, every number at its longest); stops counting once past `stop`.
fn upper_bound_len(value: &Value, stop: usize) -> usize {
    match value {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(_) => 24,
        Value::String(s) => s.len() * 6 + 2,
        Value::Array(a) => {
            let mut n = 2 + a.len();
            for v in a {
                n += upper_bound_len(v, stop);
                if n > stop {
                    break;
                }
            }
            n
        }
        Value::Object(o) => {
            let mut n = 2 + o.len() * 2;
            for (k, v) in o {
                n += k.len() * 6 + 2 + upper_bound_len(v, stop);
                if n > stop {
                    break;
                }
            }
            n
        }
    }
}

/// The length of `value` as compact JSON, counted without building the string.
fn serialized_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a `Value` into an infallible sink cannot fail.
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}
