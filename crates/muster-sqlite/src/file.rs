//! The journal file itself: what is at a path (probed read-only, so a file that is not
//! a muster journal is never changed), the lock that makes one process its writer, the
//! crash-safe creation of a new file, and the roll-back of a hot journal a killed process
//! left behind. Owns the on-disk format (tables `events`, `runs` and `meta`, [`FORMAT`],
//! [`VERSION`]) and its migration from older versions, in place, on open.
//!
//! It must not append records: the writer thread (`writer.rs`) does, and `muster approve`'s
//! one compare-and-set append is `gate.rs`'s.

use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use muster_core::journal::JournalError;

/// The value of `meta.format` in every muster journal.
pub const FORMAT: &str = "muster-journal";
/// The on-disk format version this build writes (`meta.version`). It reads every
/// version up to this one, migrating an older file in place when it opens it to write:
/// - 1: `events` and `meta`; the `run` column empty.
/// - 2: the `run` column filled (a run record's run, a task record's correlation) and
///   indexed; the `runs` table, one row per workflow run, kept in the same transaction as
///   the records it summarises.
/// - 3: the ids in `events` (`task`, `run`, `correlation`) are 16-byte blobs instead of
///   36-character text, and only the two indexes a reader uses remain (`events_task`,
///   `events_run`; no index on `kind` or `correlation`), so a record costs its row and
///   two small index entries; the view `events_text` shows the ids as text for `sqlite3`.
///   `events_run` covers every record (the first builds of version 3 left out the records
///   of no story, so the compaction could not find those through it): opening a file to
///   write replaces such an index.
pub const VERSION: u32 = 3;

/// The tables of a new journal (version 3). The ids in `events` are 16-byte blobs
/// (`Uuid::as_bytes`): a row and its index entries are half the size they were as text.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    task BLOB,
    run BLOB,
    correlation BLOB,
    agent TEXT,
    epoch INTEGER,
    body TEXT NOT NULL
);
";

/// The `runs` table (version 2 on).
pub(crate) const SCHEMA_2: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    file TEXT NOT NULL,
    status TEXT NOT NULL,
    gate TEXT,
    started_seq INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    last_seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_seq);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, started_seq);
CREATE INDEX IF NOT EXISTS runs_workflow ON runs(workflow, started_seq);
";

/// The indexes of `events` (version 3), each one a reader uses: a task's records (a
/// task's story, the writer's correlation look-up; records of no task have no entry) and
/// a story's records (a run's records, its gate, compaction). `events_run` is full: the
/// compaction finds the records of no story (`run IS NULL`) through it too, where a
/// partial index (`WHERE run IS NOT NULL`) left it to read every record, holding the
/// write lock.
pub(crate) const EVENT_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS events_task ON events(task) WHERE task IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_run ON events(run);
";

/// `events` with its ids as text (`0190f3c2-...`), for reading with `sqlite3`.
pub(crate) const TEXT_VIEW: &str = "
CREATE VIEW IF NOT EXISTS events_text AS SELECT seq, at_ms, kind,
    uuid_text(task) AS task, uuid_text(run) AS run, uuid_text(correlation) AS correlation,
    agent, epoch, body FROM events;
";

/// SQL turning a 16-byte id in column `c` into its text form (a text value is left as
/// it is); `uuid_text(c)` in [`TEXT_VIEW`] stands for it.
fn uuid_text(c: &str) -> String {
    let part = |from: u32, len: u32| format!("substr(hex({c}), {from}, {len})");
    format!(
        "CASE WHEN typeof({c}) = 'blob' AND length({c}) = 16 THEN lower({} || '-' || {} || '-' || {} || '-' || {} || '-' || {}) ELSE {c} END",
        part(1, 8),
        part(9, 4),
        part(13, 4),
        part(17, 4),
        part(21, 12)
    )
}

/// [`TEXT_VIEW`] as SQL.
pub(crate) fn text_view() -> String {
    let mut sql = TEXT_VIEW.to_string();
    for c in ["task", "run", "correlation"] {
        sql = sql.replace(&format!("uuid_text({c})"), &uuid_text(c));
    }
    sql
}

/// SQL for the 16 bytes of the id in text column `c` (`0190f3c2-...`); a value that is
/// not an id's text (already a blob, or not hex) is left as it is.
pub(crate) fn uuid_blob(c: &str) -> String {
    format!(
        "CASE WHEN typeof({c}) = 'text' THEN COALESCE(unhex(replace({c}, '-', '')), {c}) ELSE {c} END"
    )
}

/// The kinds of the run records (their `run` is in the body).
pub(crate) const RUN_KINDS: &str = "'run_started', 'step_entered', 'step_completed', 'step_failed', 'gate_waiting', 'gate_decided', 'run_ended', 'retry_started', 'run_retried'";

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// No file, an empty file, or an empty SQLite database: a journal may be created.
    Absent,
    /// A muster journal of this version.
    Journal,
    /// A muster journal of an older version this build migrates when it writes.
    Older(u32),
}

/// Checks, without writing, what is at `path`.
pub(crate) fn probe(path: &Path) -> Result<Probe, JournalError> {
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
    let found = match version.trim().parse::<u32>() {
        Ok(v) if (1..=VERSION).contains(&v) => v,
        _ => {
            return Err(JournalError::Version {
                path: path.to_path_buf(),
                found: version,
                expected: VERSION,
            });
        }
    };
    if !tables.iter().any(|t| t == "events") {
        return Err(JournalError::Foreign {
            path: path.to_path_buf(),
            detail: "the muster marker is there but the `events` table is not".into(),
        });
    }
    Ok(if found == VERSION {
        Probe::Journal
    } else {
        Probe::Older(found)
    })
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
pub(crate) fn sql_error(
    path: &Path,
    context: &str,
) -> impl FnOnce(rusqlite::Error) -> JournalError + use<> {
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
pub(crate) fn lock(path: &Path) -> Result<std::fs::File, JournalError> {
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
pub(crate) fn create(path: &Path) -> Result<(), JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    remove_leftovers(path);
    let tmp = sibling(path, ".creating-", &std::process::id().to_string());
    let sql = |context: &str| sql_error(path, context);
    {
        let conn = Connection::open(&tmp).map_err(sql("create"))?;
        // Before the first table: compaction can then return free pages as it goes.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(sql("set incremental vacuum"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql("set WAL mode"))?;
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA} {SCHEMA_2} {EVENT_INDEXES} {view}
             INSERT OR IGNORE INTO meta(key, value) VALUES ('format', '{FORMAT}');
             INSERT OR IGNORE INTO meta(key, value) VALUES ('version', '{VERSION}');
             COMMIT;",
            view = text_view()
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

/// Reads up to `buf.len()` bytes, fewer only at the end of the file.
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

/// A read-only connection to the journal at `path`.
pub(crate) fn open_read_only(path: &Path) -> Result<Connection, JournalError> {
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
