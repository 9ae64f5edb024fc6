//! The writer thread: the one owner of the write connection. It gathers appended records
//! into group commits (committing at once when someone waits for a record), fills in each
//! row's indexed columns (a task's correlation, learned from its `task_submitted`), and
//! publishes the durable watermark, the highest gap-free committed sequence number, to
//! blocking and async waiters (G5).
//!
//! Appends do not wake it one by one: they go into its [`Inbox`], which wakes the writer
//! only when there is something for it to decide (the first record of a batch starts its
//! commit window, someone waits for a record, the batch is full, the journal closes).
//! A sequential caller thus costs the writer two wake-ups per acknowledgement instead of
//! one per record, and the caller's thread makes no system call per record.
//!
//! A commit needs no thread hop when nothing else is committing: with
//! [`Durability::Relaxed`](crate::Durability) the caller that waits for a record commits
//! the queue itself ([`Handle::commit_here`]), so a sequential caller waits neither for
//! the writer thread to wake nor to be woken by it. The write connection sits behind one lock
//! ([`Committer`]), and a batch is taken from the queue only under it, so commits happen
//! in sequence order whichever thread makes them. A caller's commit is tried once: if the
//! write fails, its rows are handed back to the writer thread, which retries them (with
//! its pauses) before anything else. WAL checkpoints run beside the commits
//! (`checkpoint.rs`), and the writer thread copies the rest between two commits when the
//! log reaches its bound: never inside a commit, nor on a caller's thread.
//!
//! It must not be reached except through its [`Handle`], [`Inbox`] and [`Progress`]: the
//! journal handle (`journal.rs`) hands it records and reads its progress.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::watch;
use uuid::Uuid;

use muster_core::journal::write_stats::WriteCounters;
use muster_core::journal::{Event, JournalConfig, Watermark};

use crate::checkpoint::{self, Checkpointer};

/// Most records inserted in one transaction.
const MAX_BATCH: usize = 8192;
/// Most queued records a waiting caller commits on its own thread; a longer queue is the
/// writer thread's (a caller's thread is an actor's: it must not stall on a big batch).
const COMMIT_HERE_MAX: usize = 64;
/// WAL frames of growth after which the checkpointer copies the log into the file, beside
/// the commits (SQLite's own automatic checkpoint, at the same size, would run inside the
/// commit that crossed it, on whichever thread made it).
const CHECKPOINT_FRAMES: i32 = 1000;
/// How long the write connection waits for another connection's write lock (a
/// compaction, `muster approve`) before a commit attempt fails.
pub(crate) const BUSY_WAIT: Duration = Duration::from_secs(5);
/// WAL frames past which the writer thread copies the rest of the log itself, between two
/// commits (and again every [`CHECKPOINT_FRAMES`] after, while a reader keeps the log from
/// starting over): the log starts over only once all of it is copied, which a checkpoint
/// running beside the commits never is. This keeps the WAL bounded.
const LOG_BOUND: i32 = 3 * CHECKPOINT_FRAMES;
/// Commit attempts per batch before the writer gives the batch up and reports failure.
const COMMIT_TRIES: u32 = 3;
/// Task → correlation entries remembered by the writer; past this, it asks the database.
const CORRELATION_CACHE: usize = 100_000;

/// A task's correlation (`?1`, the task's 16 bytes): its first record's, through the
/// task index.
pub(crate) const CORRELATION_OF: &str =
    "SELECT correlation FROM events WHERE task = ?1 ORDER BY seq LIMIT 1";

/// Records appended and not yet taken by the writer, and what the writer is asked to do.
#[derive(Default)]
struct Queue {
    /// `(seq, at_ms, event)`, in sequence order (numbers are taken under the lock).
    records: Vec<(u64, u64, Event)>,
    /// When the writer first saw the queued batch (the start of its commit window).
    oldest: Option<Instant>,
    /// Someone waits for a record: commit what is queued now.
    want: bool,
    /// Commit what is queued and stop.
    close: bool,
    /// A caller's commit failed and handed its rows back to the committer: the writer
    /// thread writes them (before anything queued after them).
    retry: bool,
    /// The writer has stopped: appends are no longer stored.
    stopped: bool,
    /// The sequence numbers of queued records that continue a group
    /// ([`Inbox::append_group`]): a batch never starts at one, so a group is committed in
    /// one transaction.
    joined: BTreeSet<u64>,
}

impl Queue {
    /// The next batch: every queued record up to `max`, more to end a group
    /// ([`batch_len`]); the rest stays queued.
    fn take_batch(&mut self, max: usize) -> Vec<(u64, u64, Event)> {
        let take = batch_len(&self.records, &self.joined, max);
        let batch: Vec<_> = if take == self.records.len() {
            // The next batch starts with room for one like this one.
            let room = self.records.capacity();
            std::mem::replace(&mut self.records, Vec::with_capacity(room))
        } else {
            self.records.drain(..take).collect()
        };
        if let Some(&(last, _, _)) = batch.last()
            && !self.joined.is_empty()
        {
            self.joined = self.joined.split_off(&(last + 1));
        }
        batch
    }
}

/// How many of `records` the next batch takes: all of them up to `max`; above it, `max`,
/// moved on past any record that continues a group (`joined`), so that no group is split
/// between two commits.
fn batch_len(records: &[(u64, u64, Event)], joined: &BTreeSet<u64>, max: usize) -> usize {
    if records.len() <= max {
        return records.len();
    }
    let mut cut = max;
    while records.get(cut).is_some_and(|r| joined.contains(&r.0)) {
        cut += 1;
    }
    cut
}

/// Where appends go: a queue the writer takes whole, and the condition it sleeps on.
#[derive(Default)]
pub(crate) struct Inbox {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Times the writer thread went for the committer's lock to commit (tests: it takes
    /// its batch only once it holds the lock).
    #[cfg(test)]
    to_commit: AtomicU64,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

impl Inbox {
    /// Queues `event` under the next sequence number from `last`, taken under the queue's
    /// lock so that the queue stays in sequence order; returns the number, or `Err` with it
    /// if the writer has stopped (the record is not stored). Wakes the writer only for the
    /// first record of a batch (it starts the batch's commit window) and when the batch is
    /// full.
    pub(crate) fn append(&self, last: &AtomicU64, at_ms: u64, event: Event) -> Result<u64, u64> {
        let mut q = self.queue.lock();
        let seq = last.fetch_add(1, Ordering::AcqRel) + 1;
        if q.stopped || q.close {
            return Err(seq);
        }
        q.records.push((seq, at_ms, event));
        let first = q.records.len() == 1;
        let full = q.records.len() >= MAX_BATCH;
        drop(q);
        if first || full {
            self.wake.notify_one();
        }
        Ok(seq)
    }

    /// Queues `events` under consecutive sequence numbers from `last`, as one group that
    /// the writer commits in one transaction; returns the last number, or `Err` with it if
    /// the writer has stopped (nothing of the group is stored).
    pub(crate) fn append_group(
        &self,
        last: &AtomicU64,
        at_ms: u64,
        events: Vec<Event>,
    ) -> Result<u64, u64> {
        let n = events.len() as u64;
        let mut q = self.queue.lock();
        let first = last.fetch_add(n, Ordering::AcqRel) + 1;
        let end = first + n - 1;
        if q.stopped || q.close {
            return Err(end);
        }
        let was_empty = q.records.is_empty();
        for (seq, event) in (first..).zip(events) {
            if seq > first {
                q.joined.insert(seq);
            }
            q.records.push((seq, at_ms, event));
        }
        let full = q.records.len() >= MAX_BATCH;
        drop(q);
        if was_empty || full {
            self.wake.notify_one();
        }
        Ok(end)
    }

    /// Asks the writer to commit what is queued now (someone waits for a record).
    pub(crate) fn want(&self) {
        self.queue.lock().want = true;
        self.wake.notify_one();
    }

    /// Asks the writer to commit what is queued and stop.
    pub(crate) fn close(&self) {
        self.queue.lock().close = true;
        self.wake.notify_one();
    }
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

/// The writer's threads and the handles the journal keeps: its inbox, the committing half
/// (shared with callers that commit on their own thread), and the checkpointer.
pub(crate) struct Handle {
    pub(crate) inbox: Arc<Inbox>,
    committer: Arc<Mutex<Committer>>,
    /// A waiting caller may commit the queue itself ([`Handle::commit_here`]).
    here: bool,
    checkpointer: Arc<Checkpointer>,
    threads: Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
    /// Commits made on a caller's thread.
    #[cfg(test)]
    here_commits: AtomicU64,
    /// Failed commits a caller's thread handed back to the writer thread.
    #[cfg(test)]
    handed_back: AtomicU64,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("here", &self.here)
            .finish_non_exhaustive()
    }
}

/// Starts the writer thread on `conn` and the checkpointer on a connection of its own to
/// `path`; they stop once [`Handle::close`] is called and what was queued is committed.
/// With `here`, a caller waiting for a record commits the queue on its own thread when
/// nothing else is committing ([`Handle::commit_here`]).
pub(crate) fn start(
    mut conn: Connection,
    path: &std::path::Path,
    progress: Arc<Progress>,
    written: Arc<WriteCounters>,
    config: &JournalConfig,
    here: bool,
) -> std::io::Result<Handle> {
    let (checkpointer, checkpointing) = checkpoint::start(path, BUSY_WAIT)?;
    // The hook replaces SQLite's automatic checkpoint: it notes the log's size and asks
    // the checkpointer each time the log has grown by the bound.
    let log = Arc::new(AtomicI32::new(0));
    let (seen, asked) = (log.clone(), checkpointer.clone());
    let mut next = CHECKPOINT_FRAMES;
    let hooked = conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames: i32| {
        if frames < seen.swap(frames, Ordering::AcqRel) {
            // The log started over.
            next = CHECKPOINT_FRAMES;
        }
        // From the bound on, the writer thread copies the log itself (a checkpointer
        // running then would only make its copy find the checkpoint busy).
        if frames >= next && frames < LOG_BOUND {
            asked.ask();
            next = frames + CHECKPOINT_FRAMES;
        }
        Ok(())
    }));
    if let Err(e) = hooked {
        checkpointer.stop();
        let _ = checkpointing.join();
        return Err(std::io::Error::other(e));
    }
    let inbox = Arc::new(Inbox::default());
    let committer = Arc::new(Mutex::new(Committer {
        conn,
        progress: progress.clone(),
        written,
        correlations: HashMap::new(),
        commit_delay: config.commit_delay,
        log,
        checkpoint_at: LOG_BOUND,
        handed_back: None,
        #[cfg(test)]
        fail_writes: 0,
    }));
    let writer = Writer {
        inbox: inbox.clone(),
        committer: committer.clone(),
        progress,
        commit_window: config.commit_window,
    };
    let writing = match std::thread::Builder::new()
        .name("muster-journal".into())
        .spawn(move || writer.run())
    {
        Ok(t) => t,
        Err(e) => {
            checkpointer.stop();
            let _ = checkpointing.join();
            return Err(e);
        }
    };
    Ok(Handle {
        inbox,
        committer,
        here: here && config.commit_delay.is_zero(),
        checkpointer,
        threads: Mutex::new(Some((writing, checkpointing))),
        #[cfg(test)]
        here_commits: AtomicU64::new(0),
        #[cfg(test)]
        handed_back: AtomicU64::new(0),
    })
}

impl Handle {
    /// Commits what is queued on the caller's thread, if that is allowed
    /// ([`Durability::Relaxed`](crate::Durability), no injected commit delay), nothing else
    /// is committing (the writer thread or another caller), at most [`COMMIT_HERE_MAX`]
    /// records are queued, no checkpoint is due, and no other connection holds SQLite's
    /// write lock. Returns whether nothing is left queued for the writer thread (it
    /// committed, or nothing was queued); if `false`, the caller asks the writer thread
    /// ([`Inbox::want`]).
    ///
    /// The batch is taken from the queue under the committer's lock, as the writer thread
    /// takes its own, so batches are committed in the order they were queued.
    pub(crate) fn commit_here(&self) -> bool {
        if !self.here {
            return false;
        }
        let Some(mut committer) = self.committer.try_lock() else {
            return false;
        };
        if committer.checkpoint_due() {
            // The writer thread commits and copies the rest of the log: no caller's
            // thread runs the copy or its sync.
            return false;
        }
        if committer.handed_back.is_some() {
            // A caller's failed commit waits for the writer thread: what is queued after
            // it is committed after it.
            return false;
        }
        {
            let q = self.inbox.queue.lock();
            if q.stopped || q.close || q.records.len() > COMMIT_HERE_MAX {
                return false;
            }
            if q.records.is_empty() {
                // With the committer's lock held, nothing is being committed: everything
                // appended so far is (a record already committed may be asked for).
                return true;
            }
        }
        // SQLite's write lock, taken without waiting: when another connection writes (a
        // compaction, `muster approve`'s decision), the writer thread commits, not an
        // actor's thread waiting out the busy timeout.
        if !committer.begin_now() {
            return false;
        }
        let batch = {
            let mut q = self.inbox.queue.lock();
            q.want = false;
            q.oldest = None;
            q.take_batch(MAX_BATCH)
        };
        if batch.is_empty() {
            // The writer thread stopped meanwhile and dropped the queue.
            let _ = committer.conn.execute_batch("ROLLBACK");
            return true;
        }
        // A panic in a commit on an actor's thread must not leave its records neither
        // written nor failed (their waiters would wait forever): it fails the journal.
        let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            committer.commit_begun(batch)
        }));
        match committed {
            Ok(Ok(())) => {
                #[cfg(test)]
                self.here_commits.fetch_add(1, Ordering::Relaxed);
                true
            }
            // The write failed (an I/O error): the writer thread retries the rows, with
            // its pauses, off this thread, before anything queued after them.
            Ok(Err(rows)) => {
                committer.handed_back = Some(rows);
                drop(committer);
                self.inbox.queue.lock().retry = true;
                self.inbox.wake.notify_one();
                #[cfg(test)]
                self.handed_back.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(_) => {
                committer.fail("a commit on the caller's thread panicked");
                true
            }
        }
    }

    /// Failed commits a caller handed back to the writer thread.
    #[cfg(test)]
    pub(crate) fn handed_back(&self) -> u64 {
        self.handed_back.load(Ordering::Relaxed)
    }

    /// Checkpoints the checkpointer thread has run.
    #[cfg(test)]
    pub(crate) fn checkpoints(&self) -> u64 {
        self.checkpointer.done()
    }

    /// Holds the committer's lock, as a caller committing on its own thread does.
    #[cfg(test)]
    pub(crate) fn hold_commits(&self) -> parking_lot::MutexGuard<'_, Committer> {
        self.committer.lock()
    }

    /// Commits made on a caller's thread.
    #[cfg(test)]
    pub(crate) fn here_commits(&self) -> u64 {
        self.here_commits.load(Ordering::Relaxed)
    }

    /// Records queued and not yet taken by a commit.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.inbox.queue.lock().records.len()
    }

    /// Times the writer thread went for the committer's lock to commit.
    #[cfg(test)]
    pub(crate) fn writer_went_to_commit(&self) -> u64 {
        self.inbox.to_commit.load(Ordering::SeqCst)
    }

    /// Commits what is queued, stops both threads and waits for them: `Some(true)` if
    /// both ended normally, `Some(false)` if one of them panicked, `None` if they were
    /// stopped before.
    pub(crate) fn close(&self) -> Option<bool> {
        let (writing, checkpointing) = self.threads.lock().take()?;
        self.inbox.close();
        let wrote = writing.join();
        self.checkpointer.stop();
        let checkpointed = checkpointing.join();
        // The write connection closes now, not when the journal is dropped (SQLite copies
        // the log into the file when its last connection closes).
        if let Ok(none) = Connection::open_in_memory() {
            drop(std::mem::replace(&mut self.committer.lock().conn, none));
        }
        Some(wrote.is_ok() && checkpointed.is_ok())
    }
}

/// Marks the writer stopped when its loop ends, normally or by a panic: queued records are
/// dropped, later appends are refused, and the watermark says `stopped`.
struct Stopped {
    inbox: Arc<Inbox>,
    progress: Arc<Progress>,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let mut q = self.inbox.queue.lock();
        q.stopped = true;
        q.records = Vec::new();
        q.joined.clear();
        drop(q);
        let mut s = self.progress.state.lock();
        s.closed = true;
        let durable = s.durable;
        drop(s);
        self.progress.publish(durable, true);
    }
}

/// The thread that decides when to commit.
struct Writer {
    inbox: Arc<Inbox>,
    committer: Arc<Mutex<Committer>>,
    progress: Arc<Progress>,
    commit_window: Duration,
}

impl Writer {
    /// Gathers records into group commits: it takes the whole queue as soon as someone
    /// waits for a record (`want`), when the batch is full, or when its oldest record has
    /// waited the commit window, so a sequential caller pays one commit per
    /// acknowledgement rather than one per record, and concurrent callers share commits.
    fn run(self) {
        // However the loop ends (closed, or a panic unwinding), appends stop being queued
        // and waiters learn that the writer stopped: nothing waits or grows forever.
        let _stop = Stopped {
            inbox: self.inbox.clone(),
            progress: self.progress.clone(),
        };
        loop {
            let mut q = self.inbox.queue.lock();
            loop {
                if !q.records.is_empty() && q.oldest.is_none() {
                    // The window starts when the writer sees the batch, as it always has.
                    q.oldest = Some(Instant::now());
                }
                let durable = self.progress.state.lock().durable;
                let wanted = q.want || self.progress.wanted.load(Ordering::Acquire) > durable;
                let window_over = q.oldest.is_some_and(|t| t.elapsed() >= self.commit_window);
                if q.close
                    || q.retry
                    || (!q.records.is_empty() && (wanted || window_over))
                    || q.records.len() >= MAX_BATCH
                {
                    break;
                }
                q.want = false;
                match q.oldest {
                    // A batch is open: sleep until its window ends or someone wants it.
                    Some(t) => {
                        let until = t + self.commit_window;
                        self.inbox.wake.wait_until(&mut q, until);
                    }
                    None => self.inbox.wake.wait(&mut q),
                }
            }
            drop(q);
            #[cfg(test)]
            self.inbox.to_commit.fetch_add(1, Ordering::SeqCst);
            // The batch is taken under the committer's lock (after a caller committing on
            // its own thread, if one is): commits follow the queue's order.
            let mut committer = self.committer.lock();
            let (batch, closing) = {
                let mut q = self.inbox.queue.lock();
                q.want = false;
                q.oldest = None;
                q.retry = false;
                let batch = q.take_batch(MAX_BATCH);
                (batch, q.close && q.records.is_empty())
            };
            committer.write_handed_back();
            if !batch.is_empty() {
                committer.commit(batch);
            }
            if committer.checkpoint_due() {
                committer.checkpoint();
            }
            drop(committer);
            if closing {
                break;
            }
        }
    }
}

/// The committing half of the writer: the write connection and what a commit needs. The
/// writer thread commits through it, and so does a caller committing on its own thread
/// ([`Handle::commit_here`]); its lock orders the commits.
pub(crate) struct Committer {
    conn: Connection,
    progress: Arc<Progress>,
    /// Commits, records, latency and batch sizes, for [`Journal::write_stats`].
    written: Arc<WriteCounters>,
    /// Task → correlation, learned from `task_submitted`, so that every task event gets
    /// its correlation column (the events themselves do not carry it). `None`: none known.
    correlations: HashMap<Uuid, Option<Uuid>>,
    /// Fault injection: a pause before every commit (a slow disk).
    commit_delay: Duration,
    /// Frames in the WAL after the last commit (set by the connection's WAL hook).
    log: Arc<AtomicI32>,
    /// The log size at which the writer thread copies the rest of the log next.
    checkpoint_at: i32,
    /// Rows a caller's commit could not write, for the writer thread to retry (with its
    /// pauses) before anything else: a caller's thread tries once.
    handed_back: Option<Vec<Row>>,
    /// Fault injection for tests: the next this many writes fail as an I/O error would.
    #[cfg(test)]
    pub(crate) fail_writes: u32,
}

impl Committer {
    /// Whether the WAL has grown to where the writer thread copies the rest of it.
    fn checkpoint_due(&mut self) -> bool {
        let frames = self.log.load(Ordering::Acquire);
        if frames < LOG_BOUND {
            // The log started over since the last such copy (or never grew).
            self.checkpoint_at = LOG_BOUND;
        }
        frames >= self.checkpoint_at
    }

    /// Copies what the checkpointer has not into the file, with no commit running, so the
    /// next commit starts the log over. If the checkpointer is copying, the writer thread
    /// tries again after its next commit; if a reader still reads the old log, once the
    /// log has grown by another [`CHECKPOINT_FRAMES`].
    fn checkpoint(&mut self) {
        // The first column says whether it could not run at all (the checkpointer thread
        // is copying): then the next commit of the writer thread tries again.
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
        {
            Ok(0) => {}
            Ok(_) => return,
            Err(e) => tracing::warn!(error = %e, "journal checkpoint failed; the next one retries"),
        }
        self.checkpoint_at = self.log.load(Ordering::Acquire) + CHECKPOINT_FRAMES;
    }

    /// Begins a write transaction if SQLite's write lock is free now; false, without
    /// waiting, if another connection holds it.
    fn begin_now(&mut self) -> bool {
        if self.conn.busy_timeout(Duration::ZERO).is_err() {
            return false;
        }
        let begun = self.conn.execute_batch("BEGIN IMMEDIATE").is_ok();
        let _ = self.conn.busy_timeout(BUSY_WAIT);
        begun
    }

    /// Fails the journal: waiters learn that their records will not be written.
    fn fail(&mut self, why: &str) {
        let _ = self.conn.execute_batch("ROLLBACK");
        let mut s = self.progress.state.lock();
        s.failed.get_or_insert_with(|| why.to_string());
        let durable = s.durable;
        drop(s);
        tracing::error!(why, "journal commit failed: records lost");
        self.progress.publish(durable, true);
    }

    /// Commits `batch` (the writer thread), trying again after a pause when the write
    /// fails.
    fn commit(&mut self, batch: Vec<(u64, u64, Event)>) {
        let rows = self.rows(batch);
        if !self.commit_delay.is_zero() {
            std::thread::sleep(self.commit_delay);
        }
        self.write(rows);
    }

    /// Commits `batch` in the transaction [`Committer::begin_now`] opened, on a caller's
    /// thread: one try, no pause. On failure the rows are handed back (`Err`), for the
    /// writer thread to retry.
    fn commit_begun(&mut self, batch: Vec<(u64, u64, Event)>) -> Result<(), Vec<Row>> {
        let rows = self.rows(batch);
        let started = std::time::Instant::now();
        match self.insert(&rows, true) {
            Ok(()) => {
                self.written.commit(rows.len(), started.elapsed());
                self.settle(&rows, None);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "journal commit on a caller's thread failed; the writer thread retries it");
                Err(rows)
            }
        }
    }

    /// Writes rows a caller handed back, if any (the writer thread, before its batch).
    fn write_handed_back(&mut self) {
        if let Some(rows) = self.handed_back.take() {
            self.write(rows);
        }
    }

    fn rows(&mut self, batch: Vec<(u64, u64, Event)>) -> Vec<Row> {
        batch
            .into_iter()
            .map(|(seq, at_ms, e)| self.row(seq, at_ms, e))
            .collect()
    }

    /// Writes `rows` in a transaction of its own, up to [`COMMIT_TRIES`] times with a
    /// pause between tries, and publishes the outcome.
    fn write(&mut self, rows: Vec<Row>) {
        let mut error = None;
        for attempt in 0..COMMIT_TRIES {
            let started = std::time::Instant::now();
            match self.insert(&rows, false) {
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
        self.settle(&rows, error);
    }

    /// One try at inserting `rows` and committing; `begun`: in the open transaction.
    fn insert(&mut self, rows: &[Row], begun: bool) -> Result<(), rusqlite::Error> {
        #[cfg(test)]
        if self.fail_writes > 0 {
            self.fail_writes -= 1;
            if begun {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                Some("injected write failure".into()),
            ));
        }
        match begun {
            true => insert_begun(&self.conn, rows),
            false => insert(&mut self.conn, rows),
        }
    }

    /// Publishes what a write of `rows` did: the durable watermark moves past them, or
    /// the journal fails (`error`: the last try's).
    fn settle(&mut self, rows: &[Row], error: Option<rusqlite::Error>) {
        let mut s = self.progress.state.lock();
        match error {
            None => {
                for r in rows {
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
        // A writer thread that stopped (a panic) has said so: a commit made on a caller's
        // thread after it must not say otherwise.
        let (durable, stopped) = (s.durable, s.failed.is_some() || s.closed);
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
        let found: Option<Option<Vec<u8>>> = self
            .conn
            .prepare_cached(CORRELATION_OF)
            .and_then(|mut s| s.query_row([task.as_bytes()], |r| r.get(0)).optional())
            .ok()
            .flatten();
        let c = found.flatten().and_then(|b| Uuid::from_slice(&b).ok());
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

/// Inserts `rows` in one transaction.
fn insert(conn: &mut Connection, rows: &[Row]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    write_rows(&tx, rows)?;
    tx.commit()
}

/// Inserts `rows` in the transaction already begun on `conn`, and commits it (or rolls
/// it back).
fn insert_begun(conn: &Connection, rows: &[Row]) -> Result<(), rusqlite::Error> {
    let done = write_rows(conn, rows).and_then(|()| conn.execute_batch("COMMIT"));
    if done.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}

/// The rows and their runs' rows, in the open transaction.
fn write_rows(tx: &Connection, rows: &[Row]) -> Result<(), rusqlite::Error> {
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
                r.task.as_ref().map(Uuid::as_bytes),
                r.run.as_ref().map(Uuid::as_bytes),
                r.correlation.as_ref().map(Uuid::as_bytes),
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
            crate::runs::apply(tx, r.seq, r.at_ms, e)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, u64, Event)> {
        seqs.map(|s| {
            (
                s,
                0,
                Event::Note {
                    text: s.to_string(),
                },
            )
        })
        .collect()
    }

    #[test]
    fn a_batch_cut_never_falls_inside_a_group() {
        let records = queued(1..=10);
        // Records 4, 5 and 6 are one group (5 and 6 continue it).
        let joined: BTreeSet<u64> = [5, 6].into();
        assert_eq!(batch_len(&records, &joined, 20), 10, "all fit");
        assert_eq!(batch_len(&records, &joined, 3), 3, "a cut before the group");
        assert_eq!(batch_len(&records, &joined, 4), 6, "moved past the group");
        assert_eq!(batch_len(&records, &joined, 5), 6, "moved past the group");
        assert_eq!(batch_len(&records, &joined, 6), 6, "a cut after the group");
        let all: BTreeSet<u64> = (2..=10).collect();
        assert_eq!(
            batch_len(&records, &all, 2),
            10,
            "one group takes the queue"
        );
    }

    /// What the writer takes from a queue longer than a batch: the group that straddles
    /// the bound goes whole into the first batch; the marks of what was taken go with it.
    #[test]
    fn the_writer_takes_a_group_that_straddles_the_batch_bound_whole() {
        let inbox = Inbox::default();
        let last = AtomicU64::new(0);
        let note = |t: &str| Event::Note { text: t.into() };
        for _ in 0..(MAX_BATCH - 1) {
            inbox.append(&last, 0, note("single")).expect("queued");
        }
        let group = inbox
            .append_group(&last, 0, vec![note("a"), note("b"), note("c")])
            .expect("queued");
        inbox.append(&last, 0, note("after")).expect("queued");
        let mut q = inbox.queue.lock();
        let first = q.take_batch(MAX_BATCH);
        assert_eq!(
            first.len(),
            MAX_BATCH + 2,
            "the whole group in the first batch"
        );
        assert_eq!(first.last().map(|r| r.0), Some(group));
        assert!(q.joined.is_empty(), "the group's marks went with it");
        let second = q.take_batch(MAX_BATCH);
        assert_eq!(second.iter().map(|r| r.0).collect::<Vec<_>>(), [group + 1]);
    }

    #[test]
    fn a_group_is_numbered_consecutively_and_marked_after_its_first_record() {
        let inbox = Inbox::default();
        let last = AtomicU64::new(0);
        let note = |t: &str| Event::Note { text: t.into() };
        assert_eq!(inbox.append(&last, 0, note("alone")), Ok(1));
        assert_eq!(
            inbox.append_group(&last, 0, vec![note("a"), note("b"), note("c")]),
            Ok(4)
        );
        let q = inbox.queue.lock();
        let seqs: Vec<u64> = q.records.iter().map(|r| r.0).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_eq!(q.joined, [3, 4].into());
    }
}
