//! A gate decision written by another process than the one running the workflow
//! (`muster approve`): one compare-and-set transaction on the journal file, so that two
//! deciders racing cannot both succeed.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior, params};
use uuid::Uuid;

use crate::file::{Probe, probe, sql_error};
use crate::migrate::migrate;
use muster_core::journal::{Event, JournalError};

/// A run's gate records (`?1`, the run's 16 bytes), through the run index.
pub(crate) const GATE_RECORDS: &str = "SELECT seq, body FROM events WHERE run = ?1
    AND kind IN ('gate_waiting', 'gate_decided') ORDER BY seq";

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
    // A journal of an older version gets its run index first (in a transaction of its
    // own, so a writer of this version sees a current file).
    migrate(&mut conn, path)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin the decision"))?;
    let mut waiting = None;
    let mut standing = None;
    {
        let mut stmt = tx
            .prepare(GATE_RECORDS)
            .map_err(sql("read the gate's events"))?;
        let rows = stmt
            .query_map([run.as_bytes()], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
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
         VALUES (?1, ?2, ?3, NULL, ?4, NULL, NULL, NULL, ?5)",
        params![seq as i64, at_ms as i64, event.kind(), run.as_bytes(), body],
    )
    .map_err(sql("append the decision"))?;
    crate::runs::apply(&tx, seq, at_ms, &event).map_err(sql("update the run's row"))?;
    tx.commit().map_err(sql("commit the decision"))?;
    Ok(seq)
}
