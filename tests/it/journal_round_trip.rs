//! The journal keeps every event as it was given: every `Event` variant written and read
//! back equal, in order, with a gap-free sequence, on both backends; a reopened SQLite
//! journal continues the sequence where it stopped.

use std::sync::Arc;

use muster::journal::{Durability, Event, Journal, MemoryJournal, SqliteJournal};
use muster::{Envelope, Recipient};
use serde_json::json;
use uuid::Uuid;

/// One event of every variant, with the optional fields both set and unset.
fn every_event() -> Vec<Event> {
    let task = Uuid::now_v7();
    let run = Uuid::now_v7();
    let env = Envelope::new(
        "code.test",
        Recipient::Agent("tester#0".into()),
        "test-request",
        json!({"files": ["a.rs"], "n": 1.5, "nested": {"ok": true}}),
    )
    .from("owner")
    .correlated(run)
    .caused_by(Uuid::now_v7())
    .deadline_at(1_767_225_600_500);
    let mut task_env = env.clone();
    task_env.task_id = Some(task);
    task_env.epoch = 2;
    task_env.attempt = 2;
    let cap_env = Envelope::new(
        "code.review",
        Recipient::Capability("code.review".into()),
        "review-request",
        json!(null),
    );
    vec![
        Event::AgentRegistered {
            agent: "tester#0".into(),
            capabilities: vec!["code.test".into(), "code.lint".into()],
            generation: 0,
        },
        Event::AgentStateChanged {
            agent: "tester#0".into(),
            state: "busy".into(),
            reason: None,
        },
        Event::AgentStateChanged {
            agent: "tester#0".into(),
            state: "failed".into(),
            reason: Some("panic: boom".into()),
        },
        Event::AgentDroppedOut {
            agent: "tester#1".into(),
            reason: "restart intensity".into(),
        },
        Event::ChildRestarted {
            supervisor: "tester".into(),
            child: "tester#0".into(),
            exit: "panic".into(),
        },
        Event::SupervisorEscalated {
            supervisor: "agents".into(),
            reason: "5 restarts in 10s".into(),
        },
        Event::EnvelopeRouted {
            envelope: Arc::new(task_env),
            delivered_to: "tester#0".into(),
        },
        Event::EnvelopeFailed {
            envelope: Arc::new(cap_env),
            reason: "no_capable_agent".into(),
            detail: "no live agent serves `code.review`".into(),
        },
        Event::TaskSubmitted {
            task,
            capability: "code.test".into(),
            correlation: run,
            input: json!({"files": [], "unicode": "héllo ✓", "big": u64::MAX}).into(),
            attempts: 3,
            timeout_ms: 60_000,
            sender: "code-change/test".into(),
        },
        // As journals written before a lease carried its envelope have it...
        Event::LeaseGranted {
            task,
            agent: "tester#0".into(),
            epoch: 1,
            attempt: 1,
            envelope: env.id,
            routed: None,
        },
        // ... and as a lease is journaled now: with the envelope it delivered.
        Event::LeaseGranted {
            task,
            agent: "tester#0".into(),
            epoch: 2,
            attempt: 2,
            envelope: env.id,
            routed: Some(Arc::new(env.clone())),
        },
        Event::AttemptFailed {
            task,
            agent: "tester#0".into(),
            epoch: 1,
            reason: "timeout".into(),
            detail: "no answer within 60s".into(),
        },
        Event::ResultAccepted {
            task,
            agent: "tester#1".into(),
            epoch: 2,
            output: json!({"total": 3, "failed": 0, "neg": -1}).into(),
        },
        Event::ResultStale {
            task,
            agent: "tester#0".into(),
            epoch: 1,
            current_epoch: 0,
        },
        Event::TaskEscalated {
            task,
            to: "dead_letter".into(),
            reason: "3 attempts failed".into(),
        },
        Event::TaskCancelled {
            task,
            reason: "the runtime is shutting down".into(),
        },
        Event::Note {
            text: "free text; with 'quotes' and \"doubles\"".into(),
        },
    ]
}

fn write_and_check(j: &dyn Journal, first_seq: u64) {
    let events = every_event();
    let kinds: std::collections::BTreeSet<_> = events.iter().map(|e| e.kind()).collect();
    assert_eq!(kinds.len(), 15, "every variant is covered: {kinds:?}");
    let mut seqs = Vec::new();
    for (i, e) in events.iter().enumerate() {
        seqs.push(j.append(1_000 + i as u64, e.clone()));
    }
    let want: Vec<u64> = (first_seq..first_seq + events.len() as u64).collect();
    assert_eq!(seqs, want, "sequence numbers are gap-free");
    let back = j.read_after(first_seq - 1);
    assert_eq!(back.len(), events.len());
    for ((r, e), (i, seq)) in back.iter().zip(&events).zip(want.iter().enumerate()) {
        assert_eq!(r.seq, *seq);
        assert_eq!(r.at_ms, 1_000 + i as u64);
        assert_eq!(&r.event, e, "event {seq} reads back equal");
    }
    assert_eq!(j.len(), first_seq - 1 + events.len() as u64);
}

#[test]
fn every_event_round_trips_through_memory() {
    let j = MemoryJournal::default();
    write_and_check(&j, 1);
}

#[test]
fn every_event_round_trips_through_sqlite_and_a_reopen_continues_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/journal.db");
    {
        let j = SqliteJournal::open(&path, Durability::Relaxed).unwrap();
        assert!(j.is_empty());
        write_and_check(&j, 1);
        // Dropping it commits and stops the writer.
    }
    let j = SqliteJournal::open(&path, Durability::Sync).unwrap();
    assert_eq!(j.len(), 17, "the counter is seeded from the file");
    write_and_check(&j, 18);
    let all = j.read_after(0);
    let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=34).collect::<Vec<_>>());
    j.close().unwrap();
    let again = muster::journal::sqlite::read_journal(&path, 0).unwrap();
    assert_eq!(again, all, "a read-only reader sees the same records");
}

#[test]
fn appends_from_many_threads_are_all_kept_gap_free() {
    let dir = tempfile::tempdir().unwrap();
    let j = Arc::new(SqliteJournal::open(dir.path().join("j.db"), Durability::Relaxed).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let j = j.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    j.append(
                        i,
                        Event::Note {
                            text: format!("{t}/{i}"),
                        },
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    j.flush().unwrap();
    let back = j.read_after(0);
    let seqs: Vec<u64> = back.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=2000).collect::<Vec<_>>());
}

#[test]
fn sync_mode_waits_for_the_batch_holding_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let j = SqliteJournal::open(dir.path().join("j.db"), Durability::Sync).unwrap();
    assert!(
        j.watermark().is_some(),
        "the runtime waits for what it acknowledges"
    );
    let seq = j.append(
        0,
        Event::Note {
            text: "ack me".into(),
        },
    );
    j.sync_point(seq);
    // Durable now: a separate read-only reader sees it.
    let seen = muster::journal::sqlite::read_journal(j.path(), 0).unwrap();
    assert_eq!(seen.len(), 1);
    j.close().unwrap();
    assert!(j.wait_durable(seq).is_ok(), "still durable after close");
    assert!(j.wait_durable(seq + 1).is_err(), "nothing after close");
}
