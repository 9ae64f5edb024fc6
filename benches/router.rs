//! Router hot path: route + validate + deliver + reply to one function agent, beside raw
//! tokio mpsc+oneshot and raw actix `send` on the same 5-field payload (docs/workloads.md),
//! and a whole delegation (owner, lease, contract check, journal) for comparison.
//!
//! Run: `cargo bench --bench router`

use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};
use muster::{AgentDef, CapabilitySpec, Envelope, Muster, Recipient, Task};
use serde_json::{Value, json};

fn payload(i: u64) -> Value {
    json!({"task_id": i, "hops": 0, "last": "", "data": "hello world", "score": 0.5})
}

fn schema() -> Value {
    json!({"type": "object",
           "required": ["task_id", "hops", "last", "data", "score"],
           "properties": {"task_id": {"type": "integer"}, "hops": {"type": "integer"},
                          "last": {"type": "string"}, "data": {"type": "string"},
                          "score": {"type": "number"}}})
}

fn hop(mut v: Value, name: &str) -> Value {
    let h = v["hops"].as_i64().unwrap_or(0) + 1;
    v["hops"] = json!(h);
    v["last"] = json!(name);
    v
}

struct Echo;
impl Actor for Echo {
    type Context = Context<Self>;
}
#[derive(Message)]
#[rtype(result = "Value")]
struct Req(Value);
impl Handler<Req> for Echo {
    type Result = MessageResult<Req>;
    fn handle(&mut self, m: Req, _: &mut Self::Context) -> Self::Result {
        MessageResult(hop(m.0, "echo"))
    }
}

fn bench(c: &mut Criterion) {
    let sys = actix::System::new();
    let mut g = c.benchmark_group("request_reply");
    g.measurement_time(Duration::from_secs(4));

    // raw tokio: mpsc + oneshot between two tasks on the same thread
    g.bench_function("raw_tokio_mpsc_oneshot", |b| {
        b.iter_custom(|iters| {
            sys.block_on(async move {
                let (tx, mut rx) =
                    tokio::sync::mpsc::channel::<(Value, tokio::sync::oneshot::Sender<Value>)>(64);
                actix::spawn(async move {
                    while let Some((v, r)) = rx.recv().await {
                        let _ = r.send(hop(v, "echo"));
                    }
                });
                let start = Instant::now();
                for i in 0..iters {
                    let (rt, rr) = tokio::sync::oneshot::channel();
                    let _ = tx.send((payload(i), rt)).await;
                    let _ = rr.await;
                }
                start.elapsed()
            })
        })
    });

    g.bench_function("raw_actix_send", |b| {
        b.iter_custom(|iters| {
            sys.block_on(async move {
                let addr = Echo.start();
                let start = Instant::now();
                for i in 0..iters {
                    let _ = addr.send(Req(payload(i))).await;
                }
                start.elapsed()
            })
        })
    });

    let muster = sys.block_on(async {
        Muster::builder()
            .schema("bench-payload", schema())
            .agent(
                AgentDef::function("echo", |v, ctx| async move { Ok(hop(v, &ctx.agent)) })
                    .capability(CapabilitySpec::new(
                        "echo",
                        "bench-payload",
                        "bench-payload",
                    )),
            )
            .start()
            .await
            .expect("runtime starts")
    });

    let m = muster.clone();
    g.bench_function("muster_send_route_validate_deliver_reply", |b| {
        b.iter_custom(|iters| {
            let m = m.clone();
            sys.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    let env = Envelope::new(
                        "echo",
                        Recipient::Capability("echo".into()),
                        "bench-payload",
                        payload(i),
                    );
                    let r = m.send(env).await;
                    assert!(r.is_ok());
                }
                start.elapsed()
            })
        })
    });

    // The same runtime with a journal that keeps nothing: what retaining every event costs.
    #[derive(Debug)]
    struct Discard(std::sync::atomic::AtomicU64);
    impl muster::Journal for Discard {
        fn append(&self, _at: u64, _e: muster::Event) -> u64 {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
        }
        fn read_after(&self, _after: u64) -> Vec<muster::Record> {
            Vec::new()
        }
        fn len(&self) -> u64 {
            self.0.load(std::sync::atomic::Ordering::Relaxed)
        }
    }
    let bare = sys.block_on(async {
        Muster::builder()
            .schema("bench-payload", schema())
            .journal(std::sync::Arc::new(Discard(Default::default())))
            .agent(
                AgentDef::function("echo", |v, ctx| async move { Ok(hop(v, &ctx.agent)) })
                    .capability(CapabilitySpec::new(
                        "echo",
                        "bench-payload",
                        "bench-payload",
                    )),
            )
            .start()
            .await
            .expect("runtime starts")
    });
    g.bench_function("muster_delegate_journal_discarded", |b| {
        b.iter_custom(|iters| {
            let m = bare.clone();
            sys.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    let o = m.delegate(Task::new("echo", payload(i))).await;
                    assert!(o.map(|o| o.is_completed()).unwrap_or(false));
                }
                start.elapsed()
            })
        })
    });

    let m = muster.clone();
    g.bench_function("muster_delegate", |b| {
        b.iter_custom(|iters| {
            let m = m.clone();
            sys.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    let o = m.delegate(Task::new("echo", payload(i))).await;
                    assert!(o.map(|o| o.is_completed()).unwrap_or(false));
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
