//! The cost of reading a peer's message through `cluster::wire::decode` (JSON to a
//! `Value`, its published schema, then the type) against serde alone (what the cluster did
//! before the schema check), on the control node's hot paths: an alive beat (every
//! TTL/4 per attempt in flight), an attempt report (one per attempt) and a worker's record
//! of 1,000 instances (every TTL/4 per worker).
//!
//! Run: `cargo bench --bench wire_decode`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use muster::cluster::wire::{
    self, BeatMsg, ContractRecord, InstanceRecord, ReportMsg, WireMessage, WorkerRecord,
};
use muster::{AgentState, CapabilitySpec, SchemaStore};
use serde_json::json;
use uuid::Uuid;

fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let beat = BeatMsg {
        instance: "echo#0@w1".into(),
        task_id: Uuid::now_v7(),
        epoch: 2,
        agent: false,
    };
    let report = ReportMsg {
        task_id: Uuid::now_v7(),
        epoch: 2,
        instance: "echo#0@w1".into(),
        result: Ok(json!({"text": "x".repeat(256), "n": 7})),
        usage: None,
    };
    let store = SchemaStore::new();
    store
        .add("obj", json!({"type": "object"}))
        .expect("a schema");
    let contract = ContractRecord::of(
        &CapabilitySpec::new("echo", "obj", "obj")
            .compile(&store)
            .expect("a contract"),
    );
    let record = WorkerRecord {
        wire: wire::WIRE_VERSION,
        node: "w1".into(),
        part: 0,
        contracts: vec![contract],
        instances: (0..1000)
            .map(|i| InstanceRecord {
                id: format!("echo#{i}"),
                agent: "echo".into(),
                generation: 0,
                concurrency: 1,
                capacity: 65,
                state: AgentState::Ready,
                load: i % 3,
                capabilities: vec!["echo".into()],
            })
            .collect(),
    };
    vec![
        ("beat", serde_json::to_vec(&beat).expect("json")),
        ("report", serde_json::to_vec(&report).expect("json")),
        (
            "worker_record_1000",
            serde_json::to_vec(&record).expect("json"),
        ),
    ]
}

fn read<T: WireMessage>(c: &mut Criterion, name: &str, bytes: &[u8]) {
    let mut g = c.benchmark_group(format!("wire_{name}"));
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    // Compile the schemas once, outside the measurement.
    wire::decode::<T>(bytes).map(drop).expect("a valid message");
    g.bench_function("serde_only", |b| {
        b.iter(|| serde_json::from_slice::<T>(black_box(bytes)).map(drop))
    });
    g.bench_function("wire_decode", |b| {
        b.iter(|| wire::decode::<T>(black_box(bytes)).map(drop))
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    for (name, bytes) in messages() {
        match name {
            "beat" => read::<BeatMsg>(c, name, &bytes),
            "report" => read::<ReportMsg>(c, name, &bytes),
            _ => read::<WorkerRecord>(c, name, &bytes),
        }
    }
}

criterion_group!(benches, decode);
criterion_main!(benches);
