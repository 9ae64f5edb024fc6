//! What telemetry costs its follower: `Metrics::observe` and `Traces::observe` per journal
//! record (a task's submission, lease and result, three records each; traces exported to
//! the SDK's in-memory exporter by its simple processor), and one `Metrics::render` with
//! 1,000 agent instances registered (the cost of a `/metrics` scrape).
//!
//! Run: `cargo bench --bench telemetry`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use muster::journal::{Event, Record};
use muster::telemetry::{Metrics, Traces};
use muster::{AgentDef, CapabilitySpec, Muster};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use serde_json::json;
use uuid::Uuid;

/// `tasks` tasks of three records each, numbered from `seq`.
fn records(seq: u64, tasks: u64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut seq = seq;
    for i in 0..tasks {
        let task = Uuid::from_u128(u128::from(seq) << 64 | u128::from(i));
        let events = [
            Event::TaskSubmitted {
                task,
                capability: "bench".into(),
                correlation: task,
                input: json!({}).into(),
                attempts: 3,
                timeout_ms: 30_000,
                sender: String::new(),
            },
            Event::LeaseGranted {
                task,
                agent: format!("bench#{}", i % 100).into(),
                epoch: 1,
                attempt: 1,
                envelope: task,
                routed: None,
            },
            Event::ResultAccepted {
                task,
                agent: format!("bench#{}", i % 100).into(),
                epoch: 1,
                output: json!({}).into(),
            },
        ];
        for event in events {
            seq += 1;
            out.push(Record {
                seq,
                at_ms: seq,
                event,
            });
        }
    }
    out
}

fn observe(c: &mut Criterion) {
    const TASKS: u64 = 1_000;
    let mut g = c.benchmark_group("telemetry_observe");
    g.measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(TASKS * 3));
    g.bench_function("metrics_per_record", |b| {
        let metrics = Metrics::default();
        let mut next = 0;
        b.iter_batched(
            || {
                let r = records(next, TASKS);
                next += TASKS * 3;
                r
            },
            |batch| {
                for r in &batch {
                    metrics.observe(r);
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("traces_per_record", |b| {
        let exporter = InMemorySpanExporter::default();
        let mut traces = Traces::with_exporter(exporter.clone());
        let mut next = 0;
        b.iter_batched(
            || {
                exporter.reset();
                let r = records(next, TASKS);
                next += TASKS * 3;
                r
            },
            |batch| {
                for r in &batch {
                    traces.observe(r);
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn render(c: &mut Criterion) {
    let sys = actix::System::new();
    let m = sys
        .block_on(
            Muster::builder()
                .schema("any", json!({}))
                .agent(
                    AgentDef::function("bench", |v, _| async move { Ok(v) })
                        .capability(CapabilitySpec::new("bench", "any", "any"))
                        .replicas(1_000),
                )
                .start(),
        )
        .expect("runtime starts");
    let metrics = Metrics::default();
    for r in records(0, 1_000) {
        metrics.observe(&r);
    }
    let mut g = c.benchmark_group("telemetry_render");
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("render_1000_agents", |b| {
        b.iter(|| metrics.render(&m).len())
    });
    g.finish();
    sys.block_on(m.shutdown());
}

criterion_group!(benches, observe, render);
criterion_main!(benches);
