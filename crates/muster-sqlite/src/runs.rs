//! The `runs` table: one row per workflow run ([`RunEntry`]), kept by the writer in the
//! same transaction as the run records it summarises (and by `muster approve`'s decision,
//! and rebuilt by the migration from version 1), and the indexed reads the journal
//! answers with it: a page of runs, one run, the records of one run or task.
//!
//! It must not decide what a run record means for the entry: that rule is the core's
//! [`RunEntry::apply`], shared with the scanning answers of every other journal.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use crate::file::{Probe, RUN_KINDS, open_read_only, probe, sql_error};
use crate::read::{decode, read_journal};
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

/// Writes what a run record changes in its run's row: the columns no index holds and,
/// when `status_changed`, the status. An `UPDATE` touches only the indexes of the columns
/// it sets, so most step records cost the row alone (an `INSERT OR REPLACE` rewrote the
/// row's entry in each of the table's four indexes).
fn change(conn: &Connection, e: &RunEntry, status_changed: bool) -> rusqlite::Result<()> {
    let last_seq = e.last_seq as i64;
    let ended_ms = e.ended_ms.map(|v| v as i64);
    let run = e.run.to_string();
    if status_changed {
        conn.prepare_cached(
            "UPDATE runs SET status = ?2, gate = ?3, ended_ms = ?4, last_seq = ?5 WHERE run = ?1",
        )?
        .execute(params![run, e.status.as_str(), e.gate, ended_ms, last_seq])?;
    } else {
        conn.prepare_cached(
            "UPDATE runs SET gate = ?2, ended_ms = ?3, last_seq = ?4 WHERE run = ?1",
        )?
        .execute(params![run, e.gate, ended_ms, last_seq])?;
    }
    Ok(())
}

/// Applies a run record to its run's row (inside the caller's transaction): a
/// `run_started` inserts the row, any other run record updates it ([`RunEntry::apply`]).
/// Other records, and records of a run without a row, change nothing.
pub(crate) fn apply(conn: &Connection, seq: u64, at_ms: u64, e: &Event) -> rusqlite::Result<()> {
    let Some(run) = e.run() else { return Ok(()) };
    match get(conn, run)? {
        Some(mut entry) => {
            let was = entry.status;
            if entry.apply(seq, at_ms, e) {
                change(conn, &entry, entry.status != was)?;
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

/// The runs `q` asks for, newest first: one statement on the `runs` table (its status and
/// workflow indexes), joined to each candidate's `run_started` record (by its sequence
/// number) only when the query filters on input fields.
pub(crate) fn page(conn: &Connection, q: &RunQuery) -> rusqlite::Result<Vec<RunEntry>> {
    let (sql, args) = page_sql(q);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), entry)?;
    let mut out = Vec::new();
    for e in rows {
        if let Some(e) = e? {
            out.push(e);
        }
    }
    Ok(out)
}

/// The statement [`page`] runs for `q`, and its parameters.
pub(crate) fn page_sql(q: &RunQuery) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value as Sql;
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let select = format!(
        "SELECT {}",
        COLUMNS
            .split(", ")
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The conditions on the `runs` table first (`sql` holds them), then the input's.
    let mut args: Vec<Sql> = vec![Sql::Integer(q.before.map_or(i64::MAX, clamp))];
    let mut sql = String::from(" WHERE r.started_seq < ?1");
    // Adds ` AND cond`, its value the next parameter (`{v}` in `cond`).
    fn and(sql: &mut String, args: &mut Vec<Sql>, cond: &str, v: Sql) {
        args.push(v);
        sql.push_str(" AND ");
        sql.push_str(&cond.replace("{v}", &format!("?{}", args.len())));
    }
    if let Some(s) = q.status {
        and(
            &mut sql,
            &mut args,
            "r.status = {v}",
            Sql::Text(s.as_str().into()),
        );
    }
    if let Some(w) = &q.workflow {
        and(
            &mut sql,
            &mut args,
            "r.workflow = {v}",
            Sql::Text(w.clone()),
        );
    }
    if let Some(t) = q.started_after {
        and(
            &mut sql,
            &mut args,
            "r.started_ms >= {v}",
            Sql::Integer(clamp(t)),
        );
    }
    if let Some(t) = q.started_before {
        and(
            &mut sql,
            &mut args,
            "r.started_ms < {v}",
            Sql::Integer(clamp(t)),
        );
    }
    let mut sql = match (q.input.is_empty(), q.scan) {
        (true, _) => format!("{select} FROM runs r{sql}"),
        // At most `scan` candidates, newest first, each joined to its `run_started`.
        (false, Some(scan)) => {
            args.push(Sql::Integer(i64::try_from(scan).unwrap_or(i64::MAX)));
            format!(
                "{select} FROM (SELECT * FROM runs r{sql} ORDER BY r.started_seq DESC LIMIT ?{}) r \
                 JOIN events e ON e.seq = r.started_seq WHERE 1",
                args.len()
            )
        }
        (false, None) => {
            format!("{select} FROM runs r JOIN events e ON e.seq = r.started_seq{sql}")
        }
    };
    for m in &q.input {
        // A JSON path of quoted keys (each key is letters, digits, `_` or `-`: nothing to
        // escape); a string field compares as its text, any other as its JSON text.
        let path = std::iter::once("$.input".to_string())
            .chain(m.path.iter().map(|k| format!("\"{k}\"")))
            .collect::<Vec<_>>()
            .join(".");
        args.push(Sql::Text(path));
        let p = args.len();
        and(
            &mut sql,
            &mut args,
            &format!(
                "(CASE json_type(e.body, ?{p}) WHEN 'text' THEN json_extract(e.body, ?{p}) \
                 ELSE e.body -> ?{p} END) = {{v}}"
            ),
            Sql::Text(m.value.clone()),
        );
    }
    args.push(Sql::Integer(i64::try_from(q.limit).unwrap_or(i64::MAX)));
    sql.push_str(&format!(
        " ORDER BY r.started_seq DESC LIMIT ?{}",
        args.len()
    ));
    (sql, args)
}

/// The records of a story (`?1`, 16 bytes): through the run index and the task index. A
/// recorded model call ([`Event::task_only`](muster_core::journal::Event::task_only)) is
/// one of its task's records, not of the run's (its body, prompts and all, is neither
/// read nor decoded for a run), whatever `run` its row carries.
pub(crate) const RECORDS_OF: &str = "SELECT seq, at_ms, body FROM events
    WHERE run = ?1 AND kind <> 'model_call'
    UNION SELECT seq, at_ms, body FROM events WHERE task = ?1
    ORDER BY seq";

/// How many `model_call` records each lease of task `?1` has: `(epoch, count)` rows,
/// counted on the task index without reading a body.
pub(crate) const MODEL_CALLS_OF: &str = "SELECT epoch, COUNT(*) FROM events
    WHERE task = ?1 AND kind = 'model_call' GROUP BY epoch";

/// [`MODEL_CALLS_OF`] for each of `tasks`, into `(task, epoch) → count`.
pub(crate) fn model_call_counts(
    conn: &Connection,
    path: &Path,
    tasks: &[Uuid],
) -> Result<HashMap<(Uuid, u64), u32>, JournalError> {
    let sql = |context: &str| sql_error(path, context);
    let mut stmt = conn
        .prepare_cached(MODEL_CALLS_OF)
        .map_err(sql("count a task's model calls"))?;
    let mut counts = HashMap::new();
    for task in tasks {
        let rows = stmt
            .query_map([task.as_bytes()], |r| {
                Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(sql("count a task's model calls"))?;
        for row in rows {
            let (epoch, n) = row.map_err(sql("count a task's model calls"))?;
            let epoch = epoch.and_then(|e| u64::try_from(e).ok()).unwrap_or(0);
            counts.insert((*task, epoch), u32::try_from(n).unwrap_or(u32::MAX));
        }
    }
    Ok(counts)
}

/// The records of the story of `id`: those whose `run` column is `id` (a run's own and
/// its tasks') and those of the task `id`, in order (ids are 16-byte blobs: version 3).
pub(crate) fn records_of(
    conn: &Connection,
    path: &Path,
    id: Uuid,
) -> Result<Vec<Record>, JournalError> {
    let sql = |context: &str| sql_error(path, context);
    let mut stmt = conn
        .prepare_cached(RECORDS_OF)
        .map_err(sql("read a run's records"))?;
    let mut rows = stmt
        .query([id.as_bytes()])
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
        Probe::Journal => records_of(&open_read_only(path)?, path, id),
    }
}
