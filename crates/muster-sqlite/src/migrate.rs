//! Migration of a journal file from an older format version to [`VERSION`], in place, in
//! one transaction, when a process opens it to write (the journal's open, `muster
//! approve`'s decision, a compaction).
//!
//! It must not decide what the `runs` table holds (that is `runs`'s rebuild, with the
//! core's rule) nor create files (that is `file`).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use crate::file::{RUN_KINDS, SCHEMA_2, VERSION, sql_error};
use muster_core::journal::JournalError;

/// Brings the journal open on `conn` to [`VERSION`] in one transaction (a crash leaves
/// it as it was): from version 1, fills the `run` column of every record and builds the
/// `runs` table by replaying the run records. Does nothing to a current file. The caller
/// holds the journal's lock, or writes only inside this transaction (`muster approve`).
/// Returns the version the file had.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<u32, JournalError> {
    let sql = |context: &str| sql_error(path, context);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql("begin the migration"))?;
    let version: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql("read the version"))?;
    let found = version
        .as_deref()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if found == VERSION {
        return Ok(found);
    }
    if found != 1 {
        return Err(JournalError::Version {
            path: path.to_path_buf(),
            found: version.unwrap_or_default(),
            expected: VERSION,
        });
    }
    tx.execute_batch(SCHEMA_2)
        .map_err(sql("add the run index (migrating from version 1)"))?;
    tx.execute(
        &format!(
            "UPDATE events SET run = CASE WHEN kind IN ({RUN_KINDS})
                 THEN json_extract(body, '$.run') ELSE correlation END"
        ),
        [],
    )
    .map_err(sql("fill the run column (migrating from version 1)"))?;
    crate::runs::rebuild(&tx, path)?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'version'",
        [VERSION.to_string()],
    )
    .map_err(sql("write the version (migrating from version 1)"))?;
    tx.commit().map_err(sql("commit the migration"))?;
    Ok(found)
}
