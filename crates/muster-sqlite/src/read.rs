//! Reading records back from a journal file, through a read-only connection: for the
//! journal's own `read_after` (after a flush) and for tools that read a file another
//! process may be writing (`muster inspect`). It must not write.

use std::path::Path;

use rusqlite::Connection;

use crate::file::{Probe, open_read_only, probe};
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
