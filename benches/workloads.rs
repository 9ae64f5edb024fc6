//! The hot paths of `muster bench` under criterion: the W1 chain (workflow engine and
//! chained delegates, in-memory and discarding journals), W3 request-response and W4
//! recovery, each beside the raw tokio and raw actix baselines on the same payload.
//! The fixtures are the ones `muster bench` uses (`muster::bench`).
//!
//! Run: `cargo bench --bench workloads`. The in-memory journal keeps every event, so a
//! long criterion run grows it by millions of events; the `journal_discarded` variants
//! show what that retention costs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use muster::bench::baseline::{self, ActixAgents, TokioAgents};
use muster::bench::workloads::{
    DiscardJournal, chain_by_delegate, chain_by_workflow, chain_runtime, echo_def, payload,
    recovery_runtime, runtime,
};
use muster::{MemoryJournal, Task};

fn w1(c: &mut Criterion) {
    let sys = actix::System::new();
    let mut g = c.benchmark_group("w1_chain_of_3");
    g.measurement_time(Duration::from_secs(4));

    let tokio = sys.block_on(async { TokioAgents::start(&["A", "B", "C"]) });
    g.bench_function("raw_tokio", |b| {
        b.iter_custom(|iters| {
            let t = tokio.clone();
            sys.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    assert!(t.chain(payload(i)).await.is_some());
                }
                start.elapsed()
            })
        })
    });
    let actix = sys.block_on(async { ActixAgents::start(&["A", "B", "C"]) });
    g.bench_function("raw_actix", |b| {
        b.iter_custom(|iters| {
            let a = actix.clone();
            sys.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    assert!(a.chain(payload(i)).await.is_some());
                }
                start.elapsed()
            })
        })
    });

    let m = sys
        .block_on(chain_runtime(Arc::new(MemoryJournal::default())))
        .expect("runtime starts");
    let wf = muster::bench::workloads::chain_workflow(&m).expect("workflow parses");
    g.bench_function("muster_workflow", |b| {
        b.iter_custom(|iters| {
            let (m, wf) = (m.clone(), wf.clone());
            sys.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    chain_by_workflow(&m, &wf, i).await.expect("completes");
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("muster_delegate", |b| {
        b.iter_custom(|iters| {
            let m = m.clone();
            sys.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    chain_by_delegate(&m, i).await.expect("completes");
                }
                start.elapsed()
            })
        })
    });
    let bare = sys
        .block_on(chain_runtime(Arc::new(DiscardJournal::default())))
        .expect("runtime starts");
    g.bench_function("muster_delegate_journal_discarded", |b| {
        b.iter_custom(|iters| {
            let m = bare.clone();
            sys.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    chain_by_delegate(&m, i).await.expect("completes");
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

fn w3(c: &mut Criterion) {
    let sys = actix::System::new();
    let mut g = c.benchmark_group("w3_request_response");
    g.measurement_time(Duration::from_secs(4));
    let tokio = sys.block_on(async { TokioAgents::start(&["echo"]) });
    g.bench_function("raw_tokio", |b| {
        b.iter_custom(|iters| {
            let t = tokio.clone();
            sys.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    assert!(t.call(0, payload(i)).await.is_some());
                }
                start.elapsed()
            })
        })
    });
    let actix = sys.block_on(async { ActixAgents::start(&["echo"]) });
    g.bench_function("raw_actix", |b| {
        b.iter_custom(|iters| {
            let a = actix.clone();
            sys.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    assert!(a.call(0, payload(i)).await.is_some());
                }
                start.elapsed()
            })
        })
    });
    for (name, journal) in [
        (
            "muster_delegate",
            Arc::new(MemoryJournal::default()) as Arc<dyn muster::Journal>,
        ),
        (
            "muster_delegate_journal_discarded",
            Arc::new(DiscardJournal::default()),
        ),
    ] {
        let m = sys
            .block_on(async {
                let m = runtime(journal).await?;
                m.register(echo_def("echo", "bench.echo")).await?;
                Ok::<_, muster::bench::BenchError>(m)
            })
            .expect("runtime starts");
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let m = m.clone();
                sys.block_on(async move {
                    let start = Instant::now();
                    for i in 0..iters {
                        let o = m.delegate(Task::new("bench.echo", payload(i))).await;
                        assert!(o.map(|o| o.is_completed()).unwrap_or(false));
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

/// W4: each iteration is one task whose first agent panics; the baselines are one panic
/// and one re-send each. (The figure here is the whole task; `muster bench` reports the
/// crash-to-restart interval measured inside the agents.)
fn w4(c: &mut Criterion) {
    let sys = actix::System::new();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut g = c.benchmark_group("w4_recovery");
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("raw_tokio_panic_then_resend", |b| {
        b.iter_custom(|iters| {
            sys.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    assert!(baseline::tokio_recovery_once(i).await.is_some());
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("raw_actix_panic_then_resend", |b| {
        b.iter_custom(|iters| {
            sys.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    assert!(baseline::actix_recovery_once(i).await.is_some());
                }
                start.elapsed()
            })
        })
    });
    let (m, crashed, started) = sys.block_on(recovery_runtime()).expect("runtime starts");
    g.bench_function("muster_task_with_failover", |b| {
        b.iter_custom(|iters| {
            let m = m.clone();
            sys.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    let o = m.delegate(Task::new("bench.recover", payload(i))).await;
                    assert!(o.map(|o| o.is_completed()).unwrap_or(false));
                }
                start.elapsed()
            })
        })
    });
    crashed.lock().clear();
    started.lock().clear();
    g.finish();
    std::panic::set_hook(previous);
}

criterion_group!(benches, w1, w3, w4);
criterion_main!(benches);
