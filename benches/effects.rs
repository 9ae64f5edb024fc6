//! What `ctx.effect` costs per call (issue 26): one task's ledger, one effect run through
//! `TaskContext::effect` (journal `effect_started`, wait until it is written, run the
//! closure, journal `effect_done`), against the same closure called directly. With the
//! memory journal the difference is the bookkeeping; with SQLite (relaxed) it is one group
//! commit, which the effect waits for before it runs.
//!
//! Run: `cargo bench --bench effects` (criterion reports the time per task of one effect;
//! `direct` is the closure alone, with the ledger made as a task's owner makes it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use muster::agents::effects::Ledger;
use muster::clock::Clock;
use muster::journal::{Durability, Journal, MemoryJournal, Recorder, SqliteJournal};
use muster::{AgentError, TaskContext};
use uuid::Uuid;

/// Runs `iters` tasks of one effect each on `journal`: through `ctx.effect` when
/// `through`, else the closure alone. Returns the elapsed time.
fn tasks(
    rt: &tokio::runtime::Runtime,
    journal: Arc<dyn Journal>,
    iters: u64,
    through: bool,
) -> Duration {
    let recorder = Recorder::new(journal, Clock::system());
    let deadline = rt.block_on(async { tokio::time::Instant::now() }) + Duration::from_secs(3600);
    let start = Instant::now();
    rt.block_on(async {
        for _ in 0..iters {
            let task = Uuid::now_v7();
            let ledger = Arc::new(Ledger::new(task, recorder.clone(), Vec::new(), None));
            let ctx =
                TaskContext::standalone(task, 1, "pay", "pay#0", deadline).with_ledger(ledger);
            let charge = || async { Ok::<u64, AgentError>(std::hint::black_box(1700)) };
            let v = if through {
                let key = ctx.effect_key("refund");
                ctx.effect("refund", Some(&key), charge)
                    .await
                    .expect("the effect runs")
            } else {
                charge().await.expect("the closure runs")
            };
            std::hint::black_box(v);
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut g = c.benchmark_group("effect_per_task");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    g.warm_up_time(Duration::from_secs(1));
    for (name, through) in [("memory/direct", false), ("memory/ctx.effect", true)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let j: Arc<dyn Journal> = Arc::new(MemoryJournal::default());
                tasks(&rt, j, iters, through)
            })
        });
    }
    g.bench_function("sqlite_relaxed/ctx.effect", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("temp dir");
            let j = Arc::new(
                SqliteJournal::open(dir.path().join("journal.db"), Durability::Relaxed)
                    .expect("open the journal"),
            );
            let took = tasks(&rt, j.clone(), iters, true);
            j.close().expect("close");
            took
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
