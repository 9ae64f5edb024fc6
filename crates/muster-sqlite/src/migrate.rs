//! Migration of a journal file from an older format version to [`VERSION`], in place, in
//! one transaction, when a process opens it to write (the journal's open, `muster
//! approve`'s decision, a compaction); and, within version 3, the replacement of a
//! partial run index (what the first builds of version 3 made) by the full one.
//!
//! It must not decide what the `runs` table holds (that is `runs`'s rebuild, with the
//! core's rule) nor create files (that is `file`).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction};

use crate::file::{EVENT_INDEXES, RUN_KINDS, SCHEMA_2, VERSION, sql_error, text_view, uuid_blob};
use muster_core::journal::JournalError;

/// Brings the journal open on `conn` to [`VERSION`] in one transaction (a crash leaves
/// it as it was): from version 1, fills the `run` column of every record and builds the
/// `runs` table by replaying the run records; from version 1 or 2, turns the ids of
/// `events` from text into 16-byte blobs and keeps only the indexes of version 3. Of a
/// current file it only replaces a partial `events_run` index by the full one (and
/// writes nothing when the index is full). The caller holds the journal's lock, or
/// writes only inside this transaction (`muster approve`). Returns the version the file
/// had.
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
        if full_run_index(&tx, path)? {
            tx.commit().map_err(sql("commit the run index"))?;
        }
        // Otherwise nothing was written: the transaction is rolled back as it is dropped.
        return Ok(found);
    }
    if !(1..VERSION).contains(&found) {
        return Err(JournalError::Version {
            path: path.to_path_buf(),
            found: version.unwrap_or_default(),
            expected: VERSION,
        });
    }
    let from = |what: &str| format!("{what} (migrating from version {found})");
    if found == 1 {
        tx.execute_batch(SCHEMA_2)
            .map_err(sql(&from("add the runs table")))?;
        tx.execute(
            &format!(
                "UPDATE events SET run = CASE WHEN kind IN ({RUN_KINDS})
                     THEN json_extract(body, '$.run') ELSE correlation END"
            ),
            [],
        )
        .map_err(sql(&from("fill the run column")))?;
    }
    // Version 3: ids as 16 bytes, two indexes. The old indexes go first, so the rewrite
    // of every row does not maintain them.
    tx.execute_batch(
        "DROP INDEX IF EXISTS events_task; DROP INDEX IF EXISTS events_correlation;
         DROP INDEX IF EXISTS events_kind; DROP INDEX IF EXISTS events_run;",
    )
    .map_err(sql(&from("drop the old indexes")))?;
    tx.execute(
        &format!(
            "UPDATE events SET task = {}, run = {}, correlation = {}",
            uuid_blob("task"),
            uuid_blob("run"),
            uuid_blob("correlation")
        ),
        [],
    )
    .map_err(sql(&from("store the ids as 16 bytes")))?;
    tx.execute_batch(&format!("{EVENT_INDEXES} {}", text_view()))
        .map_err(sql(&from("index the records")))?;
    if found == 1 {
        crate::runs::rebuild(&tx, path)?;
    }
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'version'",
        [VERSION.to_string()],
    )
    .map_err(sql(&from("write the version")))?;
    tx.commit().map_err(sql("commit the migration"))?;
    Ok(found)
}

/// Replaces the run index by the full one if it is partial (`WHERE run IS NOT NULL`, as
/// the first builds of version 3 made it) or missing, inside the caller's transaction;
/// returns whether it did. The compaction finds the records of no story through it.
fn full_run_index(tx: &Transaction<'_>, path: &Path) -> Result<bool, JournalError> {
    let sql = |context: &str| sql_error(path, context);
    let index: Option<Option<String>> = tx
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'events_run'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql("read the run index"))?;
    let full = index
        .flatten()
        .is_some_and(|s| !s.to_ascii_uppercase().contains(" WHERE "));
    if full {
        return Ok(false);
    }
    tracing::info!(
        path = %path.display(),
        "indexing every record by run (the run index covered only the records of a story)"
    );
    tx.execute_batch("DROP INDEX IF EXISTS events_run; CREATE INDEX events_run ON events(run);")
        .map_err(sql("index every record by run"))?;
    Ok(true)
}
