//! The `runs` table: one row per workflow run ([`RunEntry`]), kept by the writer in the
//! same transaction as the run records it summarises (and by `muster approve`'s decision,
//! and rebuilt by the migration from version 1), and the indexed reads the journal
//! answers with it: a page of runs, one run, the records of one run or task.
//!
//! It must not decide what a run record means for the entry: that rule is the core's
//! [`RunEntry::apply`], shared with the scanning answers of every other journal.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use crate::file::{sql_error, RUN_KINDS};
use crate::read::decode;
use muster_core::journal::{Event, JournalError, Record, RunEntry, RunQuery, RunStatus};

const COLUMNS: &str =
    "run, workflow, file, status, gate, started_seq, started_ms, ended_ms, last_seq";

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<RunEntry>> {
    let run: String = r.get(0)?;
    let status: String = r.get(3)?;
    let (Ok(run), Ok(status)) = (Uuid::parse_str(&run), status.parse::<RunStatus>()) else {
        return Ok(None);
    };
    Ok(Some(RunEntry {
        run,
        workflow: r.get(1)?,
        file: r.get(2)?,
        status,
        gate: r.get(4)?,
        started_seq: r.get::<_, i64>(5)?.max(0) as u64,
        started_ms: r.get::<_, i64>(6)?.max(0) as u64,
        ended_ms: r.get::<_, Option<i64>>(7)?.map(|v| v.max(0) as u64),
        last_seq: r.get::<_, i64>(8)?.max(0) as u64,
    }))
}

/// One run's row.
pub(crate) fn get(conn: &Connection, run: Uuid) -> rusqlite::Result<Option<RunEntry>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM runs WHERE run = ?1"))?
        .query_row([run.to_string()], entry)
        .optional()
        .map(Option::flatten)
}

fn put(conn: &Connection, e: &RunEntry) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO runs ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        e.run.to_string(),
        e.workflow,
        e.file,
        e.status.as_str(),
        e.gate,
        e.started_seq as i64,
        e.started_ms as i64,
        e.ended_ms.map(|v| v as i64),
        e.last_seq as i64,
    ])?;
    Ok(())
}

/// Applies a run record to its run's row (inside the caller's transaction): a
/// `run_started` inserts the row, any other run record updates it ([`RunEntry::apply`]).
/// Other records, and records of a run without a row, change nothing.
pub(crate) fn apply(conn: &Connection, seq: u64, at_ms: u64, e: &Event) -> rusqlite::Result<()> {
    let Some(run) = e.run() else { return Ok(()) };
    match get(conn, run)? {
        Some(mut entry) => {
            if entry.apply(seq, at_ms, e) {
                put(conn, &entry)?;
            }
        }
        None => {
            if let Some(entry) = RunEntry::start(seq, at_ms, e) {
                put(conn, &entry)?;
            }
        }
    }
    Ok(())
}

/// Rebuilds the `runs` table from the run records (the migration from version 1): one
/// pass in order, holding in memory only the runs that have not ended yet.
pub(crate) fn rebuild(conn: &Connection, path: &Path) -> Result<(), JournalError> {
    let sql = |context: &str| sql_error(path, context);
    conn.execute("DELETE FROM runs", [])
        .map_err(sql("clear the runs table"))?;
    let mut stmt = conn
        .prepare(&format!(
            "SELECT seq, at_ms, body FROM events WHERE kind IN ({RUN_KINDS}) ORDER BY seq"
        ))
        .map_err(sql("read the run records"))?;
    let mut rows = stmt.query([]).map_err(sql("read the run records"))?;
    let mut open: HashMap<Uuid, RunEntry> = HashMap::new();
    while let Some(row) = rows.next().map_err(sql("read the run records"))? {
        let r = decode(row, path).map_err(|e| match e {
            DecodeError::Sql(s) => sql("read the run records")(s),
            DecodeError::Journal(j) => j,
        })?;
        let Some(run) = r.event.run() else { continue };
        match open.get_mut(&run) {
            Some(e) => {
                e.apply(r.seq, r.at_ms, &r.event);
                if e.status.has_ended() {
                    put(conn, e).map_err(sql("write a run's row"))?;
                    open.remove(&run);
                }
            }
            None => {
                if let Some(e) = RunEntry::start(r.seq, r.at_ms, &r.event) {
                    // A second `run_started` of a run already written keeps the first.
                    if get(conn, run).map_err(sql("read a run's row"))?.is_none() {
                        open.insert(run, e);
                    }
                }
            }
        }
    }
    for e in open.values() {
        put(conn, e).map_err(sql("write a run's row"))?;
    }
    Ok(())
}

pub(crate) use crate::read::DecodeError;

/// The runs `q` asks for, newest first.
pub(crate) fn page(conn: &Connection, q: &RunQuery) -> rusqlite::Result<Vec<RunEntry>> {
    let before = q
        .before
        .map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    let mut push = |rows: rusqlite::MappedRows<'_, _>| -> rusqlite::Result<()> {
        for e in rows {
            if let Some(e) = e? {
                out.push(e);
            }
        }
        Ok(())
    };
    match (&q.status, &q.workflow) {
        (Some(s), Some(w)) => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM runs WHERE status = ?1 AND workflow = ?2 AND started_seq < ?3
                 ORDER BY started_seq DESC LIMIT ?4"
            ))?;
            push(stmt.query_map(params![s.as_str(), w, before, limit], entry)?)?;
        }
        (Some(s), None) => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM runs WHERE status = ?1 AND started_seq < ?2
                 ORDER BY started_seq DESC LIMIT ?3"
            ))?;
            push(stmt.query_map(params![s.as_str(), before, limit], entry)?)?;
        }
        (None, Some(w)) => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM runs WHERE workflow = ?1 AND started_seq < ?2
                 ORDER BY started_seq DESC LIMIT ?3"
            ))?;
            push(stmt.query_map(params![w, before, limit], entry)?)?;
        }
        (None, None) => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM runs WHERE started_seq < ?1
                 ORDER BY started_seq DESC LIMIT ?2"
            ))?;
            push(stmt.query_map(params![before, limit], entry)?)?;
        }
    }
    Ok(out)
}

/// The records of the story of `id`: those whose `run` column is `id` (a run's own and
/// its tasks') and those of the task `id`, in order.
pub(crate) fn records_of(
    conn: &Connection,
    path: &Path,
    id: Uuid,
) -> Result<Vec<Record>, JournalError> {
    let sql = |context: &str| sql_error(path, context);
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, at_ms, body FROM events WHERE run = ?1
             UNION SELECT seq, at_ms, body FROM events WHERE task = ?1
             ORDER BY seq",
        )
        .map_err(sql("read a run's records"))?;
    let mut rows = stmt
        .query([id.to_string()])
        .map_err(sql("read a run's records"))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql("read a run's records"))? {
        out.push(decode(row, path).map_err(|e| match e {
            DecodeError::Sql(s) => sql("read a run's records")(s),
            DecodeError::Journal(j) => j,
        })?);
    }
    Ok(out)
}
