//! Retention: removing from a journal the records of work that ended before a cutoff —
//! runs that completed, failed or were cancelled, stories of bare tasks whose every task
//! ended, and records of no story (agents registering, restarts, notes) — after writing
//! them, when asked, to an archive (`.jsonl.zst`: one record per line, zstd-compressed,
//! closed by a line with their count and digest) that `muster inspect --archive` reads.
//!
//! It upholds: nothing running or waiting at a gate is removed, whatever its age; the
//! archive is complete and synced before anything is deleted; the journal's last record
//! is never removed, so sequence numbers never go back; a record saying what was removed
//! (counts, cutoff, archive and its digest) is appended in the same transaction. It must
//! not decide when to compact (the CLI and the node's retention setting do).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, TransactionBehavior, params};

use crate::file::{Probe, RUN_KINDS, lock, probe, sql_error, uuid_blob};
use crate::migrate::migrate;
use crate::read::{DecodeError, decode};
use muster_core::ids::Fnv1a;
use muster_core::journal::{Event, JournalError, Record, RunStatus};

/// What to compact.
///
/// # Example
/// ```
/// use muster_sqlite::Compaction;
///
/// let c = Compaction { ended_before_ms: 1_767_225_600_000, archive: None };
/// assert!(c.archive.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    /// Remove work that ended before this instant (Unix ms).
    pub ended_before_ms: u64,
    /// First write the removed records to this archive (`.jsonl.zst`).
    pub archive: Option<PathBuf>,
}

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    /// Runs removed.
    pub runs: u64,
    /// Stories of bare tasks removed (a correlation outside any run).
    pub stories: u64,
    /// Records removed.
    pub records: u64,
    /// Runs kept because they have not ended (running, or waiting at a gate).
    pub kept_unfinished: u64,
    /// The file's size before, bytes.
    pub bytes_before: u64,
    /// Its size after (space reclaimed), bytes.
    pub bytes_after: u64,
    /// The archive written, if any.
    pub archive: Option<PathBuf>,
    /// The digest of the removed records (FNV-1a 64 of their archive lines), hex.
    pub digest: String,
    /// The record appended to say what was removed.
    pub note_seq: u64,
}

/// Why a compaction or an archive read failed.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The archive could not be written or read.
    #[error("{}: {message}", path.display())]
    Archive {
        /// The archive file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn archive_error(path: &Path, message: impl std::fmt::Display) -> CompactError {
    CompactError::Archive {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Compacts the journal file at `path`, taking its lock (a node serving it holds the
/// lock: stop it, or set its retention instead). See the module's guarantees.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Journal};
/// use muster_sqlite::{compact, read_archive, Compaction, Durability, SqliteJournal};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("j.db");
/// let (done, open) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
/// {
///     let j = SqliteJournal::open(&path, Durability::Relaxed)?;
///     for run in [done, open] {
///         j.append(1, Event::RunStarted { run, workflow: "w".into(), file: "w.toml".into(), input: serde_json::json!({}) });
///     }
///     j.append(2, Event::RunEnded { run: done, status: "completed".into(), step: "s".into(), reason: None });
///     j.append(3, Event::Note { text: "the last record stays".into() });
/// }
/// let archive = dir.path().join("old.jsonl.zst");
/// let c = compact(&path, &Compaction { ended_before_ms: 10, archive: Some(archive.clone()) }, 20)?;
/// assert_eq!((c.runs, c.records, c.kept_unfinished), (1, 2, 1));
/// assert_eq!(read_archive(&archive)?.len(), 2);
/// let j = SqliteJournal::open(&path, Durability::Relaxed)?;
/// assert!(j.run_entry(done).is_none() && j.run_entry(open).is_some());
/// # Ok(()) }
/// ```
pub fn compact(path: &Path, what: &Compaction, now_ms: u64) -> Result<Compacted, CompactError> {
    if probe(path)? == Probe::Absent {
        return Err(JournalError::Missing {
            path: path.to_path_buf(),
        }
        .into());
    }
    let held = lock(path)?;
    let mut conn = Connection::open(path).map_err(sql_error(path, "open"))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql_error(path, "set busy timeout"))?;
    migrate(&mut conn, path)?;
    let out = compact_on(&mut conn, path, what, now_ms, Appender::Direct);
    let _ = held.unlock();
    out
}

/// How the compaction's note is appended.
pub(crate) enum Appender<'a> {
    /// Inserted in the deletion's transaction, and the file rewritten if it cannot return
    /// free pages incrementally: the caller has the journal to itself.
    Direct,
    /// Appended by the journal's own writer (it hands out the sequence numbers).
    Journal(&'a dyn Fn(Event) -> Result<u64, JournalError>),
}

/// Compacts through `conn` (the journal's own process: the writer thread may append
/// meanwhile; SQLite serialises the two). `vacuum`: rewrite the file when it cannot
/// return free pages incrementally (needs the journal to itself).
pub(crate) fn compact_on(
    conn: &mut Connection,
    path: &Path,
    what: &Compaction,
    now_ms: u64,
    appender: Appender<'_>,
) -> Result<Compacted, CompactError> {
    let sql = |context: &str| sql_error(path, context);
    let bytes_before = file_size(path);
    let cutoff = i64::try_from(what.ended_before_ms).unwrap_or(i64::MAX);
    // Which stories go: chosen and copied in one read transaction, deleted in a write
    // transaction that deletes only what was chosen (the writer appends meanwhile, and
    // never to an ended story).
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(sql("begin the compaction"))?;
    tx.execute_batch(DOOMED)
        .map_err(sql("make the compaction's scratch table"))?;
    let last: i64 = tx
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
        .map_err(sql("read the last sequence number"))?;
    tx.execute(&choose_runs(), [cutoff])
        .map_err(sql("choose the runs that ended before the cutoff"))?;
    tx.execute(&choose_stories(), [cutoff])
        .map_err(sql("choose the bare tasks that ended before the cutoff"))?;
    let (runs, stories): (i64, i64) = tx
        .query_row(
            "SELECT COALESCE(SUM(is_run), 0), COALESCE(SUM(1 - is_run), 0) FROM doomed",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql("count what goes"))?;
    let kept_unfinished: i64 = tx
        .query_row(&count_unfinished(), [], |r| r.get(0))
        .map_err(sql("count the unfinished runs"))?;
    // The archive first, complete and synced, then the deletion.
    let mut digest = Fnv1a::default();
    let mut records = 0u64;
    let mut archive = match &what.archive {
        Some(p) => Some(Archive::create(p)?),
        None => None,
    };
    {
        let mut stmt = tx.prepare(&read_chosen()).map_err(sql("read what goes"))?;
        let mut rows = stmt
            .query(params![last, cutoff])
            .map_err(sql("read what goes"))?;
        while let Some(row) = rows.next().map_err(sql("read what goes"))? {
            let r = decode(row, path).map_err(|e| match e {
                DecodeError::Sql(s) => CompactError::from(sql("read what goes")(s)),
                DecodeError::Journal(j) => j.into(),
            })?;
            let line = serde_json::to_string(&r).unwrap_or_default();
            digest.update(line.as_bytes());
            digest.update(b"\n");
            records += 1;
            if let Some(a) = archive.as_mut() {
                a.line(&line)?;
            }
        }
    }
    let digest = format!("{:016x}", digest.finish());
    if let Some(a) = archive {
        a.finish(records, &digest, what.ended_before_ms)?;
    }
    tx.commit().map_err(sql("end the compaction's read"))?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin the deletion"))?;
    let deleted = tx
        .execute(&delete_chosen(), params![last, cutoff])
        .map_err(sql("delete what goes"))?;
    tx.execute(DELETE_RUNS, [])
        .map_err(sql("delete the runs' rows"))?;
    let text = format!(
        "compacted: removed {deleted} records of {runs} runs and {stories} bare-task stories \
         that ended before {} (digest {digest}{})",
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(what.ended_before_ms)
        ),
        what.archive
            .as_ref()
            .map_or(String::new(), |p| format!(", archived in {}", p.display()))
    );
    let note = Event::Note { text };
    let note_seq = match appender {
        Appender::Direct => {
            let seq: i64 = tx
                .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM events", [], |r| {
                    r.get(0)
                })
                .map_err(sql("read the last sequence number"))?;
            tx.execute(
                "INSERT INTO events (seq, at_ms, kind, task, run, correlation, agent, epoch, body)
                 VALUES (?1, ?2, 'note', NULL, NULL, NULL, NULL, NULL, ?3)",
                params![
                    seq,
                    i64::try_from(now_ms).unwrap_or(i64::MAX),
                    serde_json::to_string(&note).unwrap_or_default()
                ],
            )
            .map_err(sql("append the compaction's note"))?;
            tx.commit().map_err(sql("commit the deletion"))?;
            seq.max(0) as u64
        }
        Appender::Journal(append) => {
            tx.commit().map_err(sql("commit the deletion"))?;
            append(note)?
        }
    };
    reclaim(conn, path, matches!(appender, Appender::Direct))?;
    Ok(Compacted {
        runs: runs.max(0) as u64,
        stories: stories.max(0) as u64,
        records: deleted as u64,
        kept_unfinished: kept_unfinished.max(0) as u64,
        bytes_before,
        bytes_after: file_size(path),
        archive: what.archive.clone(),
        digest,
        note_seq,
    })
}

/// The compaction's scratch table, made anew: the stories chosen to go, each named by its
/// 16 bytes as `events.run` holds it (`story`) and, for a run, by its text as `runs.run`
/// holds it (`run`), so that each table is searched through its own index, with no
/// function applied to its column.
pub(crate) const DOOMED: &str = "DROP TABLE IF EXISTS temp.doomed;
     CREATE TEMP TABLE doomed (story BLOB PRIMARY KEY, run TEXT, is_run INTEGER);";

/// The statuses of runs that have ended (`ended`) or not, as an SQL list: the core's
/// one definition ([`RunStatus::has_ended`]).
fn statuses(ended: bool) -> String {
    RunStatus::ALL
        .into_iter()
        .filter(|s| s.has_ended() == ended)
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Chooses the runs that ended before the cutoff (`?1`), through the status index.
pub(crate) fn choose_runs() -> String {
    format!(
        "INSERT OR IGNORE INTO doomed SELECT {}, run, 1 FROM runs
         WHERE status IN ({}) AND ended_ms < ?1",
        uuid_blob("run"),
        statuses(true)
    )
}

/// Chooses the stories outside any run that ended before the cutoff (`?1`): a story goes
/// when its last record is older than the cutoff and every task submitted in it has a
/// terminal record.
pub(crate) fn choose_stories() -> String {
    format!(
        "INSERT OR IGNORE INTO doomed
         SELECT run, NULL, 0 FROM events
         WHERE run IS NOT NULL AND run NOT IN (SELECT {run} FROM runs)
           AND kind NOT IN ({RUN_KINDS})
         GROUP BY run
         HAVING MAX(at_ms) < ?1
            AND COUNT(DISTINCT CASE WHEN kind = 'task_submitted' THEN task END)
             <= COUNT(DISTINCT CASE WHEN kind IN
                ('result_accepted', 'task_escalated', 'task_cancelled', 'task_reused')
                THEN task END)",
        run = uuid_blob("run")
    )
}

/// Counts the runs kept because they have not ended, through the status index (a
/// `NOT IN` of the ended statuses would read all of it).
pub(crate) fn count_unfinished() -> String {
    format!(
        "SELECT count(*) FROM runs WHERE status IN ({})",
        statuses(false)
    )
}

/// The records that go: the chosen stories' and those of no story older than the cutoff
/// (`?2`), before the last record (`?1`, never removed). Both are found through the run
/// index (`run IN ...` and `run IS NULL`, which a full index holds).
const CHOSEN: &str = "FROM events WHERE seq < ?1 AND (run IN (SELECT story FROM doomed)
                      OR (run IS NULL AND at_ms < ?2))";

/// Reads the records that go, in order (for the archive and the digest).
pub(crate) fn read_chosen() -> String {
    format!("SELECT seq, at_ms, body {CHOSEN} ORDER BY seq")
}

/// Deletes the records that go.
pub(crate) fn delete_chosen() -> String {
    format!("DELETE {CHOSEN}")
}

/// Deletes the chosen runs' rows of the `runs` table, through its primary key.
pub(crate) const DELETE_RUNS: &str =
    "DELETE FROM runs WHERE run IN (SELECT run FROM doomed WHERE is_run = 1)";

/// Returns free pages to the file system: incrementally where the file allows it (every
/// journal created since format 2), else by rewriting it (`VACUUM`, which also switches
/// it to incremental) when `vacuum`.
fn reclaim(conn: &Connection, path: &Path, vacuum: bool) -> Result<(), JournalError> {
    let sql = |context: &str| sql_error(path, context);
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .map_err(sql("read auto_vacuum"))?;
    if mode == 2 {
        // Each step frees pages; it must run to its end.
        let mut stmt = conn
            .prepare("PRAGMA incremental_vacuum")
            .map_err(sql("return free pages"))?;
        let mut rows = stmt.query([]).map_err(sql("return free pages"))?;
        while rows.next().map_err(sql("return free pages"))?.is_some() {}
    } else if vacuum {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            .map_err(sql("rewrite the file to return free pages"))?;
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(sql("checkpoint"))?;
    Ok(())
}

fn file_size(path: &Path) -> u64 {
    let wal = {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push("-wal");
        path.with_file_name(name)
    };
    std::fs::metadata(path).map_or(0, |m| m.len()) + std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// An archive being written: to a temporary name, renamed into place when complete.
struct Archive {
    path: PathBuf,
    tmp: PathBuf,
    out: zstd::stream::write::Encoder<'static, std::io::BufWriter<std::fs::File>>,
}

/// The last line of an archive.
#[derive(serde::Serialize, serde::Deserialize)]
struct End {
    archive_end: EndFields,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EndFields {
    records: u64,
    digest: String,
    ended_before_ms: u64,
}

impl Archive {
    fn create(path: &Path) -> Result<Archive, CompactError> {
        if path.exists() {
            return Err(archive_error(
                path,
                "exists already; name a new archive file (an archive is never overwritten)",
            ));
        }
        let mut tmp = path.as_os_str().to_os_string();
        tmp.push(".partial");
        let tmp = PathBuf::from(tmp);
        let f = std::fs::File::create(&tmp).map_err(|e| archive_error(&tmp, e))?;
        let out = zstd::stream::write::Encoder::new(std::io::BufWriter::new(f), 3)
            .map_err(|e| archive_error(&tmp, e))?;
        Ok(Archive {
            path: path.to_path_buf(),
            tmp,
            out,
        })
    }

    fn line(&mut self, line: &str) -> Result<(), CompactError> {
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| archive_error(&self.tmp, e))
    }

    fn finish(
        mut self,
        records: u64,
        digest: &str,
        ended_before_ms: u64,
    ) -> Result<(), CompactError> {
        let end = End {
            archive_end: EndFields {
                records,
                digest: digest.to_string(),
                ended_before_ms,
            },
        };
        let line = serde_json::to_string(&end).unwrap_or_default();
        self.line(&line)?;
        let buf = self.out.finish().map_err(|e| archive_error(&self.tmp, e))?;
        let f = buf
            .into_inner()
            .map_err(|e| archive_error(&self.tmp, e.error().to_string()))?;
        f.sync_all().map_err(|e| archive_error(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| archive_error(&self.path, e))?;
        Ok(())
    }
}

/// Reads an archive written by a compaction: every record, in order, after checking its
/// last line (the count and the digest of the records). A truncated, altered or foreign
/// file is an error naming the file and the line.
///
/// # Example
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let not_one = dir.path().join("x.jsonl.zst");
/// std::fs::write(&not_one, b"plain text")?;
/// assert!(muster_sqlite::read_archive(&not_one).is_err());
/// # Ok(()) }
/// ```
pub fn read_archive(path: impl AsRef<Path>) -> Result<Vec<Record>, CompactError> {
    let path = path.as_ref();
    let f = std::fs::File::open(path).map_err(|e| archive_error(path, e))?;
    let dec = zstd::stream::read::Decoder::new(f).map_err(|e| archive_error(path, e))?;
    let mut out = Vec::new();
    let mut digest = Fnv1a::default();
    let mut end = None;
    for (i, line) in std::io::BufReader::new(dec).lines().enumerate() {
        let line = line.map_err(|e| {
            archive_error(
                path,
                format!("line {}: not a zstd archive of JSON lines: {e}", i + 1),
            )
        })?;
        if end.is_some() {
            return Err(archive_error(
                path,
                format!("line {}: a line after the archive's end", i + 1),
            ));
        }
        if let Ok(e) = serde_json::from_str::<End>(&line) {
            end = Some(e.archive_end);
            continue;
        }
        let r: Record = serde_json::from_str(&line).map_err(|e| {
            archive_error(path, format!("line {}: not a journal record: {e}", i + 1))
        })?;
        digest.update(line.as_bytes());
        digest.update(b"\n");
        out.push(r);
    }
    let Some(end) = end else {
        return Err(archive_error(
            path,
            "the archive has no end line (it was cut short, or is not an archive of muster's)",
        ));
    };
    let got = format!("{:016x}", digest.finish());
    if end.records != out.len() as u64 || end.digest != got {
        return Err(archive_error(
            path,
            format!(
                "the archive says {} records with digest {}, it holds {} with digest {got}",
                end.records,
                end.digest,
                out.len()
            ),
        ));
    }
    Ok(out)
}
