//! `muster serve` over HTTP against the same runtime in process, in one run.
//!
//! 1. Tasks: 64 concurrent clients each `POST /v1/tasks` to an echo function agent and
//!    `GET /v1/tasks/{id}` until it is completed; beside them, the same number of tasks
//!    delegated in process with 64 in flight. Reports tasks per second and the p50 / p99 of
//!    submission to completion.
//! 2. Fan-out: 100 clients follow `GET /v1/events` while tasks run in process; reports
//!    the records every subscriber received per second, and the p50 / p99 of the time
//!    from the last task's completion to each subscriber's receipt of the last record.
//!
//! Run: `cargo bench --bench serve_http` (prints one JSON document). `SERVE_BENCH_TASKS`
//! sets the HTTP task count (default 6,400), `SERVE_BENCH_FANOUT_TASKS` the fan-out's
//! (default 10,000).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster::journal::{Journal, MemoryJournal, TapJournal};
use muster::serve::{ServeConfig, Token, Tokens, serve};
use muster::{AgentDef, CapabilitySpec, Muster, Task};
use serde_json::{Value, json};

const TOKEN: &str = "bench-token-0123456789abcdef";
const CLIENTS: usize = 64;
const SUBSCRIBERS: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<Duration>, total: Duration) -> Value {
    v.sort();
    json!({
        "tasks": v.len(),
        "tasks_per_s": v.len() as f64 / total.as_secs_f64(),
        "p50_us": percentile(&v, 0.5).as_secs_f64() * 1e6,
        "p99_us": percentile(&v, 0.99).as_secs_f64() * 1e6,
    })
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

async fn json_of(resp: reqwest::Response) -> Value {
    let bytes = resp.bytes().await.unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("an HTTP client")
}

/// One HTTP client's loop: submit, then look until completed.
async fn http_tasks(client: reqwest::Client, base: String, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        let resp = client
            .post(format!("{base}/v1/tasks"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(json!({"capability": "echo", "input": {"i": i}}).to_string())
            .send()
            .await
            .expect("POST /v1/tasks");
        assert_eq!(resp.status().as_u16(), 202, "POST /v1/tasks");
        let body = json_of(resp).await;
        let id = body["task"].as_str().expect("a task id").to_string();
        loop {
            let doc = json_of(
                client
                    .get(format!("{base}/v1/tasks/{id}"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .expect("GET /v1/tasks/{id}"),
            )
            .await;
            match doc["status"].as_str() {
                Some("completed") => break,
                Some("escalated" | "cancelled") => panic!("task {id} ended {doc}"),
                _ => tokio::task::yield_now().await,
            }
        }
        out.push(t0.elapsed());
    }
    out
}

/// One event-stream follower: reads until it has seen record `last` (set once known).
async fn follow(
    client: reqwest::Client,
    url: String,
    last: tokio::sync::watch::Receiver<u64>,
) -> (u64, Instant) {
    let mut resp = client
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /v1/events");
    let mut text = String::new();
    let mut seen = 0u64;
    let mut count = 0u64;
    loop {
        let target = *last.borrow();
        if target > 0 && seen >= target {
            return (count, Instant::now());
        }
        let Ok(Some(chunk)) = resp.chunk().await else {
            return (count, Instant::now());
        };
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ")
                    && let Ok(id) = v.parse::<u64>()
                {
                    seen = seen.max(id);
                    count += 1;
                }
            }
        }
    }
}

/// Runs `f` on a thread of its own; the runtime's thread waits without blocking (it
/// serves the API meanwhile).
fn on_own_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    async move { rx.await.expect("the thread finished") }
}

fn main() {
    let http_n = env_count("SERVE_BENCH_TASKS", 6_400).max(CLIENTS);
    let fanout_n = env_count("SERVE_BENCH_FANOUT_TASKS", 10_000).max(1);
    let sys = actix::System::new();
    sys.block_on(async move {
        let journal = Arc::new(TapJournal::new(
            Arc::new(MemoryJournal::default()) as Arc<dyn Journal>,
            4096,
        ));
        let muster = Muster::builder()
            .journal(journal.clone())
            .schema("obj", json!({"type": "object"}))
            .agent(
                AgentDef::function("echo", |input: Value, _ctx| async move { Ok(input) })
                    .capability(CapabilitySpec::new("echo", "obj", "obj"))
                    .replicas(4)
                    .concurrency(64),
            )
            .start()
            .await
            .expect("the runtime starts");
        let config = ServeConfig {
            workflows: BTreeMap::new(),
            groups: Vec::new(),
            tokens: Tokens::admin(Token::parse(TOKEN, "bench").expect("a valid token")),
            // Every task the bench sends is in flight at once at most: no 429s.
            limits: muster::serve::admission::Limits {
                max_runs: muster::serve::admission::MAX_BOUND,
                max_tasks: muster::serve::admission::MAX_BOUND,
            },
            resume: Vec::new(),
            traces: None,
            failover: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = actix::spawn(serve(
            muster.clone(),
            journal.clone(),
            config,
            listener,
            async move {
                let _ = stop_rx.await;
            },
        ));

        eprintln!("serving on {base}; {http_n} tasks over HTTP");
        // 1. HTTP tasks, the clients on threads of their own (as other programs would be).
        let per_client = http_n / CLIENTS;
        let client_base = base.clone();
        let (http_lat, http_total) = on_own_thread(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a client runtime");
            rt.block_on(async move {
                let client = client();
                let t0 = Instant::now();
                let joins: Vec<_> = (0..CLIENTS)
                    .map(|_| {
                        tokio::spawn(http_tasks(client.clone(), client_base.clone(), per_client))
                    })
                    .collect();
                let mut all = Vec::new();
                for j in joins {
                    all.extend(j.await.expect("a client"));
                }
                (all, t0.elapsed())
            })
        })
        .await;

        eprintln!("HTTP done; the same in process");
        // The same tasks in process, 64 in flight.
        let t0 = Instant::now();
        let mut inproc = Vec::with_capacity(http_n);
        let mut left = per_client * CLIENTS;
        while left > 0 {
            let batch = left.min(CLIENTS);
            left -= batch;
            let futs = (0..batch).map(|i| {
                let m = muster.clone();
                async move {
                    let t = Instant::now();
                    let o = m
                        .delegate(Task::new("echo", json!({"i": i})))
                        .await
                        .expect("delegated");
                    assert!(o.is_completed());
                    t.elapsed()
                }
            });
            inproc.extend(futures::future::join_all(futs).await);
        }
        let inproc_total = t0.elapsed();

        // 2. Fan-out: subscribers follow the stream from now on while tasks run in process.
        let from = journal.len();
        let (last_tx, last_rx) = tokio::sync::watch::channel(0u64);
        let url = format!("{base}/v1/events");
        let followers = on_own_thread(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a client runtime");
            rt.block_on(async move {
                let client = client();
                let joins: Vec<_> = (0..SUBSCRIBERS)
                    .map(|_| {
                        let url = format!("{url}?after={from}");
                        tokio::spawn(follow(client.clone(), url, last_rx.clone()))
                    })
                    .collect();
                let mut out = Vec::new();
                for j in joins {
                    out.push(j.await.expect("a follower"));
                }
                out
            })
        });
        // Let the subscribers connect before the tasks start.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = Instant::now();
        let mut left = fanout_n;
        while left > 0 {
            let batch = left.min(CLIENTS);
            left -= batch;
            let futs = (0..batch).map(|i| {
                let m = muster.clone();
                async move { m.delegate(Task::new("echo", json!({"i": i}))).await }
            });
            for o in futures::future::join_all(futs).await {
                assert!(o.expect("delegated").is_completed());
            }
        }
        let tasks_done = Instant::now();
        let last = journal.len();
        let _ = last_tx.send(last);
        // A nudge, so that a follower waiting for its next chunk sees the target.
        muster.delegate(Task::new("echo", json!({}))).await.ok();
        let got = followers.await;
        let fanout_wall = t0.elapsed();
        let counts: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
        let mut lags: Vec<Duration> = got
            .iter()
            .map(|(_, at)| at.saturating_duration_since(tasks_done))
            .collect();
        lags.sort();
        let records = last - from;
        let delivered: u64 = got.iter().map(|(n, _)| *n).sum();

        let _ = stop_tx.send(());
        let _ = server.await;
        let doc = json!({
            "http": summary(http_lat, http_total),
            "in_process": summary(inproc, inproc_total),
            "clients": CLIENTS,
            "fanout": {
                "subscribers": SUBSCRIBERS,
                "tasks": fanout_n,
                "records": records,
                "delivered": delivered,
                "per_subscriber_min": counts.iter().min(),
                "per_subscriber_max": counts.iter().max(),
                "records_per_s_per_subscriber": records as f64 / fanout_wall.as_secs_f64(),
                "delivered_per_s": delivered as f64 / fanout_wall.as_secs_f64(),
                "lag_after_last_task_p50_ms": percentile(&lags, 0.5).as_secs_f64() * 1e3,
                "lag_after_last_task_p99_ms": percentile(&lags, 0.99).as_secs_f64() * 1e3,
            },
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        muster.shutdown().await;
    });
}
