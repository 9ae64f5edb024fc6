//! Journal appends per second: in memory, SQLite relaxed, SQLite sync. One iteration is
//! 100k appends of a `lease_granted` event, then a flush (so the SQLite figures include
//! getting every record into the file, in group commits), on a fresh journal each time.
//!
//! Run: `cargo bench --bench journal` (criterion reports the time per 100k appends and
//! the throughput in elements/s, i.e. appends/s).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use muster::journal::{Durability, Event, Journal, MemoryJournal, SqliteJournal};
use uuid::Uuid;

const APPENDS: u64 = 100_000;

fn lease(task: Uuid, envelope: Uuid, i: u64) -> Event {
    Event::LeaseGranted {
        task,
        agent: "tester#0".into(),
        epoch: i,
        attempt: 1,
        envelope,
        // The record alone (a lease journaled before it carried its envelope).
        routed: None,
    }
}

/// Appends `APPENDS` events to `j`, then `finish` (a flush); returns the elapsed time.
fn run(j: &dyn Journal, finish: impl FnOnce()) -> Duration {
    let (task, envelope) = (Uuid::now_v7(), Uuid::now_v7());
    let start = Instant::now();
    for i in 0..APPENDS {
        j.append(1_767_225_600_000 + i, lease(task, envelope, i));
    }
    finish();
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("journal_append_100k");
    g.throughput(Throughput::Elements(APPENDS));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.warm_up_time(Duration::from_secs(1));

    g.bench_function("memory", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let j = MemoryJournal::default();
                    run(&j, || {})
                })
                .sum()
        })
    });

    for (name, durability) in [
        ("sqlite_relaxed", Durability::Relaxed),
        ("sqlite_sync", Durability::Sync),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let dir = tempfile::tempdir().expect("temp dir");
                        let j = SqliteJournal::open(dir.path().join("journal.db"), durability)
                            .expect("open the journal");
                        let took = run(&j, || j.flush().expect("flush"));
                        j.close().expect("close");
                        took
                    })
                    .sum()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
