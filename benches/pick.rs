//! Dispatch at scale: choosing the instance for a task among 1,000 instances of one
//! capability, each holding one task (so no instance is idle and a scan would visit them
//! all). `least_loaded` is the task owners' pick (the front of the capability's load
//! order, O(log n)); `candidates` lists every candidate sorted by load (O(n log n)), the
//! figure the pick used to cost in a scan.
//!
//! Run: `cargo bench --bench pick`

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use muster::{AgentDef, CapabilitySpec, Muster, Task};
use serde_json::json;

const INSTANCES: usize = 1_000;

fn bench(c: &mut Criterion) {
    let sys = actix::System::new();
    let m = sys.block_on(async {
        let m = Muster::builder()
            .schema("any", json!({}))
            .agent(
                AgentDef::function("w", |v, _| async move {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(v)
                })
                .capability(CapabilitySpec::new("work", "any", "any"))
                .replicas(INSTANCES)
                .concurrency(4),
            )
            .start()
            .await
            .expect("runtime starts");
        // One task on every instance: the least loaded is no longer the first one seen.
        for i in 0..INSTANCES {
            let t = Task::new("work", json!({ "i": i })).timeout(Duration::from_secs(7200));
            let _ = m.submit(t).await.expect("submitted");
        }
        while m.agents().iter().any(|a| a.in_flight == 0) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        m
    });
    let mut g = c.benchmark_group("pick_1000_instances");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("least_loaded", |b| {
        b.iter(|| std::hint::black_box(m.least_loaded("work", &[])))
    });
    g.bench_function("least_loaded_excluding_2", |b| {
        b.iter(|| std::hint::black_box(m.least_loaded("work", &["w#0", "w#1"])))
    });
    g.bench_function("candidates", |b| {
        b.iter(|| std::hint::black_box(m.candidates("work", &[])))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
