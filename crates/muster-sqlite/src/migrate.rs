//! Migration of a journal file from an older format version to [`VERSION`], in place, in
//! one transaction, when a process opens it to write (the journal's open, `muster
//! approve`'s decision, a compaction); and, within version 3, the replacement of a
//! partial run index (what the first builds of version 3 made) by the full one.
//!
//! A migration rewrites every record: it says so in the log when it starts (a large
//! file takes a while) and when it ends, and empties the write-ahead log once committed,
//! so the file is not left beside a log as large as itself.
//!
//! It must not decide what the `runs` table holds (that is `runs`'s rebuild, with the
//! core's rule) nor create files (that is `file`).

use std::path::Path;
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, Transaction};

use crate::file::{EVENT_INDEXES, RUN_KINDS, SCHEMA_2, VERSION, sql_error, text_view, uuid_blob};
use muster_core::journal::JournalError;

/// Brings the journal open on `conn` to [`VERSION`] in one transaction (a crash leaves
/// it as it was): from version 1, fills the `run` column of every record and builds the
/// `runs` table by replaying the run records; from version 1 or 2, turns the ids of
/// `events` from text into 16-byte blobs and keeps only the indexes of version 3. Of a
/// current file it only replaces a partial `events_run` index by the full one (and
/// writes nothing when the index is full). Whatever it changed, the write-ahead log is
/// emptied after the commit. The caller holds the journal's lock, or writes only inside
/// this transaction (`muster approve`). Returns the version the file had.
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
            empty_the_log(conn, path);
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
    let started = Instant::now();
    // Cheap to know before the work starts: the file's size and its last sequence number
    // (the primary key's last entry; a count would read every row).
    let last_seq: i64 = tx
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
        .map_err(sql("read the last sequence number"))?;
    tracing::info!(
        path = %path.display(),
        from = found,
        to = VERSION,
        bytes = std::fs::metadata(path).map_or(0, |m| m.len()),
        last_seq,
        "migrating the journal in place: every record is rewritten in one transaction, which takes a while on a large file"
    );
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
    empty_the_log(conn, path);
    tracing::info!(
        path = %path.display(),
        from = found,
        to = VERSION,
        took_ms = started.elapsed().as_millis() as u64,
        "journal migrated"
    );
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

/// Copies what was just committed into the file and truncates the write-ahead log. A
/// reader of another process can keep part of the log in use: then the log is left as it
/// is (SQLite checkpoints it as the journal goes on), and the migration stands.
fn empty_the_log(conn: &Connection, path: &Path) {
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    }) {
        Ok((0, _)) => {}
        Ok((_, frames)) => tracing::warn!(
            path = %path.display(),
            frames,
            "the write-ahead log could not be emptied (another process reads the journal); it is checkpointed as the journal goes on"
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            error = %e,
            "the write-ahead log could not be emptied; it is checkpointed as the journal goes on"
        ),
    }
}
