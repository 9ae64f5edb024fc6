//! Opening a journal file to write brings its schema to this build's, within format 3:
//! a file whose run index was made partial (`WHERE run IS NOT NULL`, as builds before
//! this one made it) gets the full index the compaction reads through; a read-only open
//! changes nothing.

use std::path::Path;

use muster_core::journal::{Event, Journal};
use rusqlite::Connection;

use crate::{Durability, SqliteJournal};

/// The `CREATE INDEX` statement of `events_run`, as `sqlite_master` keeps it.
fn run_index(path: &Path) -> String {
    Connection::open(path)
        .expect("open")
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'events_run'",
            [],
            |r| r.get(0),
        )
        .expect("the run index")
}

#[test]
fn a_partial_run_index_is_made_full_when_the_file_is_opened_to_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let run = uuid::Uuid::now_v7();
    {
        let j = SqliteJournal::open(&path, Durability::Relaxed).expect("create");
        j.append(
            1,
            Event::GateWaiting {
                run,
                gate: "g".into(),
                question: "?".into(),
            },
        );
        j.append(
            2,
            Event::Note {
                text: "of no story".into(),
            },
        );
    }
    Connection::open(&path)
        .expect("open")
        .execute_batch(
            "DROP INDEX events_run;
             CREATE INDEX events_run ON events(run) WHERE run IS NOT NULL;",
        )
        .expect("make the run index partial, as earlier builds did");
    let partial = run_index(&path);
    assert!(partial.contains("WHERE"), "{partial}");
    // Read-only opens leave the file as it is.
    assert_eq!(crate::read_journal(&path, 0).expect("read").len(), 2);
    assert_eq!(crate::read_records_of(&path, run).expect("read").len(), 1);
    assert_eq!(run_index(&path), partial, "a reader changed the schema");
    // Opening to write makes it full, and every read still answers.
    let j = SqliteJournal::open(&path, Durability::Relaxed).expect("open to write");
    let full = run_index(&path);
    assert!(!full.contains("WHERE"), "still partial: {full}");
    assert_eq!(j.records_of(run).len(), 1);
    assert_eq!(j.read_after(0).len(), 2);
}
