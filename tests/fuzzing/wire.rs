//! The cluster's wire: what a worker or a control node decodes from NATS (an assignment, a
//! report, a heartbeat, a control message, a worker record, a control node's record, a
//! contract record, a run lease), and the KV keys made from names a peer chose.

use std::sync::Arc;

use muster::agents::effects::EffectEntry;
use muster::cluster::failover::RunLease;
use muster::cluster::peers::{ApiReply, ApiRequest};
use muster::cluster::wire::{
    AssignMsg, BeatMsg, ContractRecord, ControlMsg, ControlRecord, EffectAckMsg, EffectMsg,
    EffectRecord, ReportMsg, WireMessage, WorkerRecord, check_node_name, contract_key, decode,
    parse_worker_key, schemas as wire_schemas, version_of, worker_key,
};
use muster::{CapabilitySpec, Envelope, Failure, Recipient, SchemaStore};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::arb::{self, Bytes};

/// The wire's vocabulary, so generated messages often half-fit a format.
const KEYS: &[&str] = &[
    "instance",
    "envelope",
    "timeout_ms",
    "report_to",
    "beat_to",
    "alive_every_ms",
    "task_id",
    "epoch",
    "result",
    "Ok",
    "Err",
    "kind",
    "usage",
    "agent",
    "type",
    "cancel",
    "kill",
    "reason",
    "node",
    "id",
    "generation",
    "concurrency",
    "capacity",
    "state",
    "load",
    "capabilities",
    "name",
    "version",
    "input",
    "output",
    "idempotent",
    "digest",
    "wire",
    "part",
    "contracts",
    "instances",
    "owner",
    "workflow",
    "topic",
    "payload",
    "schema",
    "from",
    "method",
    "path",
    "headers",
    "body",
    "status",
    "effect_to",
    "effects",
    "effect_prefix",
    "seq",
    "ack_to",
    "record",
    "claim",
    "key",
    "written",
    "error",
    "entry",
    "starts",
];

/// One valid example of each message, as JSON (the seed a mutation starts from), with
/// the name of its published schema.
fn examples() -> Vec<(&'static str, Value)> {
    let store = SchemaStore::new();
    let _ = store.add("in", json!({"type": "object"}));
    let contract = CapabilitySpec::new("echo", "in", "in")
        .compile(&store)
        .map(|c| ContractRecord::of(&c))
        .ok();
    let task = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
    let mut env = Envelope::new(
        "echo",
        Recipient::Agent("echo#0".into()),
        "in",
        json!({"x": 1}),
    );
    env.task_id = Some(task);
    env.epoch = 2;
    let to = |v: &dyn erased::Ser| v.value();
    let mut out = vec![
        (
            "cluster-assign",
            to(&AssignMsg {
                instance: "echo#0".into(),
                envelope: Arc::new(env),
                timeout_ms: 1000,
                report_to: "muster.report.c1".into(),
                beat_to: "muster.beat.c1".into(),
                alive_every_ms: 375,
                effect_to: Some("muster.effect.c1".into()),
                effects: vec![EffectEntry::started("charge:A-1", Some("k".into()), 1)],
                effect_prefix: None,
            }),
        ),
        (
            "cluster-effect",
            to(&EffectMsg {
                instance: "echo#0@w1".into(),
                task_id: task,
                epoch: 2,
                seq: 7,
                ack_to: "muster.effect_ack.w1".into(),
                record: EffectRecord::Done {
                    name: "charge:A-1".into(),
                    key: Some("k".into()),
                    result: json!({"charge": "ch_1"}),
                },
            }),
        ),
        (
            "cluster-effect-ack",
            to(&EffectAckMsg {
                task_id: task,
                epoch: 2,
                seq: 7,
                written: false,
                error: Some("claimed".into()),
                entry: Some(EffectEntry::started("charge:A-1", None, 1)),
            }),
        ),
        (
            "cluster-report",
            to(&ReportMsg {
                task_id: task,
                epoch: 2,
                instance: "echo#0@w1".into(),
                result: Err(Failure::AgentGone("gone".into())),
                usage: None,
            }),
        ),
        (
            "cluster-beat",
            to(&BeatMsg {
                instance: "echo#0@w1".into(),
                task_id: task,
                epoch: 2,
                agent: false,
            }),
        ),
        (
            "cluster-control",
            to(&ControlMsg::Kill {
                instance: "echo#0".into(),
                reason: "liveness".into(),
            }),
        ),
        (
            "cluster-run-lease",
            to(&RunLease {
                owner: "c1".into(),
                workflow: "code-change".into(),
            }),
        ),
        (
            "cluster-api-request",
            to(&ApiRequest {
                from: "c1".into(),
                method: "GET".into(),
                path: "/v1/runs?limit=50".into(),
                headers: vec![("authorization".into(), "Bearer t".into())],
                body: String::new(),
            }),
        ),
        (
            "cluster-api-reply",
            to(&ApiReply {
                status: 200,
                body: r#"{"runs":[],"next":null}"#.into(),
            }),
        ),
    ];
    if let Some(contract) = contract {
        out.push(("cluster-contract", to(&contract)));
        out.push((
            "cluster-worker",
            json!({
                "wire": 3, "node": "w1", "part": 0, "contracts": [to(&contract)],
                "instances": [{
                    "id": "echo#0", "agent": "echo", "generation": 0,
                    "concurrency": 1, "capacity": 2, "state": "ready", "load": 0,
                    "capabilities": ["echo"],
                }],
            }),
        ));
    }
    out
}

/// Serialising through a trait object, to list the examples in one place.
mod erased {
    pub trait Ser {
        fn value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or_default()
        }
    }
}

/// Changes one place of `v`: a field replaced by a generated value, removed or added, or
/// a nested object mutated in turn.
fn mutate(v: &mut Value, b: &mut Bytes, depth: usize) {
    let Value::Object(map) = v else {
        *v = arb::json(b, 3, KEYS);
        return;
    };
    let keys: Vec<String> = map.keys().cloned().collect();
    match b.below(5) {
        0 if !keys.is_empty() => {
            map.remove(&keys[b.below(keys.len())]);
        }
        1 => {
            let k = b.pick(KEYS).to_string();
            map.insert(k, arb::json(b, 3, KEYS));
        }
        2 if !keys.is_empty() && depth < 4 => {
            let k = &keys[b.below(keys.len())];
            if let Some(inner) = map.get_mut(k) {
                mutate(inner, b, depth + 1);
            }
        }
        _ if !keys.is_empty() => {
            let k = keys[b.below(keys.len())].clone();
            map.insert(k, arb::json(b, 3, KEYS));
        }
        _ => {}
    }
}

/// Reads `bytes` as a `T` as the cluster does ([`decode`]: JSON, its published schema,
/// then the type). Invariants: a refusal names the schema; what is read encodes to what
/// the schema accepts, stably (read, encode, read, encode: equal); and whatever JSON the
/// schema accepts is read (the schema promises no more than the decoder takes).
fn decode_as<T: WireMessage + Serialize>(bytes: &[u8]) -> bool {
    let schema = T::SCHEMA;
    match decode::<T>(bytes) {
        Ok(msg) => {
            let once = serde_json::to_value(&msg).expect("a decoded message encodes");
            if let Err(e) = wire_schemas().validate(schema, &once) {
                panic!("a decoded message encodes to what {schema} refuses: {e}: {once}");
            }
            let again: T =
                serde_json::from_value(once.clone()).expect("an encoded message decodes");
            let twice = serde_json::to_value(&again).expect("encodes");
            assert_eq!(once, twice, "{schema}: encoding is not stable");
            true
        }
        Err(e) => {
            assert_eq!(e.schema, schema);
            if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
                let parts_ok = T::PARTS.iter().all(|(at, part)| {
                    v.pointer(at)
                        .is_none_or(|p| wire_schemas().validate(part, p).is_ok())
                });
                if wire_schemas().validate(schema, &v).is_ok() && parts_ok && !integral_floats(&v) {
                    panic!("{schema} accepts what the cluster cannot read ({e}): {v}");
                }
            }
            false
        }
    }
}

/// Whether `v` holds a float anywhere (JSON Schema counts `2.0` as an integer; the
/// decoder reads integers only, and the cluster writes integers as integers).
fn integral_floats(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(integral_floats),
        Value::Object(m) => m.values().any(integral_floats),
        _ => false,
    }
}

/// Every decoder the cluster runs on a peer's bytes, on one input (raw, or a valid
/// message mutated in one place). Invariants: no panic; what is read encodes to what its
/// published schema accepts, stably, and what the schema accepts is read; KV keys made from any names (a node's checked) keep
/// to the key alphabet and differ for different names.
pub fn messages(data: &[u8]) {
    let mut b = Bytes::new(data);
    let bytes: Vec<u8> = match b.below(4) {
        0 => b.rest().to_vec(),
        1 => arb::json(&mut b, 5, KEYS).to_string().into_bytes(),
        _ => {
            let mut seeds = examples();
            let i = b.below(seeds.len());
            let (_, mut v) = seeds.swap_remove(i);
            for _ in 0..=b.below(3) {
                mutate(&mut v, &mut b, 0);
            }
            v.to_string().into_bytes()
        }
    };
    decode_as::<AssignMsg>(&bytes);
    decode_as::<ReportMsg>(&bytes);
    decode_as::<BeatMsg>(&bytes);
    decode_as::<ControlMsg>(&bytes);
    decode_as::<WorkerRecord>(&bytes);
    decode_as::<ControlRecord>(&bytes);
    let _ = version_of(&bytes);
    decode_as::<ContractRecord>(&bytes);
    decode_as::<RunLease>(&bytes);
    decode_as::<ApiRequest>(&bytes);
    decode_as::<ApiReply>(&bytes);
    decode_as::<EffectMsg>(&bytes);
    decode_as::<EffectAckMsg>(&bytes);

    // Keys: a node and an instance id as a peer may name them.
    let text = String::from_utf8_lossy(&bytes);
    let (a, rest) = text.split_at(
        text.char_indices()
            .nth(text.len() / 3)
            .map_or(0, |(i, _)| i),
    );
    let (c, d) = rest.split_at(
        rest.char_indices()
            .nth(rest.len() / 2)
            .map_or(0, |(i, _)| i),
    );
    // A node's name is checked where it is configured (and in every record read back),
    // so only a checked name makes a key.
    let node = if check_node_name(a).is_ok() { a } else { "w-1" };
    let part = c.len();
    let worker = worker_key(node, part);
    assert_eq!(parse_worker_key(&worker), Some((node, part)), "{worker:?}");
    for k in [worker, contract_key(d)] {
        assert!(
            k.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_=.".contains(ch)),
            "a key out of the alphabet: {k:?}"
        );
    }
    if c != d {
        assert_ne!(
            contract_key(c),
            contract_key(d),
            "{c:?} and {d:?} share a key"
        );
    }
}
