//! The journal handle, [`SqliteJournal`]: opens the file (taking its lock), starts the
//! writer thread, hands it every append without waiting on the disk, and waits for the
//! durable watermark when asked to. It implements the core's [`Journal`] trait.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::Connection;
use tokio::sync::watch;

use crate::file::{Probe, create, lock, open_read_only, probe, sql_error};
use crate::migrate::migrate;
use crate::read::read_records;
use crate::runs;
use crate::writer::{self, Handle, Progress};
use muster_core::journal::write_stats::WriteCounters;
use muster_core::journal::{
    Event, Journal, JournalConfig, JournalError, Record, RunEntry, RunQuery, Watermark, WriteStats,
};

/// How long a durability wait may take before it reports the writer stuck.
const DURABLE_WAIT: Duration = Duration::from_secs(60);

/// How hard the journal works to keep a record once appended.
///
/// # Example
/// ```
/// use muster_sqlite::Durability;
///
/// assert_eq!("sync".parse::<Durability>(), Ok(Durability::Sync));
/// assert_eq!(Durability::default(), Durability::Relaxed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: every group commit is synced to disk before the runtime reports
    /// or acts on any record in it. Survives a crash of the process and a power loss.
    Sync,
    /// `synchronous=NORMAL` in WAL mode: every group commit is written to the file (the
    /// WAL) before the runtime reports or acts on any record in it, without waiting for
    /// the disk to sync. Survives a crash of the process (SIGKILL, panic, OOM kill); the
    /// last commits can be lost on a power loss or a kernel crash.
    #[default]
    Relaxed,
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sync" => Ok(Durability::Sync),
            "relaxed" => Ok(Durability::Relaxed),
            other => Err(format!(
                "unknown durability `{other}`, expected `sync` or `relaxed`"
            )),
        }
    }
}

/// A journal in one SQLite file (WAL mode), written by one thread in group commits.
///
/// `append` never waits on the disk; `flush`/`wait_durable` wait for the writer (and ask
/// it to commit at once). Reads never make the writer commit early: a read of records
/// (`read_after`, `read_batch`, `records_of`) sees every record appended before it,
/// waiting for the group commit that takes them if they are not committed yet; the run
/// index (`runs`, `run_entry`) answers from what is committed, at once. Dropping it (or
/// [`SqliteJournal::close`]) commits what is pending and stops the writer.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use muster_core::journal::{Event, Journal};
/// use muster_sqlite::{Durability, SqliteJournal};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join(".muster/journal.db");
/// let journal = Arc::new(SqliteJournal::open(&path, Durability::Relaxed)?);
/// let seq = journal.append(1_000, Event::Note { text: "hello".into() });
/// journal.wait_durable(seq)?;
/// assert_eq!(journal.read_after(0)[0].event, Event::Note { text: "hello".into() });
/// // Give it to a runtime: `Muster::builder().journal(journal.clone())`.
/// # Ok(()) }
/// ```
///
/// A record a caller is about to wait for is committed at once (`Journal::want`), and the
/// writer counts its group commits (`Journal::write_stats`):
/// ```
/// use muster_core::journal::{Event, Journal};
/// use muster_sqlite::{Durability, SqliteJournal};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let j = SqliteJournal::open(dir.path().join("j.db"), Durability::Relaxed)?;
/// let seq = j.append(0, Event::Note { text: "acknowledge me".into() });
/// j.want(seq); // committed now, not at the end of the commit window
/// j.wait_durable(seq)?;
/// let s = j.write_stats().expect("SQLite writes behind append");
/// assert_eq!(s.records, 1);
/// assert_eq!(s.batch_buckets.iter().sum::<u64>(), s.commits);
/// # Ok(()) }
/// ```
pub struct SqliteJournal {
    path: PathBuf,
    durability: Durability,
    config: JournalConfig,
    /// The last sequence number handed out.
    last: AtomicU64,
    progress: Arc<Progress>,
    reader: Mutex<Option<Connection>>,
    /// The writer thread, the checkpointer, and the queue between appends and them.
    writer: Handle,
    /// What the writer has committed, and how fast.
    written: Arc<WriteCounters>,
    /// The lock file, held (flock) while this journal is open: one writer per journal.
    /// Released explicitly at close, not by closing the descriptor: a child forked by
    /// another thread of this process holds a copy of the descriptor until it execs, and
    /// that copy would keep the lock (the journal could not be reopened for that while).
    lock: std::fs::File,
}

impl std::fmt::Debug for SqliteJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJournal")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .field("last", &self.last.load(Ordering::Relaxed))
            .finish()
    }
}

impl SqliteJournal {
    /// Opens the journal at `path`, creating the file and its parent directories if
    /// needed, with the default [`JournalConfig`]. A file that exists and is not a muster
    /// journal is refused, unchanged.
    ///
    /// # Example
    /// ```
    /// use muster_core::journal::JournalError;
    /// use muster_sqlite::{Durability, SqliteJournal};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let notes = dir.path().join("notes.txt");
    /// std::fs::write(&notes, "not a database")?;
    /// let err = SqliteJournal::open(&notes, Durability::Sync).unwrap_err();
    /// assert!(matches!(err, JournalError::NotSqlite { .. }));
    /// assert_eq!(std::fs::read_to_string(&notes)?, "not a database");
    /// # Ok(()) }
    /// ```
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, JournalError> {
        Self::open_with(path, durability, JournalConfig::default())
    }

    /// [`SqliteJournal::open`] with explicit settings.
    ///
    /// # Example
    /// ```
    /// use muster_core::journal::{Journal, JournalConfig};
    /// use muster_sqlite::{Durability, SqliteJournal};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let config = JournalConfig { max_payload_bytes: 64 * 1024, ..JournalConfig::default() };
    /// let j = SqliteJournal::open_with(dir.path().join("j.db"), Durability::Relaxed, config)?;
    /// assert_eq!(j.max_payload_bytes(), 64 * 1024);
    /// # Ok(()) }
    /// ```
    pub fn open_with(
        path: impl AsRef<Path>,
        durability: Durability,
        config: JournalConfig,
    ) -> Result<Self, JournalError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        // A file that is not a muster journal is refused before anything is created
        // beside it (not even the lock file).
        if probe(&path)? == Probe::Absent
            && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // One writer per journal: the lock is taken before the file is created, recovered
        // or appended to, and the file is looked at again under it.
        let lock = lock(&path)?;
        if probe(&path)? == Probe::Absent {
            create(&path)?;
        }
        let sql = |context: &str| sql_error(&path, context);
        let mut conn = Connection::open(&path).map_err(sql("open"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql("set WAL mode"))?;
        let sync = match durability {
            Durability::Sync => "FULL",
            Durability::Relaxed => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(sql("set synchronous"))?;
        conn.busy_timeout(writer::BUSY_WAIT)
            .map_err(sql("set busy timeout"))?;
        // An older file is migrated; a current one gets this build's indexes (it says so
        // in the log when it changes anything).
        migrate(&mut conn, &path)?;
        let last: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(sql("read the last sequence number"))?;
        let last = last.max(0) as u64;
        let progress = Arc::new(Progress::new(last));
        let written = Arc::new(WriteCounters::default());
        // A caller waiting for a record commits it on its own thread when nothing else
        // commits: with `Relaxed` a commit is a write into the OS's cache (no sync), as
        // cheap as the two thread wake-ups it saves.
        let here = durability == Durability::Relaxed;
        let handle = writer::start(
            conn,
            &path,
            progress.clone(),
            written.clone(),
            &config,
            here,
        )
        .map_err(|source| JournalError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(SqliteJournal {
            path,
            durability,
            config,
            last: AtomicU64::new(last),
            progress,
            reader: Mutex::new(None),
            writer: handle,
            written,
            lock,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer's handle.
    #[cfg(test)]
    pub(crate) fn writer(&self) -> &Handle {
        &self.writer
    }

    /// The durability mode it was opened with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Blocks until record `seq` is committed (and, with [`Durability::Sync`], synced).
    /// Fails if the writer failed or stopped before it got there, or after 60 s.
    ///
    /// # Example
    /// ```
    /// use muster_core::journal::{Event, Journal};
    /// use muster_sqlite::{Durability, SqliteJournal};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let j = SqliteJournal::open(dir.path().join("j.db"), Durability::Sync)?;
    /// let seq = j.append(0, Event::Note { text: "on disk before we go on".into() });
    /// j.wait_durable(seq)?;
    /// # Ok(()) }
    /// ```
    pub fn wait_durable(&self, seq: u64) -> Result<(), JournalError> {
        self.wait_for(seq, true)
    }

    /// Blocks until record `seq` is committed, asking the writer to commit it at once
    /// (`ask`) or waiting for the group commit that takes it within the commit window.
    /// Fails if the writer failed or stopped before it got there, or after 60 s.
    fn wait_for(&self, seq: u64, ask: bool) -> Result<(), JournalError> {
        let deadline = std::time::Instant::now() + DURABLE_WAIT;
        if ask {
            self.want(seq);
        }
        let mut s = self.progress.state.lock();
        loop {
            if s.durable >= seq {
                return Ok(());
            }
            let message = if let Some(f) = &s.failed {
                Some(format!("failed: {f}"))
            } else if s.closed {
                Some("has stopped (the journal was closed)".to_string())
            } else if self
                .progress
                .changed
                .wait_until(&mut s, deadline)
                .timed_out()
                && s.durable < seq
            {
                Some(format!(
                    "did not commit seq {seq} within {}s",
                    DURABLE_WAIT.as_secs()
                ))
            } else {
                None
            };
            if let Some(message) = message {
                return Err(JournalError::Writer {
                    path: self.path.clone(),
                    message,
                    durable: s.durable,
                });
            }
        }
    }

    /// Blocks until every record appended so far is committed.
    ///
    /// # Example
    /// ```
    /// # use muster_core::journal::{Event, Journal};
    /// use muster_sqlite::{Durability, SqliteJournal};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let j = SqliteJournal::open(dir.path().join("j.db"), Durability::Relaxed)?;
    /// for i in 0..100 { j.append(i, Event::Note { text: format!("{i}") }); }
    /// j.flush()?; // now `sqlite3 j.db 'select count(*) from events'` says 100
    /// # Ok(()) }
    /// ```
    pub fn flush(&self) -> Result<(), JournalError> {
        self.wait_durable(self.last.load(Ordering::Acquire))
    }

    /// Commits what is pending, stops the writer and releases the journal's lock, so the
    /// file can be opened again at once. Appends after this are not stored (they are
    /// logged as errors). Dropping the journal does the same.
    pub fn close(&self) -> Result<(), JournalError> {
        if let Some(ended) = self.writer.close() {
            // `flock` locks belong to the open file description, which forked children
            // share until they exec: unlock it rather than wait for every copy to close.
            let _ = self.lock.unlock();
            if !ended {
                return Err(JournalError::Writer {
                    path: self.path.clone(),
                    message: "panicked".into(),
                    durable: self.progress.state.lock().durable,
                });
            }
        }
        let s = self.progress.state.lock();
        match &s.failed {
            Some(f) => Err(JournalError::Writer {
                path: self.path.clone(),
                message: format!("failed: {f}"),
                durable: s.durable,
            }),
            None => Ok(()),
        }
    }

    /// Adopts records another process appended to the file since this journal was opened
    /// (`muster approve` writing a gate decision while a run waits): commits what is
    /// pending, then moves the sequence counter and the durable watermark up to the file's
    /// last record, so that the next append neither overwrites nor waits for them.
    /// Returns the last sequence number. Call it only while this process appends nothing
    /// (a run waiting at a gate), since an append racing it could take a number the other
    /// process used.
    ///
    /// # Example
    /// ```
    /// use muster_sqlite::decide_gate;
    /// use muster_core::journal::{Event, Journal};
    /// use muster_sqlite::{Durability, SqliteJournal};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("j.db");
    /// let run = uuid::Uuid::now_v7();
    /// let waiting = SqliteJournal::open(&path, Durability::Relaxed)?;
    /// waiting.append(0, Event::GateWaiting { run, gate: "ok".into(), question: "?".into() });
    /// waiting.flush()?;
    /// decide_gate(&path, run, "ok", true, "", 1)?; // what `muster approve` does, elsewhere
    /// assert_eq!(waiting.catch_up()?, 2);
    /// assert_eq!(waiting.append(0, Event::Note { text: "going on".into() }), 3);
    /// assert_eq!(waiting.read_after(0).len(), 3);
    /// # Ok(()) }
    /// ```
    pub fn catch_up(&self) -> Result<u64, JournalError> {
        self.flush()?;
        let conn = open_read_only(&self.path)?;
        let max: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(|source| JournalError::Sqlite {
                path: self.path.clone(),
                context: "read the last sequence number".into(),
                source: Box::new(source),
            })?;
        let max = max.max(0) as u64;
        let mut s = self.progress.state.lock();
        if max > s.durable {
            s.durable = max;
            s.ahead.retain(|seq| *seq > max);
        }
        let (durable, stopped) = (s.durable, s.closed || s.failed.is_some());
        drop(s);
        self.progress.publish(durable, stopped);
        let before = self.last.fetch_max(max, Ordering::AcqRel);
        Ok(before.max(max))
    }

    /// Runs `f` with the reader connection once what the read `sees` is committed. It
    /// never asks the writer to commit early: a read of records waits for the group
    /// commit that takes the records it could see (within the commit window), so readers
    /// (followers, pages, the dashboard) cost the writer no commit of their own.
    fn reading<T>(
        &self,
        sees: Sees,
        f: impl FnOnce(&Connection) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        if let Sees::UpTo(seq) = sees {
            self.wait_for(seq, false)?;
        }
        let mut guard = self.reader.lock();
        let conn = match guard.take() {
            Some(c) => c,
            None => open_read_only(&self.path)?,
        };
        let out = f(&conn);
        *guard = Some(conn);
        out
    }

    /// What a read of every record up to the last appended must wait for.
    fn appended(&self) -> Sees {
        Sees::UpTo(self.last.load(Ordering::Acquire))
    }

    /// [`Journal::runs`], with its error: a page of the `runs` table, as committed. It
    /// neither waits for nor forces the writer: a run's row changes in the transaction of
    /// its records, and the runtime reports a run's start, gate or end only once that is
    /// committed, so a run a caller has been told of is listed as it was told.
    pub fn try_runs(&self, query: &RunQuery) -> Result<Vec<RunEntry>, JournalError> {
        self.reading(Sees::Committed, |c| {
            runs::page(c, query).map_err(sql_error(&self.path, "read the runs"))
        })
    }

    /// [`Journal::run_entry`], with its error: one row of the `runs` table, as committed
    /// (see [`SqliteJournal::try_runs`]).
    pub fn try_run_entry(&self, run: uuid::Uuid) -> Result<Option<RunEntry>, JournalError> {
        self.reading(Sees::Committed, |c| {
            runs::get(c, run).map_err(sql_error(&self.path, "read a run"))
        })
    }

    /// [`Journal::records_of`], with its error: the records whose `run` column is `id`,
    /// and those of the task `id`, every one appended before the call included.
    pub fn try_records_of(&self, id: uuid::Uuid) -> Result<Vec<Record>, JournalError> {
        self.reading(self.appended(), |c| runs::records_of(c, &self.path, id))
    }

    /// Compacts this journal while it is in use (a node's retention): see
    /// [`compact`](crate::compact) for what goes and what is kept. Its note is appended
    /// through this journal; free pages are returned to the file system when the file
    /// allows it incrementally (every file created since format 2), else reused by later
    /// records.
    ///
    /// # Example
    /// ```
    /// use muster_core::journal::{Event, Journal};
    /// use muster_sqlite::{Compaction, Durability, SqliteJournal};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let j = SqliteJournal::open(dir.path().join("j.db"), Durability::Relaxed)?;
    /// let run = uuid::Uuid::now_v7();
    /// j.append(1, Event::RunStarted { run, workflow: "w".into(), file: "w.toml".into(), input: serde_json::json!({}) });
    /// j.append(2, Event::RunEnded { run, status: "failed".into(), step: "s".into(), reason: None });
    /// j.append(3, Event::Note { text: "kept: the last record".into() });
    /// let c = j.compact(&Compaction { ended_before_ms: 10, archive: None }, 20)?;
    /// assert_eq!((c.runs, c.records, c.note_seq), (1, 2, 4));
    /// assert_eq!(j.read_after(0).len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn compact(
        &self,
        what: &crate::Compaction,
        now_ms: u64,
    ) -> Result<crate::Compacted, crate::CompactError> {
        self.flush()?;
        let sql = |context: &str| sql_error(&self.path, context);
        let mut conn = Connection::open(&self.path).map_err(sql("open"))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(sql("set busy timeout"))?;
        let append = |e: Event| -> Result<u64, JournalError> {
            let seq = self.append(now_ms, e);
            self.wait_durable(seq)?;
            Ok(seq)
        };
        crate::compact::compact_on(
            &mut conn,
            &self.path,
            what,
            now_ms,
            crate::compact::Appender::Journal(&append),
        )
    }

    /// Every record after `after`, read from the file once the records appended before
    /// the call are committed (records another process appended are read too).
    pub fn try_read_after(&self, after: u64) -> Result<Vec<Record>, JournalError> {
        self.try_read_batch(after, usize::MAX)
    }

    /// At most `max` records after `after`, read from the file once those of them
    /// appended before the call are committed: a follower reading a backlog already
    /// committed does not wait at all.
    pub fn try_read_batch(&self, after: u64, max: usize) -> Result<Vec<Record>, JournalError> {
        // Sequence numbers are gap-free: this read can see no record past `after + max`.
        let reach = u64::try_from(max).unwrap_or(u64::MAX);
        let upto = self
            .last
            .load(Ordering::Acquire)
            .min(after.saturating_add(reach));
        let sees = if upto > after {
            Sees::UpTo(upto)
        } else {
            // Nothing of this process's is past `after`: only another process's records
            // could be (`muster approve`), and those are committed.
            Sees::Committed
        };
        self.reading(sees, |c| read_records(c, &self.path, after, max))
    }
}

/// What a read must find committed before it reads the file.
#[derive(Debug, Clone, Copy)]
enum Sees {
    /// Nothing more: it answers from what is committed (the run index).
    Committed,
    /// Every record up to this sequence number (a read of records sees those appended
    /// before it).
    UpTo(u64),
}

impl Journal for SqliteJournal {
    fn append(&self, at_ms: u64, event: Event) -> u64 {
        match self.writer.inbox.append(&self.last, at_ms, event) {
            Ok(seq) => seq,
            Err(seq) => {
                tracing::error!(path = %self.path.display(), seq, "journal closed: event not stored");
                seq
            }
        }
    }

    fn append_group(&self, at_ms: u64, events: Vec<Event>) -> u64 {
        if events.is_empty() {
            return 0;
        }
        match self.writer.inbox.append_group(&self.last, at_ms, events) {
            Ok(seq) => seq,
            Err(seq) => {
                tracing::error!(path = %self.path.display(), seq, "journal closed: group not stored");
                seq
            }
        }
    }

    fn read_after(&self, after: u64) -> Vec<Record> {
        match self.try_read_after(after) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "journal read failed");
                Vec::new()
            }
        }
    }

    fn len(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    fn sync_point(&self, seq: u64) {
        if let Err(e) = self.wait_durable(seq) {
            tracing::error!(error = %e, seq, "waiting for the journal to write a record");
        }
    }

    fn watermark(&self) -> Option<watch::Receiver<Watermark>> {
        Some(self.progress.watermark.subscribe())
    }

    fn want(&self, seq: u64) {
        if self.progress.wanted.fetch_max(seq, Ordering::AcqRel) < seq {
            // A writer that stopped has nothing to commit; its waiters learn it from the
            // state. When nothing else commits, the caller commits the queue itself.
            if !self.writer.commit_here() {
                self.writer.inbox.want();
            }
        }
    }

    fn max_payload_bytes(&self) -> usize {
        self.config.max_payload_bytes
    }

    fn read_batch(&self, after: u64, max: usize) -> Vec<Record> {
        match self.try_read_batch(after, max) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "journal read failed");
                Vec::new()
            }
        }
    }

    fn write_stats(&self) -> Option<WriteStats> {
        Some(self.written.snapshot())
    }

    fn runs(&self, query: &RunQuery) -> Vec<RunEntry> {
        self.try_runs(query).unwrap_or_else(|e| {
            tracing::error!(error = %e, "journal read failed");
            Vec::new()
        })
    }

    fn run_entry(&self, run: uuid::Uuid) -> Option<RunEntry> {
        self.try_run_entry(run).unwrap_or_else(|e| {
            tracing::error!(error = %e, "journal read failed");
            None
        })
    }

    fn records_of(&self, id: uuid::Uuid) -> Vec<Record> {
        self.try_records_of(id).unwrap_or_else(|e| {
            tracing::error!(error = %e, "journal read failed");
            Vec::new()
        })
    }

    fn model_call_counts(
        &self,
        tasks: &[uuid::Uuid],
    ) -> std::collections::HashMap<(uuid::Uuid, u64), u32> {
        if tasks.is_empty() {
            return Default::default();
        }
        self.reading(self.appended(), |c| {
            runs::model_call_counts(c, &self.path, tasks)
        })
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "journal read failed");
            Default::default()
        })
    }

    fn indexed(&self) -> bool {
        true
    }
}

impl Drop for SqliteJournal {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the journal");
        }
    }
}
