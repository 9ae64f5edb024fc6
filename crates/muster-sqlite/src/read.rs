//! Reading records back from a journal file, through a read-only connection: for the
//! journal's own `read_after` (after a flush) and for tools that read a file another
//! process may be writing (`muster inspect`). It must not write.

use std::path::Path;

use rusqlite::Connection;

use crate::file::{open_read_only, probe, Probe};
use muster_core::journal::{JournalError, Record};

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

/// The runs of a journal file whose id starts with `prefix` (at most `max`), read without
/// writing: from the `runs` index, or by a scan of a version-1 file.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Journal};
/// use muster_sqlite::{find_runs, Durability, SqliteJournal};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("j.db");
/// let run = uuid::Uuid::now_v7();
/// let j = SqliteJournal::open(&path, Durability::Relaxed)?;
/// j.append(0, Event::RunStarted { run, workflow: "w".into(), file: "w.toml".into(), input: serde_json::json!({}) });
/// j.flush()?;
/// assert_eq!(find_runs(&path, &run.to_string()[..8], 10)?, vec![run]);
/// assert!(find_runs(&path, "ffffffff", 10)?.is_empty());
/// # Ok(()) }
/// ```
pub fn find_runs(
    path: impl AsRef<Path>,
    prefix: &str,
    max: usize,
) -> Result<Vec<uuid::Uuid>, JournalError> {
    let path = path.as_ref();
    let prefix = prefix.trim().to_ascii_lowercase();
    match probe(path)? {
        Probe::Absent => Err(JournalError::Missing {
            path: path.to_path_buf(),
        }),
        Probe::Older(_) => Ok(
            muster_core::journal::runs::scan_runs(&read_journal(path, 0)?)
                .into_iter()
                .map(|e| e.run)
                .filter(|r| r.to_string().starts_with(&prefix))
                .take(max)
                .collect(),
        ),
        Probe::Journal => {
            let conn = open_read_only(path)?;
            // Hex digits and dashes only: anything else matches nothing (and no `LIKE`
            // wildcard can come from the input).
            if !prefix.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                return Ok(Vec::new());
            }
            let mut stmt = conn
                .prepare("SELECT run FROM runs WHERE run >= ?1 AND run < ?2 ORDER BY run LIMIT ?3")
                .map_err(crate::file::sql_error(path, "find runs"))?;
            let upper = format!("{prefix}\u{7f}");
            let rows = stmt
                .query_map(
                    rusqlite::params![prefix, upper, i64::try_from(max).unwrap_or(i64::MAX)],
                    |r| r.get::<_, String>(0),
                )
                .map_err(crate::file::sql_error(path, "find runs"))?;
            let mut out = Vec::new();
            for r in rows {
                let r = r.map_err(crate::file::sql_error(path, "find runs"))?;
                if let Ok(id) = uuid::Uuid::parse_str(&r) {
                    out.push(id);
                }
            }
            Ok(out)
        }
    }
}

/// The records of the story of `id` (a run's own and its tasks', or a task's) in a
/// journal file, read without writing: through the run index, or by a scan of a
/// version-1 file.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Journal};
/// use muster_sqlite::{read_records_of, Durability, SqliteJournal};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("j.db");
/// let run = uuid::Uuid::now_v7();
/// let j = SqliteJournal::open(&path, Durability::Relaxed)?;
/// j.append(0, Event::Note { text: "not the run's".into() });
/// j.append(0, Event::GateWaiting { run, gate: "g".into(), question: "?".into() });
/// j.flush()?;
/// assert_eq!(read_records_of(&path, run)?.len(), 1);
/// # Ok(()) }
/// ```
pub fn read_records_of(
    path: impl AsRef<Path>,
    id: uuid::Uuid,
) -> Result<Vec<Record>, JournalError> {
    let path = path.as_ref();
    match probe(path)? {
        Probe::Absent => Err(JournalError::Missing {
            path: path.to_path_buf(),
        }),
        Probe::Older(_) => Ok(muster_core::journal::runs::scan_records_of(
            &read_journal(path, 0)?,
            id,
        )),
        Probe::Journal => crate::runs::records_of(&open_read_only(path)?, path, id),
    }
}

/// At most `max` records after `after`, in order.
pub(crate) fn read_records(
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
    let mut rows = stmt.query([after, max]).map_err(sql)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql)? {
        out.push(decode(row, path).map_err(|e| match e {
            DecodeError::Sql(s) => sql(s),
            DecodeError::Journal(j) => j,
        })?);
    }
    Ok(out)
}

/// Why a row could not be read as a record.
pub(crate) enum DecodeError {
    /// SQLite could not read a column.
    Sql(rusqlite::Error),
    /// The body does not parse (named by its sequence number).
    Journal(JournalError),
}

/// A `(seq, at_ms, body)` row as a record.
pub(crate) fn decode(row: &rusqlite::Row<'_>, path: &Path) -> Result<Record, DecodeError> {
    let seq: i64 = row.get(0).map_err(DecodeError::Sql)?;
    let at_ms: i64 = row.get(1).map_err(DecodeError::Sql)?;
    let body: String = row.get(2).map_err(DecodeError::Sql)?;
    let event = serde_json::from_str(&body).map_err(|e| {
        DecodeError::Journal(JournalError::Foreign {
            path: path.to_path_buf(),
            detail: format!("event {seq} does not parse: {e}"),
        })
    })?;
    // Numbers are read as they were written (an `INTEGER` holds an i64; muster writes
    // only non-negative ones).
    Ok(Record {
        seq: seq as u64,
        at_ms: at_ms as u64,
        event,
    })
}
