//! Retention keeps what is still going and loses nothing: on a journal of simulated
//! code-review runs (most waiting at the gate) plus runs and bare tasks that ended,
//! `muster journal compact --finished-before 0s --archive F` removes exactly the ended
//! work, writes every removed record to the archive (count and digest checked by `muster
//! inspect --archive`), leaves every unfinished run's records as they were (recovery
//! rebuilds the same runs), never reuses a sequence number, and returns the space. A
//! journal compacted while in use loses none of the records appended meanwhile.

use std::collections::BTreeSet;
use std::sync::Arc;

use muster::journal::sqlite::{Compaction, read_archive};
use muster::journal::{Durability, Event, Journal, RunQuery, RunStatus, SqliteJournal};
use muster::workflow::Unfinished;
use serde_json::json;
use uuid::Uuid;

use crate::support::common::muster_within;

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// Appends `n` runs that ended (completed, failed, cancelled in turn), each with a task,
/// and `n` bare tasks that ended, stamped `at`.
fn ended_work(j: &SqliteJournal, n: usize, at: u64) {
    for i in 0..n {
        let run = Uuid::now_v7();
        let task = Uuid::now_v7();
        j.append(
            at,
            Event::RunStarted {
                run,
                workflow: "old".into(),
                file: "old.toml".into(),
                input: json!({"i": i}),
            },
        );
        j.append(
            at,
            Event::StepEntered {
                run,
                step: "work".into(),
                visit: 1,
            },
        );
        for (t, correlation) in [(task, run), (Uuid::now_v7(), Uuid::now_v7())] {
            j.append(
                at,
                Event::TaskSubmitted {
                    task: t,
                    capability: "echo".into(),
                    correlation,
                    input: Arc::new(json!({"i": i})),
                    attempts: 1,
                    timeout_ms: 1000,
                    sender: String::new(),
                },
            );
            j.append(
                at,
                Event::ResultAccepted {
                    task: t,
                    agent: "echo#0".into(),
                    epoch: 1,
                    output: Arc::new(json!({"ok": true})),
                },
            );
        }
        let status = ["completed", "failed", "cancelled"][i % 3];
        j.append(
            at,
            Event::RunEnded {
                run,
                status: status.into(),
                step: "work".into(),
                reason: None,
            },
        );
    }
}

#[test]
fn compaction_removes_ended_work_into_the_archive_and_keeps_what_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let out = muster_within(
        120,
        &[
            "sim",
            "examples/scenarios/code-review-heavy-faults.toml",
            "--tasks",
            "150",
            "--journal",
            path_str(&path),
        ],
        std::path::Path::new("."),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (before, open_before, last_before) = {
        let j = SqliteJournal::open(&path, Durability::Relaxed).expect("open");
        ended_work(&j, 60, 1_000);
        j.append(
            2_000,
            Event::Note {
                text: "the last record".into(),
            },
        );
        j.flush().expect("flush");
        let open: Vec<_> = [RunStatus::Unfinished, RunStatus::Waiting]
            .into_iter()
            .flat_map(|s| {
                j.runs(&RunQuery {
                    status: Some(s),
                    limit: usize::MAX,
                    ..RunQuery::default()
                })
            })
            .collect();
        assert!(open.len() > 100, "{} unfinished runs", open.len());
        (j.read_after(0), open, j.len())
    };
    let archive = dir.path().join("old.jsonl.zst");
    let out = muster_within(
        60,
        &[
            "journal",
            "compact",
            "--journal",
            path_str(&path),
            "--finished-before",
            "0s",
            "--archive",
            path_str(&archive),
            "--json",
        ],
        std::path::Path::new("."),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["runs"].as_u64().map(|r| r >= 60), Some(true), "{doc}");
    assert_eq!(
        doc["stories"].as_u64().map(|s| s >= 60),
        Some(true),
        "{doc}"
    );
    assert!(
        doc["bytes_after"].as_u64() < doc["bytes_before"].as_u64(),
        "the file shrank: {doc}"
    );

    let j = SqliteJournal::open(&path, Durability::Relaxed).expect("reopen");
    let after = j.read_after(0);
    let archived = read_archive(&archive).expect("the archive reads back");
    // Nothing lost: what remains and what was archived are the journal, plus the note.
    let mut seqs: Vec<u64> = after.iter().chain(&archived).map(|r| r.seq).collect();
    seqs.sort_unstable();
    let mut want: Vec<u64> = before.iter().map(|r| r.seq).collect();
    want.push(last_before + 1);
    assert_eq!(seqs, want, "every record is either kept or archived, once");
    let removed: BTreeSet<u64> = archived.iter().map(|r| r.seq).collect();
    for r in &before {
        if removed.contains(&r.seq) {
            assert!(
                archived.iter().any(|a| a == r),
                "record {} archived as it was",
                r.seq
            );
        }
    }
    assert!(!removed.contains(&last_before), "the last record is kept");
    match &after.last().expect("records").event {
        Event::Note { text } => assert!(text.starts_with("compacted: removed"), "{text}"),
        other => panic!("the compaction's note is last, not {other:?}"),
    }
    // Every unfinished run is still there with all its records, and rebuilds the same.
    for e in &open_before {
        let now = j.run_entry(e.run).expect("an unfinished run is kept");
        assert_eq!(&now, e);
        let was: Vec<u64> = muster::journal::runs::scan_records_of(&before, e.run)
            .iter()
            .map(|r| r.seq)
            .collect();
        let is: Vec<u64> = j.records_of(e.run).iter().map(|r| r.seq).collect();
        assert_eq!(is, was, "the records of run {}", e.run);
    }
    let rebuilt = |records: &[muster::journal::Record]| -> Vec<(Uuid, Option<String>)> {
        let mut v: Vec<_> = Unfinished::of(records)
            .runs
            .into_iter()
            .map(|r| (r.run, r.at.map(|p| p.step)))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        rebuilt(&after),
        rebuilt(&before),
        "recovery rebuilds the same runs"
    );
    assert!(
        j.runs(&RunQuery {
            status: Some(RunStatus::Completed),
            limit: usize::MAX,
            ..RunQuery::default()
        })
        .iter()
        .all(|e| e.workflow != "old")
    );
    // Sequence numbers go on from the highest ever given.
    assert_eq!(
        j.append(
            0,
            Event::Note {
                text: "next".into()
            }
        ),
        last_before + 2
    );
    drop(j);

    // The archive reads as a journal; altered or cut short, it is refused by name.
    let out = muster_within(
        30,
        &["inspect", "--archive", path_str(&archive), "--json"],
        std::path::Path::new("."),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&archive).expect("read");
    let cut = dir.path().join("cut.jsonl.zst");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let out = muster_within(
        30,
        &["inspect", "--archive", path_str(&cut)],
        std::path::Path::new("."),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cut.jsonl.zst"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let altered = dir.path().join("altered.jsonl.zst");
    let mut lines = String::new();
    for r in &archived[1..] {
        lines.push_str(&serde_json::to_string(r).expect("json"));
        lines.push('\n');
    }
    let end = zstd_last_line(&bytes);
    lines.push_str(&end);
    lines.push('\n');
    std::fs::write(
        &altered,
        zstd::encode_all(lines.as_bytes(), 3).expect("compress"),
    )
    .expect("write");
    let err = read_archive(&altered).expect_err("a record missing");
    assert!(err.to_string().contains("digest"), "{err}");
    // An archive is never overwritten.
    let out = muster_within(
        30,
        &[
            "journal",
            "compact",
            "--journal",
            path_str(&path),
            "--finished-before",
            "0s",
            "--archive",
            path_str(&archive),
        ],
        std::path::Path::new("."),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwritten"));
}

fn zstd_last_line(bytes: &[u8]) -> String {
    let text = zstd::decode_all(bytes).expect("decompress");
    String::from_utf8(text)
        .expect("utf-8")
        .lines()
        .last()
        .expect("an end line")
        .to_string()
}

#[test]
fn a_journal_in_use_is_refused_and_compacting_it_from_within_loses_no_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let j = Arc::new(SqliteJournal::open(&path, Durability::Relaxed).expect("open"));
    ended_work(&j, 200, 1_000);
    j.flush().expect("flush");
    // Another process may not compact it: the lock names this one.
    let out = muster_within(
        30,
        &[
            "journal",
            "compact",
            "--journal",
            path_str(&path),
            "--finished-before",
            "0s",
        ],
        std::path::Path::new("."),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&std::process::id().to_string()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // From within, while another thread appends.
    let writer = {
        let j = j.clone();
        std::thread::spawn(move || {
            (0..5_000)
                .map(|i| {
                    j.append(
                        5_000,
                        Event::Note {
                            text: format!("during {i}"),
                        },
                    )
                })
                .collect::<Vec<u64>>()
        })
    };
    let done = j
        .compact(
            &Compaction {
                ended_before_ms: 2_000,
                archive: None,
            },
            9_000,
        )
        .expect("compacted");
    let appended = writer.join().expect("the writer thread");
    j.flush().expect("flush");
    assert_eq!(done.runs, 200);
    let kept: BTreeSet<u64> = j.read_after(0).iter().map(|r| r.seq).collect();
    for seq in appended.iter().chain([&done.note_seq]) {
        assert!(
            kept.contains(seq),
            "record {seq} appended during the compaction is kept"
        );
    }
}
