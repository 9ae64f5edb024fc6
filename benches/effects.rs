//! What `ctx.effect` costs per call (issue 26): one task's ledger, one effect run through
//! `TaskContext::effect` (journal `effect_started`, wait until it is written, run the
//! closure, journal `effect_done`), against the same closure called directly. With the
//! memory journal the difference is the bookkeeping; with SQLite (relaxed) it is one group
//! commit, which the effect waits for before it runs.
//!
//! Run: `cargo bench --bench effects` (criterion reports the time per task of one effect;
//! `direct` is the closure alone, with the ledger made as a task's owner makes it).
//!
//! The `runtime_sqlite` group runs whole tasks through a runtime journaling to SQLite
//! (relaxed), a function agent doing one `ctx.effect` per task or none, one task at a time
//! and 64 at once; after each it prints the journal's group commits per task (from its
//! write statistics), which says whether the effect's commit is shared with the attempt's
//! other records.

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
    runtime_sqlite(c);
}

/// Runs `iters` tasks through a runtime journaling to a fresh SQLite file, `in_flight` at
/// once, each doing one `ctx.effect` when `effect`; the elapsed time and the journal's
/// group commits.
fn runtime_tasks(iters: u64, in_flight: usize, effect: bool) -> (Duration, u64) {
    use muster::{AgentDef, CapabilitySpec, Muster, Task};
    use serde_json::{Value, json};
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = Arc::new(
        SqliteJournal::open(dir.path().join("journal.db"), Durability::Relaxed)
            .expect("open the journal"),
    );
    let sys = actix::System::new();
    let (took, commits) = sys.block_on(async {
        let def = AgentDef::function("pay", move |input: Value, ctx: TaskContext| async move {
            if effect {
                let key = ctx.effect_key("refund");
                let v: u64 = ctx
                    .effect("refund", Some(&key), || async {
                        Ok::<u64, AgentError>(std::hint::black_box(1700))
                    })
                    .await
                    .map_err(AgentError::from)?;
                std::hint::black_box(v);
            }
            Ok(input)
        })
        .capability(CapabilitySpec::new("pay", "obj", "obj"));
        let m = Muster::builder()
            .schema("obj", json!({"type": "object"}))
            .journal(journal.clone())
            .agent(def.replicas(in_flight))
            .start()
            .await
            .expect("the runtime starts");
        let before = journal.write_stats().map_or(0, |s| s.commits);
        let start = Instant::now();
        let mut left = iters;
        while left > 0 {
            let n = left.min(in_flight as u64);
            left -= n;
            let batch = (0..n).map(|i| m.delegate(Task::new("pay", json!({"i": i}))));
            for r in futures::future::join_all(batch).await {
                r.expect("the task completes");
            }
        }
        let took = start.elapsed();
        let commits = journal.write_stats().map_or(0, |s| s.commits) - before;
        m.shutdown().await;
        (took, commits)
    });
    journal.close().expect("close");
    (took, commits)
}

fn runtime_sqlite(c: &mut Criterion) {
    let mut g = c.benchmark_group("runtime_sqlite_task");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.warm_up_time(Duration::from_secs(1));
    for in_flight in [1usize, 64] {
        for effect in [false, true] {
            let name = format!(
                "{}/{}",
                if in_flight == 1 {
                    "sequential"
                } else {
                    "64_in_flight"
                },
                if effect { "ctx.effect" } else { "no_effect" }
            );
            let totals = std::cell::Cell::new((0u64, 0u64));
            g.bench_function(&name, |b| {
                b.iter_custom(|iters| {
                    let (took, commits) = runtime_tasks(iters, in_flight, effect);
                    let (t, k) = totals.get();
                    totals.set((t + iters, k + commits));
                    took
                })
            });
            let (tasks, commits) = totals.get();
            println!(
                "runtime_sqlite_task/{name}: {:.3} group commits per task ({commits} over {tasks} tasks)",
                commits as f64 / tasks.max(1) as f64
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
