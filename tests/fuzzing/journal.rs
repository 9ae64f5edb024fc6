//! Journal records: the `body` JSON of an `events` row decoded to an [`Event`], directly and
//! through `read_journal` on a journal file whose row holds the fuzz input.

use std::cell::RefCell;
use std::path::PathBuf;

use muster::journal::sqlite::read_journal;
use muster::journal::{Durability, Event, Journal, Record, SqliteJournal};
use serde_json::{Map, Value};

use super::arb::{self, Bytes};

/// Every event kind (the `type` tag).
const KINDS: &[&str] = &[
    "agent_registered",
    "agent_state_changed",
    "agent_dropped_out",
    "child_restarted",
    "supervisor_escalated",
    "envelope_routed",
    "envelope_failed",
    "task_submitted",
    "lease_granted",
    "attempt_failed",
    "result_accepted",
    "result_stale",
    "task_escalated",
    "task_cancelled",
    "run_started",
    "step_entered",
    "step_completed",
    "step_failed",
    "gate_waiting",
    "gate_decided",
    "run_ended",
    "note",
];

/// What a field of an event (or an envelope) usually holds.
#[derive(Clone, Copy)]
enum Shape {
    Text,
    Id,
    Count,
    Small,
    Flag,
    Any,
    Texts,
    Envelope,
    Recipient,
}

const FIELDS: &[(&str, Shape)] = &[
    ("agent", Shape::Text),
    ("capabilities", Shape::Texts),
    ("generation", Shape::Count),
    ("state", Shape::Text),
    ("reason", Shape::Text),
    ("supervisor", Shape::Text),
    ("child", Shape::Text),
    ("exit", Shape::Text),
    ("envelope", Shape::Envelope),
    ("delivered_to", Shape::Text),
    ("detail", Shape::Text),
    ("task", Shape::Id),
    ("capability", Shape::Text),
    ("correlation", Shape::Id),
    ("input", Shape::Any),
    ("attempts", Shape::Small),
    ("timeout_ms", Shape::Count),
    ("sender", Shape::Text),
    ("epoch", Shape::Count),
    ("attempt", Shape::Small),
    ("output", Shape::Any),
    ("current_epoch", Shape::Count),
    ("to", Shape::Text),
    ("run", Shape::Id),
    ("workflow", Shape::Text),
    ("file", Shape::Text),
    ("step", Shape::Text),
    ("visit", Shape::Small),
    ("gate", Shape::Text),
    ("question", Shape::Text),
    ("approved", Shape::Flag),
    ("status", Shape::Text),
    ("text", Shape::Text),
];

const ENVELOPE_FIELDS: &[(&str, Shape)] = &[
    ("id", Shape::Id),
    ("correlation_id", Shape::Id),
    ("causation_id", Shape::Id),
    ("topic", Shape::Text),
    ("sender", Shape::Text),
    ("recipient", Shape::Recipient),
    ("schema", Shape::Text),
    ("payload", Shape::Any),
    ("task_id", Shape::Id),
    ("attempt", Shape::Small),
    ("epoch", Shape::Count),
    ("created_at", Shape::Count),
    ("deadline", Shape::Count),
];

/// A value of roughly the given shape (and now and then any value at all).
fn shaped(b: &mut Bytes, shape: Shape, depth: usize) -> Value {
    if b.u8() < 16 {
        return arb::json(b, 1, &[]);
    }
    match shape {
        Shape::Text => Value::String(arb::string(b)),
        Shape::Id => match b.below(4) {
            0 => Value::String(uuid::Uuid::from_u128(u128::from(b.u64())).to_string()),
            1 => Value::String(
                uuid::Uuid::from_u128(u128::from(b.u64()) << 64)
                    .simple()
                    .to_string(),
            ),
            2 => Value::Null,
            _ => Value::String("0198f1c2-7d6e-7a3b-9c4d-5e6f7a8b9c0d".into()),
        },
        Shape::Count => Value::from(match b.below(3) {
            0 => b.u64(),
            1 => u64::from(b.u8()),
            _ => u64::MAX,
        }),
        Shape::Small => Value::from(match b.below(3) {
            0 => u64::from(b.u32()),
            1 => u64::from(b.u8()),
            _ => u64::from(u32::MAX) + 1,
        }),
        Shape::Flag => Value::Bool(b.bool()),
        Shape::Any => arb::json(b, 4, &["a", "b", "hops", "last"]),
        Shape::Texts => Value::Array(
            (0..b.below(4))
                .map(|_| Value::String(arb::string(b)))
                .collect(),
        ),
        Shape::Recipient => serde_json::json!({
            "kind": b.pick(&["agent", "capability", "other"]),
            "name": arb::string(b),
        }),
        Shape::Envelope if depth > 0 => object(b, ENVELOPE_FIELDS, depth - 1),
        Shape::Envelope => Value::Null,
    }
}

/// An object with some of `fields`, each of roughly its shape.
fn object(b: &mut Bytes, fields: &[(&str, Shape)], depth: usize) -> Value {
    let mut m = Map::new();
    for (name, shape) in fields {
        if b.u8() < 160 {
            m.insert((*name).to_string(), shaped(b, *shape, depth));
        }
    }
    Value::Object(m)
}

/// The body under test: raw bytes, or an object tagged with an event kind whose fields
/// mostly have the right shapes (so many of them decode).
fn body(b: &mut Bytes) -> Vec<u8> {
    if b.u8() < 64 {
        return b.rest().to_vec();
    }
    let mut v = object(b, FIELDS, 1);
    if let Value::Object(m) = &mut v
        && b.u8() < 240
    {
        m.insert("type".into(), Value::String(b.pick(KINDS).into()));
    }
    serde_json::to_vec(&v).expect("a JSON value serializes")
}

/// Checks what decoding an event gave. Invariants: a decoded event is tagged with its
/// kind, re-serializes to a body that decodes to the same event, and answers its
/// accessors.
fn check_event(event: &Event, body: &[u8]) {
    let again = serde_json::to_string(event).expect("an event serializes");
    let back: Event = serde_json::from_str(&again).unwrap_or_else(|e| {
        panic!(
            "a decoded event re-serializes to a body that does not decode ({e}):\n{again}\nfrom {}",
            String::from_utf8_lossy(body)
        )
    });
    assert_eq!(&back, event, "re-serialized as {again}");
    let v: Value = serde_json::from_str(&again).expect("JSON");
    assert_eq!(v["type"], event.kind(), "{again}");
    let _ = (
        event.task(),
        event.agent(),
        event.epoch(),
        event.correlation(),
    );
}

/// One `events.body`, decoded as the journal decodes it.
pub fn event(data: &[u8]) {
    let mut b = Bytes::new(data);
    let body = body(&mut b);
    if let Ok(event) = serde_json::from_slice::<Event>(&body) {
        check_event(&event, &body);
        // A whole record, as `muster inspect --json` writes it.
        let r = Record {
            seq: 1,
            at_ms: 2,
            event,
        };
        let text = serde_json::to_string(&r).expect("a record serializes");
        assert_eq!(
            serde_json::from_str::<Record>(&text).ok().as_ref(),
            Some(&r)
        );
    }
}

struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
    conn: rusqlite::Connection,
}

thread_local! {
    static JOURNAL: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

/// A journal file with one event, and a connection that rewrites its row.
fn scratch() -> Scratch {
    let dir = tempfile::tempdir().expect("a scratch folder");
    let path = dir.path().join("journal.db");
    let j = SqliteJournal::open(&path, Durability::Relaxed).expect("a new journal");
    j.append(0, Event::Note { text: "x".into() });
    j.flush().expect("flush");
    j.close().expect("close");
    drop(j);
    let conn = rusqlite::Connection::open(&path).expect("open the journal to rewrite it");
    conn.execute_batch("PRAGMA synchronous = OFF;")
        .expect("pragma");
    Scratch {
        _dir: dir,
        path,
        conn,
    }
}

/// `read_journal` on a file whose one row holds the input: its body (as text, as text that
/// is not UTF-8, or as a blob), its `seq` and `at_ms`, and the `after` of the read.
/// Invariants: an error names the file; a record read back is the body's event, with the
/// row's numbers.
pub fn file(data: &[u8]) {
    let mut b = Bytes::new(data);
    let seq: i64 = match b.below(4) {
        0 => 1,
        1 => b.u64() as i64,
        2 => -1,
        _ => i64::MAX,
    };
    let at_ms = b.u64() as i64;
    let after = match b.below(3) {
        0 => 0,
        1 => u64::MAX,
        _ => b.u64(),
    };
    let as_blob = b.below(8) == 0;
    let body = body(&mut b);
    JOURNAL.with(|j| {
        let mut j = j.borrow_mut();
        let s = j.get_or_insert_with(scratch);
        let updated = if as_blob {
            s.conn.execute(
                "UPDATE events SET seq = ?1, at_ms = ?2, body = ?3",
                rusqlite::params![seq, at_ms, body],
            )
        } else {
            s.conn.execute(
                "UPDATE events SET seq = ?1, at_ms = ?2, body = CAST(?3 AS TEXT)",
                rusqlite::params![seq, at_ms, body],
            )
        };
        assert_eq!(updated.expect("rewrite the row"), 1);
        match read_journal(&s.path, after) {
            Ok(records) => {
                for r in &records {
                    assert_eq!(r.seq, seq as u64);
                    assert_eq!(r.at_ms, at_ms as u64);
                    let direct: Event = serde_json::from_slice(&body)
                        .expect("read_journal decoded a body serde_json refuses");
                    assert_eq!(r.event, direct);
                    check_event(&r.event, &body);
                }
                if !as_blob
                    && seq >= 0
                    && std::str::from_utf8(&body).is_ok()
                    && serde_json::from_slice::<Event>(&body).is_ok()
                {
                    let expected = usize::from((seq as u64) > after);
                    assert_eq!(records.len(), expected, "seq {seq}, after {after}");
                }
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&s.path.display().to_string()),
                    "the error does not name the file: {msg}"
                );
            }
        }
    });
}
