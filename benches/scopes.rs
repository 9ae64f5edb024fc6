//! What scopes cost: W1 (the chain of 3, delegated one task at a time) and a W2-style
//! fan-out (1,000 tasks in flight on 100 instances) with a distinct scope on every task,
//! beside the same workloads without scopes (the difference is the cost of acquiring and
//! releasing a scope per task); then 1,000 tasks contending for 10 scopes (each task
//! writes `concept:S{i % 10}`): throughput and p99 latency from submission to outcome,
//! beside the same 1,000 tasks without scopes.
//!
//! Run: `cargo bench --bench scopes`. The first two groups are criterion benches; the
//! contention figures are printed after them (criterion has no percentile of its own).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use muster::bench::workloads::{DiscardJournal, chain_runtime, echo_def, payload, runtime};
use muster::{Muster, Scope, Task};

fn scoped(cap: &str, i: u64, distinct: bool) -> Task {
    let t = Task::new(cap, payload(i));
    if !distinct {
        return t;
    }
    let scope =
        Scope::new([format!("w/{i}/{}/**", cap)], [format!("spec/{cap}.md")]).expect("valid scope");
    t.scope(scope)
}

async fn chain(m: &Muster, i: u64, with_scope: bool) {
    let mut v = std::sync::Arc::new(payload(i));
    for cap in ["bench.a", "bench.b", "bench.c"] {
        let mut t = scoped(cap, i, with_scope);
        t.input = v;
        let o = m.delegate(t).await.expect("accepted");
        assert!(o.is_completed(), "{o:?}");
        v = o.output.unwrap_or_default();
    }
}

fn w1(c: &mut Criterion) {
    let sys = actix::System::new();
    let mut g = c.benchmark_group("scopes_w1_chain_of_3");
    g.measurement_time(Duration::from_secs(4));
    let m = sys
        .block_on(chain_runtime(Arc::new(DiscardJournal::default())))
        .expect("runtime starts");
    for (name, with_scope) in [("no_scope", false), ("distinct_scope_per_task", true)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let m = m.clone();
                sys.block_on(async move {
                    let start = Instant::now();
                    for i in 0..iters {
                        chain(&m, i, with_scope).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

async fn fan_out_runtime(instances: usize) -> Muster {
    let m = runtime(Arc::new(DiscardJournal::default()))
        .await
        .expect("runtime starts");
    m.register(echo_def("echo", "bench.echo").replicas(instances))
        .await
        .expect("agents start");
    m
}

/// Submits `n` tasks at once; returns each one's latency (submission to outcome).
async fn burst(m: &Muster, n: u64, scope_of: impl Fn(u64) -> Option<Scope>) -> Vec<Duration> {
    let mut handles = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut t = Task::new("bench.echo", payload(i))
            .timeout(Duration::from_secs(600))
            .deadline(Duration::from_secs(600));
        if let Some(s) = scope_of(i) {
            t = t.scope(s);
        }
        handles.push((Instant::now(), m.submit(t).await.expect("accepted")));
    }
    let mut lat = Vec::with_capacity(handles.len());
    for (at, h) in handles {
        let o = h.outcome().await;
        assert!(o.is_completed(), "{o:?}");
        lat.push(at.elapsed());
    }
    lat
}

fn w2(c: &mut Criterion) {
    let sys = actix::System::new();
    let mut g = c.benchmark_group("scopes_fan_out_1000_in_flight");
    g.measurement_time(Duration::from_secs(6));
    g.sample_size(10);
    let m = sys.block_on(fan_out_runtime(100));
    for (name, with_scope) in [("no_scope", false), ("distinct_scope_per_task", true)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let m = m.clone();
                sys.block_on(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        burst(&m, 1000, |i| {
                            with_scope.then(|| {
                                Scope::new([format!("w2/{i}/**")], Vec::<String>::new())
                                    .expect("valid scope")
                            })
                        })
                        .await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

fn p(lat: &mut [Duration], q: f64) -> Duration {
    lat.sort();
    let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
    lat[i]
}

/// 1,000 tasks contending for 10 scopes, beside the same 1,000 without scopes: printed.
fn contention() {
    let sys = actix::System::new();
    let m = sys.block_on(fan_out_runtime(100));
    println!("\ncontention: 1,000 tasks, 100 instances; best of 5 rounds each");
    println!(
        "{:<28} {:>12} {:>12} {:>12}",
        "variant", "tasks/s", "p50", "p99"
    );
    for (name, scopes) in [("no scope", 0u64), ("10 write scopes", 10)] {
        let mut best: Option<(f64, Duration, Duration)> = None;
        for _ in 0..5 {
            let m = m.clone();
            let (wall, mut lat) = sys.block_on(async move {
                let start = Instant::now();
                let lat = burst(&m, 1000, |i| {
                    (scopes > 0).then(|| {
                        Scope::new([format!("concept:S{}", i % scopes)], Vec::<String>::new())
                            .expect("valid scope")
                    })
                })
                .await;
                (start.elapsed(), lat)
            });
            let rate = 1000.0 / wall.as_secs_f64();
            let (p50, p99) = (p(&mut lat, 0.50), p(&mut lat, 0.99));
            if best.is_none_or(|b| rate > b.0) {
                best = Some((rate, p50, p99));
            }
        }
        if let Some((rate, p50, p99)) = best {
            println!("{name:<28} {rate:>12.0} {p50:>12.2?} {p99:>12.2?}");
        }
    }
}

criterion_group!(benches, w1, w2);

fn main() {
    benches();
    contention();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
