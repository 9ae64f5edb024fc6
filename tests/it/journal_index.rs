//! The SQLite journal is indexed by run, and its index never says what its records do not:
//! on a journal of a few hundred simulated code-review runs (failures, gates, restarts),
//! the `runs` table and the per-run reads answer exactly what a scan of every record
//! answers; a version-1 journal (no index) is migrated in place on open with the same
//! answers; `muster approve` on a version-1 file migrates it too; a journal from a newer
//! muster is refused naming both versions, unchanged.

use muster::journal::runs::{InputMatch, scan_records_of, scan_runs};
use muster::journal::{Durability, Journal, JournalError, RunQuery, RunStatus, SqliteJournal};
use rusqlite::Connection;

use crate::support::common::muster_within;

/// A journal of `tasks` simulated runs of the code-review workflow with heavy faults
/// (most wait at the human gate, some completed or failed), made by `muster sim`.
fn simulated(dir: &std::path::Path, tasks: u32) -> std::path::PathBuf {
    let path = dir.join("sim.db");
    let out = muster_within(
        120,
        &[
            "sim",
            "examples/scenarios/code-review-heavy-faults.toml",
            "--tasks",
            &tasks.to_string(),
            "--journal",
            path.to_str().expect("a UTF-8 temp path"),
        ],
        std::path::Path::new("."),
    );
    assert!(
        out.status.success(),
        "muster sim failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// Turns a current journal into what version 1 wrote: ids as text, its three indexes, no
/// `runs` table, no run index, the `run` column empty.
fn make_version_1(path: &std::path::Path) {
    let c = Connection::open(path).expect("open");
    c.execute_batch(
        "UPDATE events SET
             task = (SELECT t.task FROM events_text t WHERE t.seq = events.seq),
             correlation = (SELECT t.correlation FROM events_text t WHERE t.seq = events.seq),
             run = NULL;
         DROP VIEW events_text; DROP TABLE runs; DROP INDEX events_run; DROP INDEX events_task;
         CREATE INDEX events_task ON events(task);
         CREATE INDEX events_correlation ON events(correlation);
         CREATE INDEX events_kind ON events(kind);
         UPDATE meta SET value = '1' WHERE key = 'version';",
    )
    .expect("downgrade to version 1");
    let text: i64 = c
        .query_row(
            "SELECT count(*) FROM events WHERE typeof(task) = 'text'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert!(text > 0, "version 1 wrote ids as text");
}

/// How many ids in `events` are not 16-byte blobs (what version 3 writes).
fn ids_not_blobs(path: &std::path::Path) -> i64 {
    let c = Connection::open(path).expect("open");
    c.query_row(
        "SELECT count(*) FROM events WHERE
             (task IS NOT NULL AND (typeof(task) != 'blob' OR length(task) != 16))
          OR (run IS NOT NULL AND (typeof(run) != 'blob' OR length(run) != 16))
          OR (correlation IS NOT NULL AND (typeof(correlation) != 'blob' OR length(correlation) != 16))",
        [],
        |r| r.get(0),
    )
    .expect("count")
}

fn all(status: Option<RunStatus>) -> RunQuery {
    RunQuery {
        status,
        limit: usize::MAX,
        ..RunQuery::default()
    }
}

/// Every answer of the index equals the scan's.
fn index_agrees_with_a_scan(j: &SqliteJournal) {
    let records = j.read_after(0);
    let mut scanned = scan_runs(&records);
    scanned.reverse();
    assert!(
        scanned.len() >= 100,
        "the simulation made {} runs",
        scanned.len()
    );
    assert_eq!(
        j.runs(&all(None)),
        scanned,
        "the runs table and a scan differ"
    );
    for status in RunStatus::ALL {
        let want: Vec<_> = scanned
            .iter()
            .filter(|e| e.status == status)
            .cloned()
            .collect();
        assert_eq!(j.runs(&all(Some(status))), want, "runs {status}");
    }
    assert!(
        scanned.iter().any(|e| e.status == RunStatus::Waiting),
        "the heavy-faults scenario leaves runs at the gate"
    );
    // Paging newest first with a cursor visits every run once.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = j.runs(&RunQuery {
            before,
            limit: 37,
            ..RunQuery::default()
        });
        let Some(last) = page.last() else { break };
        before = Some(last.started_seq);
        paged.extend(page);
    }
    assert_eq!(paged, scanned);
    // The start-time and input filters: the index's answers (SQL on the `runs` table and
    // each run's `run_started` body) equal the scan's, filtered by `RunQuery`'s own rules.
    let inputs: std::collections::HashMap<uuid::Uuid, serde_json::Value> = records
        .iter()
        .filter_map(|r| match &r.event {
            muster::journal::Event::RunStarted { run, input, .. } => Some((*run, input.clone())),
            _ => None,
        })
        .collect();
    let middle = scanned[scanned.len() / 2].started_ms;
    let field = |path: &str, value: &str| vec![InputMatch::parse(path, value).expect("a field")];
    for q in [
        RunQuery {
            started_after: Some(middle),
            ..all(None)
        },
        RunQuery {
            started_before: Some(middle),
            ..all(None)
        },
        RunQuery {
            input: field("requested_by", "warehouse team"),
            ..all(None)
        },
        RunQuery {
            input: field("requested_by", "nobody"),
            ..all(None)
        },
        RunQuery {
            started_after: Some(middle),
            input: field("title", "low_stock report"),
            ..all(Some(RunStatus::Waiting))
        },
        // A bounded scan: the input is read for the 50 newest candidates only.
        RunQuery {
            input: field("requested_by", "warehouse team"),
            scan: Some(50),
            ..all(None)
        },
        RunQuery {
            input: field("requested_by", "nobody"),
            scan: Some(50),
            ..all(None)
        },
        RunQuery {
            started_before: Some(middle),
            input: field("requested_by", "warehouse team"),
            scan: Some(7),
            limit: 5,
            ..all(None)
        },
    ] {
        let want: Vec<_> = scanned
            .iter()
            .filter(|e| q.admits(e))
            .take(q.scan.unwrap_or(usize::MAX))
            .filter(|e| inputs.get(&e.run).is_some_and(|i| q.admits_input(i)))
            .take(q.limit)
            .cloned()
            .collect();
        assert_eq!(j.runs(&q), want, "{q:?}");
    }
    assert_eq!(
        j.runs(&RunQuery {
            input: field("requested_by", "warehouse team"),
            ..all(None)
        })
        .len(),
        scanned.len(),
        "every simulated run has the example's input"
    );
    for e in scanned.iter().step_by(7) {
        assert_eq!(j.run_entry(e.run).as_ref(), Some(e));
        let want = scan_records_of(&records, e.run);
        let got = j.records_of(e.run);
        assert!(want.len() > 3, "run {} has {} records", e.run, want.len());
        assert_eq!(
            got.iter().map(|r| r.seq).collect::<Vec<_>>(),
            want.iter().map(|r| r.seq).collect::<Vec<_>>(),
            "the records of run {}",
            e.run
        );
    }
}

#[test]
fn the_run_index_answers_what_a_scan_of_every_record_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = simulated(dir.path(), 300);
    let j = SqliteJournal::open(&path, Durability::Relaxed).expect("open");
    assert!(j.indexed());
    index_agrees_with_a_scan(&j);
}

#[test]
fn a_version_1_journal_is_migrated_in_place_with_the_same_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = simulated(dir.path(), 200);
    let before = {
        let j = SqliteJournal::open(&path, Durability::Relaxed).expect("open");
        j.read_after(0)
    };
    make_version_1(&path);
    let j = SqliteJournal::open(&path, Durability::Relaxed).expect("a version-1 file opens");
    let c = Connection::open(&path).expect("open");
    let version: String = c
        .query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
            r.get(0)
        })
        .expect("version");
    assert_eq!(version, muster::journal::sqlite::VERSION.to_string());
    let empty: i64 = c
        .query_row(
            "SELECT count(*) FROM events WHERE run IS NULL AND (task IS NOT NULL OR kind LIKE 'run_%' OR kind LIKE 'step_%' OR kind LIKE 'gate_%')",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(empty, 0, "every run and task record names its run");
    assert_eq!(ids_not_blobs(&path), 0, "every id is 16 bytes");
    assert_eq!(j.read_after(0), before, "the migration changed no record");
    index_agrees_with_a_scan(&j);
}

/// A journal written by the build before format 3 (version 2: ids as text, four indexes
/// on `events`), made with `muster sim examples/scenarios/code-review-heavy-faults.toml
/// --tasks 5 --seed 7 --journal tests/fixtures/journal/version-2.db` and then `VACUUM`ed:
/// read as it is, then migrated in place on open with the same answers.
#[test]
fn a_version_2_journal_file_reads_as_it_is_and_is_migrated_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v2.db");
    std::fs::copy("tests/fixtures/journal/version-2.db", &path).expect("copy the fixture");
    let version = |path: &std::path::Path| -> String {
        Connection::open(path)
            .expect("open")
            .query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
                r.get(0)
            })
            .expect("version")
    };
    assert_eq!(version(&path), "2");
    // Read-only readers (`muster inspect`) read it without changing it.
    let records = muster::journal::sqlite::read_journal(&path, 0).expect("read as it is");
    let runs = scan_runs(&records);
    assert!(runs.len() >= 5, "the fixture has {} runs", runs.len());
    let first = runs[0].run;
    let of_first = muster::journal::sqlite::read_records_of(&path, first).expect("a run's records");
    assert_eq!(of_first, scan_records_of(&records, first));
    assert_eq!(
        muster::journal::sqlite::find_runs(&path, &first.to_string()[..13], 10).expect("find"),
        vec![first]
    );
    assert_eq!(version(&path), "2", "reading changed nothing");
    // Opening to write migrates it.
    let j = SqliteJournal::open(&path, Durability::Relaxed).expect("a version-2 file opens");
    assert_eq!(version(&path), muster::journal::sqlite::VERSION.to_string());
    assert_eq!(ids_not_blobs(&path), 0, "every id is 16 bytes");
    assert_eq!(j.read_after(0), records, "the migration changed no record");
    let mut scanned = runs.clone();
    scanned.reverse();
    assert_eq!(j.runs(&all(None)), scanned);
    for e in &runs {
        let want: Vec<u64> = scan_records_of(&records, e.run)
            .iter()
            .map(|r| r.seq)
            .collect();
        let got: Vec<u64> = j.records_of(e.run).iter().map(|r| r.seq).collect();
        assert_eq!(got, want, "the records of run {}", e.run);
    }
    // A task's story, by its id.
    let task = records
        .iter()
        .find_map(|r| r.event.task())
        .expect("the fixture has tasks");
    let want: Vec<u64> = scan_records_of(&records, task)
        .iter()
        .map(|r| r.seq)
        .collect();
    let got: Vec<u64> = j.records_of(task).iter().map(|r| r.seq).collect();
    assert_eq!(got, want, "the records of task {task}");
    // New records go on after the old ones, and `sqlite3` still reads ids as text.
    let seq = j.append(
        1,
        muster::journal::Event::Note {
            text: "after".into(),
        },
    );
    j.flush().expect("flush");
    assert_eq!(seq, records.last().expect("records").seq + 1);
    let c = Connection::open(&path).expect("open");
    let text: String = c
        .query_row(
            "SELECT task FROM events_text WHERE task IS NOT NULL ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("the text view");
    assert_eq!(text, task.to_string());
}

/// Migrating rewrites every record; done, the changes are copied into the file and the
/// write-ahead log is emptied, so the file is not left beside a log as large as itself.
#[test]
fn migrating_a_journal_in_place_leaves_no_write_ahead_log_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v2.db");
    std::fs::copy("tests/fixtures/journal/version-2.db", &path).expect("copy the fixture");
    let size = std::fs::metadata(&path).expect("the fixture").len();
    let wal = dir.path().join("v2.db-wal");
    let j = SqliteJournal::open(&path, Durability::Relaxed).expect("a version-2 file opens");
    // Measured while the journal is open: closing the last connection would checkpoint
    // and remove the log anyway.
    let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(
        wal_bytes, 0,
        "the write-ahead log holds {wal_bytes} bytes after migrating a file of {size} bytes"
    );
    assert!(!j.read_after(0).is_empty(), "the records are there");
}

#[test]
fn approving_on_a_version_1_journal_migrates_it_and_updates_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = simulated(dir.path(), 120);
    let waiting = {
        let j = SqliteJournal::open(&path, Durability::Relaxed).expect("open");
        j.runs(&all(Some(RunStatus::Waiting)))
    };
    let run = waiting.first().expect("a run waits at the gate").clone();
    make_version_1(&path);
    let gate = run.gate.clone().expect("a waiting run names its gate");
    muster::journal::sqlite::decide_gate(&path, run.run, &gate, true, "ship it", 1)
        .expect("the decision is recorded");
    let j = SqliteJournal::open(&path, Durability::Relaxed).expect("open");
    let now = j.run_entry(run.run).expect("the run is indexed");
    assert_eq!((now.status, now.gate), (RunStatus::Unfinished, None));
    index_agrees_with_a_scan(&j);
}

#[test]
fn a_journal_of_a_newer_muster_is_refused_naming_both_versions_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    drop(SqliteJournal::open(&path, Durability::Relaxed).expect("create"));
    let c = Connection::open(&path).expect("open");
    c.execute("UPDATE meta SET value = '99' WHERE key = 'version'", [])
        .expect("pretend a newer muster wrote it");
    drop(c);
    let bytes = std::fs::read(&path).expect("read");
    let err = SqliteJournal::open(&path, Durability::Relaxed).expect_err("refused");
    assert!(
        matches!(&err, JournalError::Version { found, .. } if found == "99"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("version 99")
            && text.contains(&format!("1 to {}", muster::journal::sqlite::VERSION)),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "the file is unchanged"
    );
    // The CLI says so and exits 2.
    let out = muster_within(
        30,
        &["inspect", "--journal", path.to_str().expect("utf-8")],
        std::path::Path::new("."),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("version 99"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn wrappers_forward_every_method_to_the_journal_they_wrap() {
    use muster::journal::TapJournal;
    use muster::scenario::TallyJournal;
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite =
        Arc::new(SqliteJournal::open(dir.path().join("j.db"), Durability::Relaxed).expect("open"));
    let tap = TapJournal::new(sqlite.clone(), 16);
    let tally = TallyJournal::new(Arc::new(TapJournal::new(sqlite.clone(), 16)));
    let run = uuid::Uuid::now_v7();
    for (name, j) in [("tap", &tap as &dyn Journal), ("tally", &tally)] {
        assert!(j.indexed(), "{name} answers from the index");
        assert!(j.write_stats().is_some(), "{name} forwards write_stats");
        assert_eq!(j.max_payload_bytes(), sqlite.max_payload_bytes());
    }
    tally.append(
        1,
        muster::journal::Event::RunStarted {
            run,
            workflow: "w".into(),
            file: "w.toml".into(),
            input: serde_json::json!({}),
        },
    );
    sqlite.flush().expect("flush");
    assert_eq!(tap.run_entry(run).map(|e| e.started_seq), Some(1));
    assert_eq!(tap.records_of(run).len(), 1);
    assert_eq!(tally.read_batch(0, 10).len(), 1);
    assert_eq!(tap.runs(&all(None)).len(), 1);
    // The one method a layer may decline: a simulation never waits on a writer thread.
    assert!(tap.watermark().is_some());
    assert!(tally.watermark().is_none());
}
