//! The writer thread: the one owner of the write connection. It gathers appended records
//! into group commits (committing at once when someone waits for a record), fills in each
//! row's indexed columns (a task's correlation, learned from its `task_submitted`), and
//! publishes the durable watermark, the highest gap-free committed sequence number, to
//! blocking and async waiters (G5).
//!
//! It must not be reached except through its channel and [`Progress`]: the journal handle
//! (`journal.rs`) hands it records and reads its progress.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::watch;
use uuid::Uuid;

use muster_core::journal::write_stats::WriteCounters;
use muster_core::journal::{Event, JournalConfig, Watermark};

/// Most records inserted in one transaction.
const MAX_BATCH: usize = 8192;
/// Commit attempts per batch before the writer gives the batch up and reports failure.
const COMMIT_TRIES: u32 = 3;
/// Task → correlation entries remembered by the writer; past this, it asks the database.
const CORRELATION_CACHE: usize = 100_000;

/// What the journal handle sends the writer.
pub(crate) enum Msg {
    /// Store `(seq, at_ms, event)`.
    Append(u64, u64, Event),
    /// Someone waits for a record (the highest is in [`Progress::wanted`]): commit now.
    Want,
    /// Commit what is pending and stop.
    Close,
}

/// The writer's progress, shared with waiters.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Every record up to here is committed.
    pub(crate) durable: u64,
    /// Committed records above `durable` (appends from several threads arrive out of order).
    pub(crate) ahead: BTreeSet<u64>,
    /// The first commit failure, if any.
    pub(crate) failed: Option<String>,
    /// The writer has stopped.
    pub(crate) closed: bool,
}

#[derive(Debug)]
pub(crate) struct Progress {
    pub(crate) state: Mutex<State>,
    pub(crate) changed: Condvar,
    /// The highest sequence number anyone has waited for.
    pub(crate) wanted: AtomicU64,
    /// The same progress for async waiters (the runtime's actors).
    pub(crate) watermark: watch::Sender<Watermark>,
}

impl Progress {
    /// The progress of a journal whose records up to `durable` are on disk.
    pub(crate) fn new(durable: u64) -> Self {
        let (watermark, _) = watch::channel(Watermark {
            written: durable,
            stopped: false,
        });
        Progress {
            state: Mutex::new(State {
                durable,
                ..State::default()
            }),
            changed: Condvar::new(),
            wanted: AtomicU64::new(durable),
            watermark,
        }
    }

    /// Wakes every waiter with the state `s` (taken under the lock, published after).
    pub(crate) fn publish(&self, durable: u64, stopped: bool) {
        self.changed.notify_all();
        self.watermark.send_if_modified(|w| {
            let next = Watermark {
                written: durable,
                stopped,
            };
            let changed = *w != next;
            *w = next;
            changed
        });
    }
}

/// One row, ready to insert.
struct Row {
    seq: u64,
    at_ms: u64,
    kind: &'static str,
    task: Option<Uuid>,
    /// The run (or, outside any run, the correlation) whose story it is part of.
    run: Option<Uuid>,
    correlation: Option<Uuid>,
    agent: Option<String>,
    epoch: Option<u64>,
    body: String,
    /// A run record, kept to update its run's row in the same transaction.
    run_event: Option<Event>,
}

/// Starts the writer thread on `conn`: returns the channel to send it records on and its
/// handle (it stops at [`Msg::Close`] or when every sender is gone).
pub(crate) fn start(
    conn: Connection,
    progress: Arc<Progress>,
    written: Arc<WriteCounters>,
    config: &JournalConfig,
) -> std::io::Result<(mpsc::Sender<Msg>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let writer = Writer {
        conn,
        rx,
        progress,
        written,
        correlations: HashMap::new(),
        commit_delay: config.commit_delay,
        commit_window: config.commit_window,
    };
    let handle = std::thread::Builder::new()
        .name("muster-journal".into())
        .spawn(move || writer.run())?;
    Ok((tx, handle))
}

/// The thread that owns the write connection.
struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Msg>,
    progress: Arc<Progress>,
    /// Commits, records, latency and batch sizes, for [`Journal::write_stats`].
    written: Arc<WriteCounters>,
    /// Task → correlation, learned from `task_submitted`, so that every task event gets
    /// its correlation column (the events themselves do not carry it). `None`: none known.
    correlations: HashMap<Uuid, Option<Uuid>>,
    /// Fault injection: a pause before every commit (a slow disk).
    commit_delay: Duration,
    commit_window: Duration,
}

impl Writer {
    /// Gathers records into group commits: what is queued is taken at once; a batch is
    /// committed as soon as someone waits for a record (`want`), when it is full, or when
    /// its oldest record has waited the commit window, so a sequential caller pays one
    /// commit per acknowledgement rather than one per record.
    fn run(mut self) {
        let mut closing = false;
        let mut batch = Vec::new();
        let mut oldest = std::time::Instant::now();
        let mut durable = self.progress.state.lock().durable;
        while !closing {
            let next = if batch.is_empty() {
                self.rx.recv().ok()
            } else {
                let left = self.commit_window.saturating_sub(oldest.elapsed());
                match self.rx.recv_timeout(left) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => Some(Msg::Want),
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                }
            };
            let mut take = |m: Option<Msg>, batch: &mut Vec<_>| match m {
                Some(Msg::Append(seq, at, e)) => {
                    if batch.is_empty() {
                        oldest = std::time::Instant::now();
                    }
                    batch.push((seq, at, e));
                    false
                }
                Some(Msg::Want) => false,
                Some(Msg::Close) | None => true,
            };
            closing = take(next, &mut batch);
            while !closing && batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(m) => closing = take(Some(m), &mut batch),
                    Err(mpsc::TryRecvError::Disconnected) => closing = true,
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            let due = closing
                || batch.len() >= MAX_BATCH
                || self.progress.wanted.load(Ordering::Acquire) > durable
                || oldest.elapsed() >= self.commit_window;
            if due && !batch.is_empty() {
                self.commit(std::mem::take(&mut batch));
                durable = self.progress.state.lock().durable;
            }
        }
        let mut s = self.progress.state.lock();
        s.closed = true;
        let durable = s.durable;
        drop(s);
        self.progress.publish(durable, true);
    }

    fn commit(&mut self, batch: Vec<(u64, u64, Event)>) {
        let rows: Vec<Row> = batch
            .into_iter()
            .map(|(seq, at_ms, e)| self.row(seq, at_ms, e))
            .collect();
        if !self.commit_delay.is_zero() {
            std::thread::sleep(self.commit_delay);
        }
        let mut error = None;
        for attempt in 0..COMMIT_TRIES {
            let started = std::time::Instant::now();
            match insert(&mut self.conn, &rows) {
                Ok(()) => {
                    self.written.commit(rows.len(), started.elapsed());
                    error = None;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "journal commit failed; retrying");
                    error = Some(e);
                    std::thread::sleep(Duration::from_millis(50 << attempt));
                }
            }
        }
        let mut s = self.progress.state.lock();
        match error {
            None => {
                for r in &rows {
                    if r.seq > s.durable {
                        s.ahead.insert(r.seq);
                    }
                }
                loop {
                    let next = s.durable + 1;
                    if !s.ahead.remove(&next) {
                        break;
                    }
                    s.durable = next;
                }
            }
            Some(e) => {
                let (first, last) = (rows.first().map(|r| r.seq), rows.last().map(|r| r.seq));
                tracing::error!(error = %e, ?first, ?last, "journal commit failed: records lost");
                s.failed
                    .get_or_insert_with(|| format!("commit of seq {first:?}..={last:?}: {e}"));
            }
        }
        let (durable, stopped) = (s.durable, s.failed.is_some());
        drop(s);
        self.progress.publish(durable, stopped);
    }

    fn row(&mut self, seq: u64, at_ms: u64, e: Event) -> Row {
        let task = e.task();
        let correlation = match (e.correlation(), task) {
            (Some(c), Some(t)) => {
                if self.correlations.get(&t) != Some(&Some(c)) {
                    self.remember(t, Some(c));
                }
                Some(c)
            }
            (Some(c), None) => Some(c),
            (None, Some(t)) => self.correlation_of(t),
            (None, None) => None,
        };
        let body = serde_json::to_string(&e).unwrap_or_else(|err| {
            // Serializing an `Event` cannot fail (string keys only); keep the sequence
            // gap-free with a note if it ever does.
            serde_json::json!({"type": "note", "text": format!("unserializable {} event: {err}", e.kind())})
                .to_string()
        });
        let run = e.run();
        Row {
            seq,
            at_ms,
            kind: e.kind(),
            task,
            run: run.or(correlation),
            correlation,
            agent: e.agent().map(str::to_string),
            epoch: e.epoch(),
            body,
            run_event: run.is_some().then_some(e),
        }
    }

    fn correlation_of(&mut self, task: Uuid) -> Option<Uuid> {
        if let Some(c) = self.correlations.get(&task) {
            return *c;
        }
        // A task's first event (its `task_submitted`, or a recovered task's envelope)
        // carries the correlation: one index probe, no scan of the task's rows.
        let found: Option<Option<String>> = self
            .conn
            .prepare_cached("SELECT correlation FROM events WHERE task = ?1 ORDER BY seq LIMIT 1")
            .and_then(|mut s| s.query_row([task.to_string()], |r| r.get(0)).optional())
            .ok()
            .flatten();
        let c = found.flatten().and_then(|s| Uuid::parse_str(&s).ok());
        // Remember misses too, so a task without a known correlation costs one probe.
        self.remember(task, c);
        c
    }

    fn remember(&mut self, task: Uuid, correlation: Option<Uuid>) {
        if self.correlations.len() >= CORRELATION_CACHE {
            self.correlations.clear();
        }
        self.correlations.insert(task, correlation);
    }
}

fn insert(conn: &mut Connection, rows: &[Row]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO events (seq, at_ms, kind, task, run, correlation, agent, epoch, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for r in rows {
            stmt.execute(params![
                r.seq as i64,
                r.at_ms as i64,
                r.kind,
                r.task.map(|t| t.to_string()),
                r.run.map(|t| t.to_string()),
                r.correlation.map(|c| c.to_string()),
                r.agent,
                r.epoch.map(|e| e as i64),
                r.body,
            ])?;
        }
    }
    // Each run's row changes with its records, in the same transaction: the index never
    // says what the records do not.
    for r in rows {
        if let Some(e) = &r.run_event {
            crate::runs::apply(&tx, r.seq, r.at_ms, e)?;
        }
    }
    tx.commit()
}
