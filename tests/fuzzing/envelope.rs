//! Envelope validation: payloads checked against the shipped schemas, envelopes decoded
//! from JSON and checked against `schemas/envelope.schema.json`, and envelopes sent through
//! a running runtime (validated, resolved, delivered to an echo agent or failed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use muster::journal::{Journal, Record};
use muster::{
    AgentDef, CapabilitySpec, Envelope, Event, FailureReason, Muster, Recipient, SchemaStore,
};
use serde_json::{Map, Value, json};

use super::arb::{self, Bytes};
use super::{repo, schemas};

/// Keys that the shipped schemas name (so generated payloads often half-fit them).
fn payload_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        super::words()
            .iter()
            .map(|w| &*Box::leak(w.clone().into_boxed_str()))
            .collect()
    })
}

/// A payload: parsed from the input's bytes, or generated (sometimes nested deep).
fn payload(b: &mut Bytes) -> Value {
    match b.below(8) {
        0 => serde_json::from_slice(b.rest()).unwrap_or(Value::Null),
        1 => {
            let depth = b.below(130);
            arb::deep_json(b, depth)
        }
        _ => arb::json(b, 4, payload_keys()),
    }
}

/// One payload against one schema of the store. Invariants: a refusal lists at least one
/// error, and each error's instance path points into the payload; validating twice gives
/// the same answer.
pub fn payload_validation(data: &[u8]) {
    let mut b = Bytes::new(data);
    let names = schemas().names();
    let name = names[b.below(names.len())].clone();
    let v = payload(&mut b);
    check_validation(schemas(), &name, &v);
}

fn check_validation(store: &SchemaStore, name: &str, v: &Value) {
    let first = store.validate(name, v);
    if let Err(e) = &first {
        assert!(
            !e.errors.is_empty(),
            "a refusal without an error: {name} {v}"
        );
        for err in &e.errors {
            assert!(
                v.pointer(&err.instance_path).is_some(),
                "instance path {:?} is not in the payload ({name}): {v}",
                err.instance_path
            );
        }
    }
    assert_eq!(store.validate(name, v), first, "{name} {v}");
}

const ENVELOPE_KEYS: &[&str] = &[
    "id",
    "correlation_id",
    "causation_id",
    "topic",
    "sender",
    "recipient",
    "schema",
    "payload",
    "task_id",
    "attempt",
    "epoch",
    "created_at",
    "deadline",
    "kind",
    "name",
];

/// A field of an envelope, of roughly the right type.
fn field(b: &mut Bytes, key: &str) -> Value {
    if b.u8() < 24 {
        return arb::json(b, 1, ENVELOPE_KEYS);
    }
    match key {
        "id" | "correlation_id" | "causation_id" | "task_id" => {
            let id = uuid::Uuid::from_u64_pair(b.u64(), b.u64());
            match b.below(4) {
                0 => Value::String(id.simple().to_string()),
                1 => Value::String(id.urn().to_string()),
                2 => Value::String(id.braced().to_string()),
                _ => Value::String(id.to_string()),
            }
        }
        "recipient" => {
            json!({"kind": b.pick(&["agent", "capability", "x"]), "name": arb::string(b)})
        }
        "payload" => arb::json(b, 3, &[]),
        "attempt" | "epoch" | "created_at" | "deadline" => match b.below(5) {
            0 => json!(u64::MAX),
            1 => json!(u64::from(u32::MAX) + 1),
            2 => json!(b.u64()),
            3 => json!(1.0),
            _ => json!(b.u8()),
        },
        _ => Value::String(arb::string(b)),
    }
}

/// An envelope-shaped JSON value: some of the fields, mostly of the right types.
fn envelope_json(b: &mut Bytes) -> Value {
    if b.u8() < 48 {
        return serde_json::from_slice(b.rest()).unwrap_or(Value::Null);
    }
    let mut m = Map::new();
    for key in &ENVELOPE_KEYS[..13] {
        if b.u8() < 224 {
            m.insert((*key).to_string(), field(b, key));
        }
    }
    if b.u8() < 16 {
        m.insert(arb::string(b), arb::json(b, 1, &[]));
    }
    Value::Object(m)
}

/// Arbitrary envelope JSON: decoded as the runtime decodes it, and checked against the
/// envelope schema. Invariants: what the schema accepts decodes; what decodes
/// re-serializes to a value that decodes to the same envelope; its payload validates
/// against its schema (or is refused with errors that point into it).
pub fn envelope_decoding(data: &[u8]) {
    let mut b = Bytes::new(data);
    let v = envelope_json(&mut b);
    let schema_ok = schemas().validate("envelope", &v).is_ok();
    match serde_json::from_value::<Envelope>(v.clone()) {
        Ok(env) => {
            let again = serde_json::to_value(&env).expect("an envelope serializes");
            let back: Envelope = serde_json::from_value(again.clone()).unwrap_or_else(|e| {
                panic!("re-serialized envelope does not decode ({e}): {again}")
            });
            assert_eq!(back, env, "{again}");
            if schemas().contains(&env.schema) {
                check_validation(schemas(), &env.schema, &env.payload);
            }
        }
        // JSON Schema counts `1.0` as an integer; the runtime writes integers as integers
        // and reads them so (only the range is the schema's to say).
        Err(_) if integral_floats(&v) => {}
        Err(e) => assert!(
            !schema_ok,
            "the envelope schema accepts what the runtime cannot decode ({e}): {v}"
        ),
    }
}

/// Whether an integer field of the envelope holds a float (`1.0`).
fn integral_floats(v: &Value) -> bool {
    ["attempt", "epoch", "created_at", "deadline"]
        .iter()
        .any(|k| v.get(*k).is_some_and(Value::is_f64))
}

/// A journal that keeps nothing (the runtime under fuzz sends millions of envelopes).
#[derive(Debug, Default)]
struct Discard(AtomicU64);

impl Journal for Discard {
    fn append(&self, _at_ms: u64, _event: Event) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
    fn read_after(&self, _after: u64) -> Vec<Record> {
        Vec::new()
    }
    fn len(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The schema of the echo agent's capability.
fn echo_schema() -> Value {
    json!({
        "type": "object",
        "required": ["a"],
        "properties": {
            "a": {"type": "integer", "minimum": 0},
            "b": {"type": "string", "maxLength": 8},
            "c": {"type": "array", "items": {"type": "number"}, "maxItems": 3}
        }
    })
}

struct Runtime {
    muster: Muster,
    system: actix::System,
    thread: Option<std::thread::JoinHandle<()>>,
    sends: u64,
}

impl Runtime {
    fn start() -> Runtime {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let sys = actix::System::new();
            let handle = actix::System::current();
            sys.block_on(async move {
                let m = Muster::builder()
                    .schemas_dir(repo().join("schemas"))
                    .schema("echo", echo_schema())
                    .journal(Arc::new(Discard::default()))
                    .agent(
                        AgentDef::function("echo", |v, _| async move { Ok(v) })
                            .capability(CapabilitySpec::new("echo", "echo", "echo")),
                    )
                    .start()
                    .await
                    .expect("the runtime starts");
                tx.send((m, handle)).expect("hand the runtime over");
            });
            sys.run().expect("the actix system runs");
        });
        let (muster, system) = rx.recv().expect("the runtime started");
        Runtime {
            muster,
            system,
            thread: Some(thread),
            sends: 0,
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        futures::executor::block_on(self.muster.shutdown());
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends per runtime before a fresh one (dead letters are kept for ever, by design).
const SENDS_PER_RUNTIME: u64 = 20_000;

/// One envelope sent through a running runtime (from another thread, as a client would).
/// Invariants: the runtime refuses a payload its schema refuses, with the validator's
/// errors, and only then; an echo reply carries the payload back; the runtime is still
/// running afterwards.
pub fn envelope_sending(data: &[u8]) {
    static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);
    let mut b = Bytes::new(data);
    let recipient = match b.below(4) {
        0 => Recipient::Agent("echo#0".into()),
        1 => Recipient::Agent(arb::string(&mut b).into()),
        2 => Recipient::Capability(arb::string(&mut b).into()),
        _ => Recipient::Capability("echo".into()),
    };
    let schema: String = match b.below(4) {
        0 => {
            let names = schemas().names();
            names[b.below(names.len())].clone()
        }
        1 => arb::string(&mut b),
        _ => "echo".into(),
    };
    let deadline = match b.below(6) {
        0 => Some(0),
        1 => Some(u64::MAX),
        2 => Some(b.u64()),
        _ => None,
    };
    let payload = match b.below(3) {
        0 => json!({"a": b.u8(), "b": arb::string(&mut b)}),
        _ => payload(&mut b),
    };
    let mut env = Envelope::new("echo", recipient, schema.as_str(), payload.clone());
    env.deadline = deadline;
    env.attempt = b.u32();
    env.epoch = b.u64();

    let mut guard = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if guard.as_ref().is_none_or(|r| r.sends >= SENDS_PER_RUNTIME) {
        *guard = None;
        *guard = Some(Runtime::start());
    }
    let rt = guard.as_mut().expect("a runtime");
    rt.sends += 1;
    let m = rt.muster.clone();
    let result = futures::executor::block_on(m.send(env));
    assert_eq!(m.stopped(), None, "the runtime stopped");

    // What the runtime's store (the shipped schemas plus `echo`) says of the payload.
    let valid = if schema == "echo" {
        static ECHO: OnceLock<SchemaStore> = OnceLock::new();
        ECHO.get_or_init(|| {
            let s = SchemaStore::new();
            s.add("echo", echo_schema())
                .expect("the echo schema compiles");
            s
        })
        .validate("echo", &payload)
    } else {
        schemas().validate(&schema, &payload)
    };
    match result {
        Ok(reply) => {
            assert!(
                valid.is_ok(),
                "delivered a payload its schema refuses: {payload}"
            );
            assert_eq!(*reply.payload, payload, "the echo changed the payload");
        }
        Err(f) => {
            if f.reason == FailureReason::SchemaViolation {
                let c = f
                    .contract
                    .as_ref()
                    .expect("a schema violation carries its errors");
                assert!(!c.errors.is_empty());
                assert!(
                    valid.is_err(),
                    "refused a payload its schema accepts: {f:?}"
                );
            } else if valid.is_err() {
                assert_eq!(
                    f.reason,
                    FailureReason::DeadlinePassed,
                    "an invalid payload failed for another reason: {f:?}"
                );
            }
        }
    }
}
