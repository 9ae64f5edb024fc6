//! Every statement that reads `events` or `runs` by run or by task, the compaction's above
//! all (it holds the write lock while it deletes), goes through an index: none scans
//! either table, nor reads a range of `events` by sequence number that could be the
//! whole table. Asserted on SQLite's own `EXPLAIN QUERY PLAN` of the statements the crate
//! runs (the same constants and builders).

use rusqlite::Connection;
use rusqlite::types::Value;

use muster_core::journal::runs::InputMatch;
use muster_core::journal::{RunQuery, RunStatus};

/// A new journal file's connection, with the compaction's scratch table made.
fn journal() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    crate::file::create(&path).expect("create a journal");
    let conn = Connection::open(&path).expect("open");
    conn.execute_batch(crate::compact::DOOMED)
        .expect("the scratch table");
    (dir, conn)
}

/// SQLite's plan for `sql` (one line per step), its parameters bound to 1.
fn plan(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
    let args = vec![Value::Integer(1); stmt.parameter_count()];
    stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
}

/// What is wrong with the plan of `sql` (named `name`), if anything: a step scans a
/// table (the scratch table of chosen stories aside) or reads a range of rows by sequence
/// number, or no step goes through `index` (when given).
fn unindexed(conn: &Connection, name: &str, sql: &str, index: Option<&str>) -> Option<String> {
    let plan = plan(conn, sql);
    let whole = plan.iter().any(|l| {
        (l.starts_with("SCAN ") && !l.starts_with("SCAN doomed"))
            || l.contains("(rowid<?)")
            || l.contains("(rowid>?)")
    });
    let missing = index.filter(|i| {
        !plan
            .iter()
            .any(|l| l.contains(&format!("INDEX {i} ")) || l.ends_with(&format!("INDEX {i}")))
    });
    (whole || missing.is_some()).then(|| {
        format!(
            "{name}: {}\n  plan: {plan:?}\n  sql: {sql}",
            match missing {
                Some(i) if !whole => format!("does not use {i}"),
                _ => "reads a whole table".to_string(),
            }
        )
    })
}

/// Fails listing every statement whose plan is not indexed.
fn assert_all_indexed(failures: Vec<Option<String>>) {
    let failures: Vec<String> = failures.into_iter().flatten().collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_compaction_finds_what_goes_through_the_run_index() {
    let (_dir, c) = journal();
    use crate::compact::*;
    assert_all_indexed(vec![
        unindexed(&c, "reading what goes", &read_chosen(), Some("events_run")),
        unindexed(
            &c,
            "deleting what goes",
            &delete_chosen(),
            Some("events_run"),
        ),
        unindexed(&c, "deleting the runs' rows", DELETE_RUNS, None),
        unindexed(&c, "choosing the runs", &choose_runs(), Some("runs_status")),
        unindexed(
            &c,
            "counting the unfinished runs",
            &count_unfinished(),
            Some("runs_status"),
        ),
    ]);
    // Choosing the bare stories reads the records of every story (the aggregate needs
    // each one's last record) and the runs' ids once, in the read transaction, not under
    // the write lock: through the run index, never the records of no story.
    let plan = plan(&c, &choose_stories());
    assert!(
        plan.iter()
            .any(|l| l.starts_with("SEARCH events USING INDEX events_run"))
            && !plan.iter().any(|l| l.starts_with("SCAN events")),
        "{plan:?}"
    );
}

#[test]
fn the_reads_by_run_and_by_task_go_through_their_index() {
    let (_dir, c) = journal();
    use crate::{gate::GATE_RECORDS, runs::RECORDS_OF, writer::CORRELATION_OF};
    assert_all_indexed(vec![
        unindexed(&c, "a story's records", RECORDS_OF, Some("events_run")),
        unindexed(&c, "a task's records", RECORDS_OF, Some("events_task")),
        unindexed(&c, "a gate's records", GATE_RECORDS, Some("events_run")),
        unindexed(
            &c,
            "a task's correlation",
            CORRELATION_OF,
            Some("events_task"),
        ),
    ]);
}

#[test]
fn every_run_list_reads_a_page_through_an_index() {
    let (_dir, c) = journal();
    let all = RunQuery {
        limit: 50,
        ..RunQuery::default()
    };
    let queries = [
        ("newest first", all.clone(), "runs_started"),
        (
            "by status",
            RunQuery {
                status: Some(RunStatus::Waiting),
                ..all.clone()
            },
            "runs_status",
        ),
        (
            "by workflow",
            RunQuery {
                workflow: Some("w".into()),
                ..all.clone()
            },
            "runs_workflow",
        ),
        (
            "by start time and input",
            RunQuery {
                before: Some(100),
                started_after: Some(1),
                started_before: Some(2),
                input: vec![InputMatch {
                    path: vec!["repo".into()],
                    value: "x".into(),
                }],
                ..all.clone()
            },
            "runs_started",
        ),
    ];
    assert_all_indexed(
        queries
            .into_iter()
            .map(|(name, q, index)| unindexed(&c, name, &crate::runs::page_sql(&q).0, Some(index)))
            .collect(),
    );
}
