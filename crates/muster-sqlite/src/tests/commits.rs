//! Who commits and when: a caller waiting for a record commits it on its own thread when
//! nothing else commits (relaxed only) and SQLite's write lock is free, commits are taken
//! in the queue's order whichever thread makes them, and the WAL stays bounded though no
//! commit checkpoints it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use muster_core::journal::{Event, Journal, JournalConfig};
use rusqlite::Connection;
use uuid::Uuid;

use crate::{Durability, SqliteJournal};

/// A relaxed journal in a fresh directory, opened with `config` (the directory lives as
/// long as the first value).
fn relaxed_with(config: JournalConfig) -> (tempfile::TempDir, SqliteJournal) {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = SqliteJournal::open_with(dir.path().join("j.db"), Durability::Relaxed, config)
        .expect("open");
    (dir, j)
}

fn covered(j: &SqliteJournal, seq: u64) -> bool {
    j.watermark()
        .expect("a durable journal")
        .borrow()
        .covers(seq)
}

#[test]
fn a_waiting_caller_commits_on_its_own_thread_when_nothing_else_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = SqliteJournal::open(dir.path().join("j.db"), Durability::Relaxed).expect("open");
    for i in 0..50 {
        let seq = j.append(
            i,
            Event::Note {
                text: format!("{i}"),
            },
        );
        j.want(seq);
        j.wait_durable(seq).expect("durable");
    }
    // A record the writer thread committed at the end of its window (a read waits for
    // that commit without asking for one), asked for afterwards: nothing more to commit.
    let seq = j.append(
        50,
        Event::Note {
            text: "late".into(),
        },
    );
    assert_eq!(j.read_after(seq - 1).len(), 1);
    j.want(seq);
    let s = j.write_stats().expect("stats");
    assert_eq!(
        (s.commits, s.records),
        (51, 51),
        "one commit per record, none empty"
    );
    // The writer thread, woken by each first record, may now and then take one first;
    // the callers commit the rest.
    let here = j.writer().here_commits();
    assert!(
        here >= 25,
        "{here} of 50 commits made on the caller's thread"
    );
}

#[test]
fn while_another_connection_writes_the_caller_leaves_the_commit_to_the_writer_thread() {
    // A compaction or `muster approve` holds SQLite's write lock: an actor's thread must
    // not wait out the busy timeout for it.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let j = SqliteJournal::open(&path, Durability::Relaxed).expect("open");
    let other = Connection::open(&path).expect("open another connection");
    other
        .execute_batch("BEGIN IMMEDIATE")
        .expect("the write lock");
    let seq = j.append(
        0,
        Event::Note {
            text: "later".into(),
        },
    );
    j.want(seq);
    assert_eq!(j.writer().here_commits(), 0, "not committed on this thread");
    assert!(!covered(&j, seq));
    other.execute_batch("COMMIT").expect("release the lock");
    j.wait_durable(seq).expect("committed by the writer thread");
}

#[test]
fn with_a_slow_disk_the_writer_thread_commits_not_the_caller() {
    // An injected commit delay stands for a slow disk: a caller's thread (an actor's)
    // must not sleep through it, so the writer thread commits.
    let (_dir, j) = relaxed_with(JournalConfig {
        commit_delay: Duration::from_secs(3),
        ..JournalConfig::default()
    });
    let seq = j.append(
        0,
        Event::Note {
            text: "slow".into(),
        },
    );
    j.want(seq);
    assert!(!covered(&j, seq), "want returned without committing");
    j.wait_durable(seq).expect("committed by the writer thread");
}

#[test]
fn the_writer_thread_takes_its_batch_only_under_the_commit_lock() {
    // Commits keep the queue's order because a batch is taken only by whoever holds the
    // committer's lock. While a caller commits on its own thread (here: the test holds
    // the lock), the writer thread, woken for a record, must leave it queued.
    let dir = tempfile::tempdir().expect("tempdir");
    let j = SqliteJournal::open(dir.path().join("j.db"), Durability::Relaxed).expect("open");
    let held = j.writer().hold_commits();
    let seq = j.append(
        0,
        Event::Note {
            text: "wait".into(),
        },
    );
    // The caller cannot commit (the lock is held): `want` wakes the writer thread.
    j.want(seq);
    // Once the writer thread goes for the lock, it has done all it does before holding
    // it: a batch taken then would no longer be queued.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while j.writer().writer_went_to_commit() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer thread was never woken"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        j.writer().queued(),
        1,
        "the writer thread left the batch queued"
    );
    assert!(!covered(&j, seq));
    drop(held);
    j.wait_durable(seq)
        .expect("committed once the lock is free");
}

/// (run, seq) pairs, ordered by run.
type RunSeqs = Vec<(String, i64)>;

/// Each run's row in `runs` as (run, last_seq), and each run's last record's seq.
fn last_seqs(path: &Path) -> (RunSeqs, RunSeqs) {
    let c = Connection::open(path).expect("open");
    let rows = |sql: &str| -> RunSeqs {
        let mut s = c.prepare(sql).expect("prepare");
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    };
    (
        rows("SELECT run, last_seq FROM runs ORDER BY run"),
        rows(
            "SELECT json_extract(body, '$.run') AS r, MAX(seq) FROM events
             WHERE r IS NOT NULL GROUP BY r ORDER BY r",
        ),
    )
}

#[test]
fn commits_from_many_threads_keep_every_record() {
    // Callers commit on their own threads while the writer thread commits what they
    // leave: no record is lost or numbered twice, and the run's row holds its last
    // record. (That batches are committed in queue order is proven by
    // `the_writer_thread_takes_its_batch_only_under_the_commit_lock`: a run's row keeps
    // the highest sequence number it saw, so this test cannot see the order.)
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let j = Arc::new(SqliteJournal::open(&path, Durability::Relaxed).expect("open"));
    let run = Uuid::now_v7();
    j.append(
        0,
        Event::RunStarted {
            run,
            workflow: "w".into(),
            file: "w.toml".into(),
            input: serde_json::json!({}),
        },
    );
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let j = j.clone();
            std::thread::spawn(move || {
                for visit in 1..=500 {
                    let seq = j.append(
                        visit.into(),
                        Event::StepEntered {
                            run,
                            step: format!("s{t}"),
                            visit,
                        },
                    );
                    // Some wait (and may commit here); the rest are left to whoever
                    // commits next.
                    if visit % 3 != 0 {
                        j.wait_durable(seq).expect("durable");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    j.flush().expect("flush");
    let seqs: Vec<u64> = j.read_after(0).iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=1 + 4 * 500).collect::<Vec<u64>>(),
        "no gap, in order"
    );
    let s = j.write_stats().expect("stats");
    assert!(s.commits > 10, "many commits ({})", s.commits);
    j.close().expect("close");
    let (rows, last) = last_seqs(&path);
    assert_eq!(rows, last, "the run's row holds its last record");
    assert_eq!(rows.len(), 1);
}

#[test]
fn the_wal_stays_bounded_while_callers_commit_and_the_checkpointer_copies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let j = SqliteJournal::open(&path, Durability::Relaxed).expect("open");
    // One record per commit (each waited for), about a frame and a half each: unchecked,
    // 8,000 commits make a log of more than 10,000 frames.
    let text = "x".repeat(1_500);
    for i in 0..8_000u64 {
        let seq = j.append(i, Event::Note { text: text.clone() });
        j.wait_durable(seq).expect("durable");
    }
    let wal = std::fs::metadata(dir.path().join("j.db-wal"))
        .expect("the WAL")
        .len();
    let frame = 4096 + 24;
    assert!(
        wal <= 6_000 * frame,
        "the WAL grew to {wal} bytes ({} frames)",
        wal / frame
    );
    assert!(
        j.writer().checkpoints() > 0,
        "the checkpointer copied the log"
    );
    j.close().expect("close");
}

#[test]
fn a_caller_whose_commit_fails_hands_its_rows_to_the_writer_thread() {
    // An I/O error in a caller's commit: the retries and their pauses (50, 100 ms) must
    // not run on an actor's thread. The caller tries once and hands the rows back; the
    // writer thread retries them, before what was queued after them.
    let (_dir, j) = relaxed_with(JournalConfig {
        // The writer thread commits only when asked: the caller's commit comes first.
        commit_window: Duration::from_secs(3600),
        ..JournalConfig::default()
    });
    // The caller's one try, then the writer thread's first try.
    j.writer().hold_commits().fail_writes = 2;
    let first = j.append(
        0,
        Event::Note {
            text: "first".into(),
        },
    );
    j.want(first);
    assert_eq!(
        (j.writer().here_commits(), j.writer().handed_back()),
        (0, 1),
        "the caller tried once and handed its rows back"
    );
    let second = j.append(
        1,
        Event::Note {
            text: "second".into(),
        },
    );
    j.want(second);
    j.wait_durable(second)
        .expect("both committed by the writer thread, the journal not failed");
    assert!(covered(&j, first));
    assert_eq!(
        j.writer().hold_commits().fail_writes,
        0,
        "the writer thread's first try failed too, and it tried again"
    );
    let seqs: Vec<u64> = j.read_after(0).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![first, second]);
}
