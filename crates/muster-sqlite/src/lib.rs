//! The durable journal: one SQLite file in WAL mode, written by one thread in group commits.
//!
//! Owns the on-disk format (tables `events` and `meta`) and the writer thread. It upholds
//! G5 after the process is gone (every event is a row that `muster inspect` and `sqlite3`
//! can query) and, with [`Durability::Sync`], that an acknowledged result is on disk. It
//! must not block the hot path: [`SqliteJournal::append`] assigns the sequence number from
//! an atomic counter and hands the record to the writer over a channel; the writer drains
//! whatever has arrived and inserts it in one transaction.
//!
//! ```text
//!  actors ── append(seq = counter+1) ──► channel ──► writer thread ── BEGIN; INSERT ×N; COMMIT
//!                                                          │
//!  wait_durable(seq) / flush() ◄── durable watermark ◄─────┘  (highest gap-free committed seq)
//! ```
//!
//! Opening never modifies a file that is not a muster journal: the file's header and its
//! tables are checked read-only before anything is created.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::watch;
use uuid::Uuid;

use muster_core::journal::write_stats::WriteCounters;
use muster_core::journal::{
    Event, Journal, JournalConfig, JournalError, Record, Watermark, WriteStats,
};

/// The value of `meta.format` in every muster journal.
pub const FORMAT: &str = "muster-journal";
/// The on-disk format version this build writes and reads (`meta.version`).
pub const VERSION: u32 = 1;

/// Most records inserted in one transaction.
const MAX_BATCH: usize = 8192;
/// How long a durability wait may take before it reports the writer stuck.
const DURABLE_WAIT: Duration = Duration::from_secs(60);
/// Commit attempts per batch before the writer gives the batch up and reports failure.
const COMMIT_TRIES: u32 = 3;
/// Task → correlation entries remembered by the writer; past this, it asks the database.
const CORRELATION_CACHE: usize = 100_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    task TEXT,
    run TEXT,
    correlation TEXT,
    agent TEXT,
    epoch INTEGER,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_task ON events(task);
CREATE INDEX IF NOT EXISTS events_correlation ON events(correlation);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind);
";

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

enum Msg {
    Append(u64, u64, Event),
    /// Someone waits for a record (the highest is in [`Progress::wanted`]): commit now.
    Want,
    Close,
}

/// The writer's progress, shared with waiters.
#[derive(Debug, Default)]
struct State {
    /// Every record up to here is committed.
    durable: u64,
    /// Committed records above `durable` (appends from several threads arrive out of order).
    ahead: BTreeSet<u64>,
    /// The first commit failure, if any.
    failed: Option<String>,
    /// The writer has stopped.
    closed: bool,
}

#[derive(Debug)]
struct Progress {
    state: Mutex<State>,
    changed: Condvar,
    /// The highest sequence number anyone has waited for.
    wanted: AtomicU64,
    /// The same progress for async waiters (the runtime's actors).
    watermark: watch::Sender<Watermark>,
}

impl Progress {
    fn new(durable: u64) -> Self {
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
    fn publish(&self, durable: u64, stopped: bool) {
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

/// A journal in one SQLite file (WAL mode), written by one thread in group commits.
///
/// `append` never waits on the disk; `flush`/`wait_durable` wait for the writer;
/// `read_after` flushes, then reads the file. Dropping it (or [`SqliteJournal::close`])
/// commits what is pending and stops the writer.
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
    tx: mpsc::Sender<Msg>,
    progress: Arc<Progress>,
    reader: Mutex<Option<Connection>>,
    writer: Mutex<Option<JoinHandle<()>>>,
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
        if probe(&path)? == Probe::Absent {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
        }
        // One writer per journal: the lock is taken before the file is created, recovered
        // or appended to, and the file is looked at again under it.
        let lock = lock(&path)?;
        if probe(&path)? == Probe::Absent {
            create(&path)?;
        }
        let sql = |context: &str| sql_error(&path, context);
        let conn = Connection::open(&path).map_err(sql("open"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql("set WAL mode"))?;
        let sync = match durability {
            Durability::Sync => "FULL",
            Durability::Relaxed => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(sql("set synchronous"))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(sql("set busy timeout"))?;
        let last: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(sql("read the last sequence number"))?;
        let last = last.max(0) as u64;
        let progress = Arc::new(Progress::new(last));
        let (tx, rx) = mpsc::channel();
        let written = Arc::new(WriteCounters::default());
        let writer = Writer {
            conn,
            rx,
            progress: progress.clone(),
            written: written.clone(),
            correlations: HashMap::new(),
            commit_delay: config.commit_delay,
            commit_window: config.commit_window,
        };
        let handle = std::thread::Builder::new()
            .name("muster-journal".into())
            .spawn(move || writer.run())
            .map_err(|source| JournalError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(SqliteJournal {
            path,
            durability,
            config,
            last: AtomicU64::new(last),
            tx,
            progress,
            reader: Mutex::new(None),
            writer: Mutex::new(Some(handle)),
            written,
            lock,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
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
        let deadline = std::time::Instant::now() + DURABLE_WAIT;
        self.want(seq);
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
        let handle = self.writer.lock().take();
        if let Some(h) = handle {
            let _ = self.tx.send(Msg::Close);
            let joined = h.join();
            // `flock` locks belong to the open file description, which forked children
            // share until they exec: unlock it rather than wait for every copy to close.
            let _ = self.lock.unlock();
            if joined.is_err() {
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

    /// Every record after `after`, read from the file once pending appends are committed.
    pub fn try_read_after(&self, after: u64) -> Result<Vec<Record>, JournalError> {
        self.try_read_batch(after, usize::MAX)
    }

    /// At most `max` records after `after`, read from the file once pending appends are
    /// committed.
    pub fn try_read_batch(&self, after: u64, max: usize) -> Result<Vec<Record>, JournalError> {
        self.flush()?;
        let mut guard = self.reader.lock();
        let conn = match guard.take() {
            Some(c) => c,
            None => open_read_only(&self.path)?,
        };
        let out = read_records(&conn, &self.path, after, max);
        *guard = Some(conn);
        out
    }
}

impl Journal for SqliteJournal {
    fn append(&self, at_ms: u64, event: Event) -> u64 {
        let seq = self.last.fetch_add(1, Ordering::AcqRel) + 1;
        if self.tx.send(Msg::Append(seq, at_ms, event)).is_err() {
            tracing::error!(path = %self.path.display(), seq, "journal closed: event not stored");
        }
        seq
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
            // state.
            let _ = self.tx.send(Msg::Want);
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
}

impl Drop for SqliteJournal {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the journal");
        }
    }
}

/// Reads every record after `after` from a journal file without writing to it (for
/// tools such as `muster inspect`, possibly while a runtime is writing it). A missing,
/// corrupt or foreign file is an error naming the path; nothing is created or changed.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Journal};
/// use muster_sqlite::read_journal;
/// use muster_sqlite::{Durability, SqliteJournal};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("j.db");
/// let j = SqliteJournal::open(&path, Durability::Relaxed)?;
/// j.append(0, Event::Note { text: "x".into() });
/// j.flush()?;
/// assert_eq!(read_journal(&path, 0)?.len(), 1);
/// assert!(read_journal(dir.path().join("nope.db"), 0).is_err());
/// # Ok(()) }
/// ```
pub fn read_journal(path: impl AsRef<Path>, after: u64) -> Result<Vec<Record>, JournalError> {
    let path = path.as_ref();
    if probe(path)? == Probe::Absent {
        return Err(JournalError::Missing {
            path: path.to_path_buf(),
        });
    }
    let conn = open_read_only(path)?;
    read_records(&conn, path, after, usize::MAX)
}

#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// No file, an empty file, or an empty SQLite database: a journal may be created.
    Absent,
    /// A muster journal of this version.
    Journal,
}

/// Checks, without writing, what is at `path`.
fn probe(path: &Path) -> Result<Probe, JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Probe::Absent),
        Err(e) => return Err(io(e)),
    };
    if meta.is_dir() {
        return Err(JournalError::NotSqlite {
            path: path.to_path_buf(),
            detail: "it is a directory".into(),
        });
    }
    if meta.len() == 0 {
        return Ok(Probe::Absent);
    }
    let mut header = [0u8; 16];
    let mut f = std::fs::File::open(path).map_err(io)?;
    let n = read_up_to(&mut f, &mut header).map_err(io)?;
    if n < 16 || &header != b"SQLite format 3\0" {
        return Err(JournalError::NotSqlite {
            path: path.to_path_buf(),
            detail: format!("{} bytes without the SQLite header", meta.len()),
        });
    }
    drop(f);
    recover_hot_journal(path)?;
    let conn = open_read_only(path)?;
    let not_sqlite = |e: rusqlite::Error| JournalError::NotSqlite {
        path: path.to_path_buf(),
        detail: format!("SQLite cannot read it: {e}"),
    };
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(not_sqlite)?;
    if tables.is_empty() {
        return Ok(Probe::Absent);
    }
    if !tables.iter().any(|t| t == "meta") {
        return Err(JournalError::Foreign {
            path: path.to_path_buf(),
            detail: format!("its tables: {}", tables.join(", ")),
        });
    }
    let get = |key: &str| -> Result<Option<String>, JournalError> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, Option<String>>(0)
        })
        .optional()
        .map(Option::flatten)
        .map_err(|e| JournalError::Foreign {
            path: path.to_path_buf(),
            detail: format!("its `meta` table is not muster's: {e}"),
        })
    };
    let format = get("format")?;
    if format.as_deref() != Some(FORMAT) {
        return Err(JournalError::Foreign {
            path: path.to_path_buf(),
            detail: format!(
                "meta.format is {}, expected `{FORMAT}`",
                format.map_or("absent".to_string(), |f| format!("`{f}`"))
            ),
        });
    }
    let version = get("version")?.unwrap_or_default();
    if version != VERSION.to_string() {
        return Err(JournalError::Version {
            path: path.to_path_buf(),
            found: version,
            expected: VERSION,
        });
    }
    if !tables.iter().any(|t| t == "events") {
        return Err(JournalError::Foreign {
            path: path.to_path_buf(),
            detail: "the muster marker is there but the `events` table is not".into(),
        });
    }
    Ok(Probe::Journal)
}

/// A rollback journal left beside a database by a process killed mid-transaction (a
/// "hot journal") makes read-only opens fail; a read-write open rolls it back, as SQLite
/// does for any connection that can write. (A muster journal runs in WAL mode and leaves
/// none; a file whose creation was interrupted by an older build could.)
fn recover_hot_journal(path: &Path) -> Result<(), JournalError> {
    let hot = sibling(path, "-journal", "");
    if std::fs::metadata(&hot).map_or(true, |m| m.len() == 0) {
        return Ok(());
    }
    let sql = |source| JournalError::Sqlite {
        path: path.to_path_buf(),
        context: "roll back the hot journal left by a killed process".into(),
        source: Box::new(source),
    };
    let conn = Connection::open(path).map_err(sql)?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(sql)?;
    Ok(())
}

/// Maps a SQLite error to one naming the journal file and what was being done.
fn sql_error(path: &Path, context: &str) -> impl FnOnce(rusqlite::Error) -> JournalError {
    let path = path.to_path_buf();
    let context = context.to_string();
    move |source| JournalError::Sqlite {
        path,
        context,
        source: Box::new(source),
    }
}

/// `path` with `suffix` appended to its file name, plus `extra`.
fn sibling(path: &Path, suffix: &str, extra: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    name.push(extra);
    path.with_file_name(name)
}

/// Takes the journal's lock file (`<journal>.lock`, next to it) for this process, writing
/// its pid there; fails naming the holder if another process has it. The kernel releases
/// it when the process ends, however it ends.
fn lock(path: &Path) -> Result<std::fs::File, JournalError> {
    use std::io::Write;
    let lock_path = sibling(path, ".lock", "");
    let io = |source| JournalError::Io {
        path: lock_path.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io)?;
    match f.try_lock() {
        Ok(()) => {
            f.set_len(0).map_err(io)?;
            write!(f, "{}", std::process::id()).map_err(io)?;
            Ok(f)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            Err(JournalError::Locked {
                path: path.to_path_buf(),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.into()
                },
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Creates a journal at `path` so that no crash point leaves it unreadable: the file is
/// made complete (WAL mode, tables, marker) under a temporary name, synced, and renamed
/// into place; a crash before the rename leaves only a temporary file, removed by the
/// next open. The caller holds the journal's lock.
fn create(path: &Path) -> Result<(), JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    remove_leftovers(path);
    let tmp = sibling(path, ".creating-", &std::process::id().to_string());
    let sql = |context: &str| sql_error(path, context);
    {
        let conn = Connection::open(&tmp).map_err(sql("create"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql("set WAL mode"))?;
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA}
             INSERT OR IGNORE INTO meta(key, value) VALUES ('format', '{FORMAT}');
             INSERT OR IGNORE INTO meta(key, value) VALUES ('version', '{VERSION}');
             COMMIT;"
        ))
        .map_err(sql("create the tables"))?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(sql("checkpoint"))?;
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename itself durable; a directory that cannot be opened for syncing
        // (some file systems) leaves it to the OS.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Removes temporary files of creations that a crash interrupted.
fn remove_leftovers(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.creating-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Why a gate decision was not recorded by [`decide_gate`].
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The gate was decided already; this decision stands.
    #[error("gate `{gate}` of run {run} is already decided: {} (journal seq {seq}{})", if *.approved { "approved" } else { "rejected" }, if .reason.is_empty() { String::new() } else { format!(", reason: {}", .reason) })]
    AlreadyDecided {
        /// The run.
        run: Uuid,
        /// The gate.
        gate: String,
        /// The decision that stands.
        approved: bool,
        /// Its reason.
        reason: String,
        /// Its record.
        seq: u64,
    },
    /// The journal has no `gate_waiting` for this gate of this run.
    #[error("run {run} does not wait at gate `{gate}`")]
    NotWaiting {
        /// The run.
        run: Uuid,
        /// The gate.
        gate: String,
    },
}

/// Records a decision at a gate where a run waits, as one compare-and-set transaction
/// on the journal file: it is appended only if no decision follows the gate's last
/// `gate_waiting`, so two deciders racing (two `muster approve` processes) cannot both
/// succeed; the loser is told the decision that stands. Returns the record's sequence
/// number. Meant for another process than the one running the workflow, which waits at
/// the gate and appends nothing meanwhile.
///
/// # Example
/// ```
/// use muster_sqlite::{decide_gate, DecideError};
/// use muster_core::journal::{Event, Journal};
/// use muster_sqlite::{Durability, SqliteJournal};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("j.db");
/// let run = uuid::Uuid::now_v7();
/// let j = SqliteJournal::open(&path, Durability::Relaxed)?;
/// j.append(0, Event::GateWaiting { run, gate: "ship".into(), question: "ship it?".into() });
/// j.flush()?;
/// assert_eq!(decide_gate(&path, run, "ship", true, "looks good", 1)?, 2);
/// let second = decide_gate(&path, run, "ship", false, "wait", 2).unwrap_err();
/// assert!(matches!(second, DecideError::AlreadyDecided { approved: true, .. }));
/// # Ok(()) }
/// ```
pub fn decide_gate(
    path: &Path,
    run: Uuid,
    gate: &str,
    approved: bool,
    reason: &str,
    at_ms: u64,
) -> Result<u64, DecideError> {
    if probe(path)? == Probe::Absent {
        return Err(JournalError::Missing {
            path: path.to_path_buf(),
        }
        .into());
    }
    let sql = |context: &str| sql_error(path, context);
    let mut conn = Connection::open(path).map_err(sql("open"))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(sql("set busy timeout"))?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin the decision"))?;
    let mut waiting = None;
    let mut standing = None;
    {
        let mut stmt = tx
            .prepare(
                "SELECT seq, body FROM events WHERE kind IN ('gate_waiting', 'gate_decided') ORDER BY seq",
            )
            .map_err(sql("read the gate's events"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(sql("read the gate's events"))?;
        for row in rows {
            let (seq, body) = row.map_err(sql("read the gate's events"))?;
            match serde_json::from_str::<Event>(&body) {
                Ok(Event::GateWaiting {
                    run: r, gate: g, ..
                }) if r == run && g == gate => {
                    waiting = Some(seq);
                    standing = None;
                }
                Ok(Event::GateDecided {
                    run: r,
                    gate: g,
                    approved,
                    reason,
                }) if r == run && g == gate && waiting.is_some() && standing.is_none() => {
                    standing = Some((approved, reason, seq as u64));
                }
                _ => {}
            }
        }
    }
    if let Some((approved, reason, seq)) = standing {
        return Err(DecideError::AlreadyDecided {
            run,
            gate: gate.into(),
            approved,
            reason,
            seq,
        });
    }
    if waiting.is_none() {
        return Err(DecideError::NotWaiting {
            run,
            gate: gate.into(),
        });
    }
    let last: i64 = tx
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
        .map_err(sql("read the last sequence number"))?;
    let seq = last.max(0) as u64 + 1;
    let event = Event::GateDecided {
        run,
        gate: gate.into(),
        approved,
        reason: reason.into(),
    };
    let body = serde_json::to_string(&event).unwrap_or_default();
    tx.execute(
        "INSERT INTO events (seq, at_ms, kind, task, run, correlation, agent, epoch, body)
         VALUES (?1, ?2, ?3, NULL, NULL, NULL, NULL, NULL, ?4)",
        params![seq as i64, at_ms as i64, event.kind(), body],
    )
    .map_err(sql("append the decision"))?;
    tx.commit().map_err(sql("commit the decision"))?;
    Ok(seq)
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn open_read_only(path: &Path) -> Result<Connection, JournalError> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| JournalError::Sqlite {
        path: path.to_path_buf(),
        context: "open read-only".into(),
        source: Box::new(source),
    })
}

fn read_records(
    conn: &Connection,
    path: &Path,
    after: u64,
    max: usize,
) -> Result<Vec<Record>, JournalError> {
    let sql = |source| JournalError::Sqlite {
        path: path.to_path_buf(),
        context: "read events".into(),
        source: Box::new(source),
    };
    let mut stmt = conn
        .prepare_cached("SELECT seq, at_ms, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
        .map_err(sql)?;
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    // `seq` is an SQLite integer (i64): an `after` past i64::MAX asks for nothing (cast as
    // it is, it would wrap to a negative number and ask for everything).
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map([after, max], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(sql)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, at_ms, body) = row.map_err(sql)?;
        let event = serde_json::from_str(&body).map_err(|e| JournalError::Foreign {
            path: path.to_path_buf(),
            detail: format!("event {seq} does not parse: {e}"),
        })?;
        out.push(Record {
            seq: seq as u64,
            at_ms: at_ms as u64,
            event,
        });
    }
    Ok(out)
}

/// One row, ready to insert.
struct Row {
    seq: u64,
    at_ms: u64,
    kind: &'static str,
    task: Option<Uuid>,
    correlation: Option<Uuid>,
    agent: Option<String>,
    epoch: Option<u64>,
    body: String,
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
        Row {
            seq,
            at_ms,
            kind: e.kind(),
            task,
            correlation,
            agent: e.agent().map(str::to_string),
            epoch: e.epoch(),
            body,
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
             VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, ?7, ?8)",
        )?;
        for r in rows {
            stmt.execute(params![
                r.seq as i64,
                r.at_ms as i64,
                r.kind,
                r.task.map(|t| t.to_string()),
                r.correlation.map(|c| c.to_string()),
                r.agent,
                r.epoch.map(|e| e as i64),
                r.body,
            ])?;
        }
    }
    tx.commit()
}
