//! A node with history: how `muster serve` answers as its journal grows.
//!
//! For each size N (default 10,000 and 100,000 finished runs; `NODE_HISTORY_SIZES=10000,
//! 100000,1000000` for the issue's three), a SQLite journal is made holding 200 runs
//! waiting at a gate (the oldest) and then N finished runs of the same gated workflow
//! (9 records each). Then, in one process: the node is started on it (open the journal,
//! list the unfinished runs from the index, serve, resume them; timed until `GET /readyz`
//! answers 200), and `SAMPLES` requests (default 200) of each route are timed one at a
//! time: `GET /v1/runs?limit=50`, `GET /v1/runs/{id}` of the oldest finished run, and a
//! gate decision (`POST /v1/runs/{id}/gates/ask`, each on another waiting run).
//!
//! With `NODE_HISTORY_COMPACT=1`, each journal is then compacted as `muster journal compact
//! --finished-before 0s --archive F` would (every finished run removed and archived, the
//! 200 waiting runs kept), timed, with the file's size before and after.
//!
//! Run: `cargo bench --bench node_history` (prints one JSON document; figures in
//! BENCHMARKS.md, "A node with history"). The target: each figure at 10^6 within 2x of
//! its value at 10^4, start within 5 s at 10^6.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster::journal::{Durability, Event, Journal, SqliteJournal, TapJournal};
use muster::serve::{ServeConfig, Token, Tokens, serve, unfinished_runs};
use muster::workflow::Workflow;
use muster::{AgentDef, CapabilitySpec, Muster};
use serde_json::{Value, json};
use uuid::Uuid;

const TOKEN: &str = "bench-token-0123456789abcdef";
const WAITING: usize = 200;

const GATED: &str = r#"
name = "gated"
input = "any"
start = "ask"
[steps.ask]
gate = "Ship it?"
on_approve = "ship"
[steps.ship]
capability = "ship"
timeout = "5s"
attempts = 1
on_exhausted = "fail"
next = "done"
[steps.done]
terminal = "done"
"#;

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

fn percentiles(mut v: Vec<Duration>) -> Value {
    v.sort();
    let at = |p: f64| {
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    json!({"n": v.len(), "p50_ms": at(0.5), "p99_ms": at(0.99)})
}

/// A journal of `WAITING` gate-waiting runs, then `finished` finished runs; returns the
/// waiting runs and the oldest finished run.
fn make(path: &Path, finished: usize) -> (Vec<Uuid>, Uuid) {
    let j = SqliteJournal::open(path, Durability::Relaxed).expect("a new journal");
    let file = "gated.toml".to_string();
    let start = |j: &SqliteJournal, run: Uuid, at: u64| {
        j.append(
            at,
            Event::RunStarted {
                run,
                workflow: "gated".into(),
                file: file.clone(),
                input: json!({}),
            },
        );
        j.append(
            at,
            Event::StepEntered {
                run,
                step: "ask".into(),
                visit: 1,
            },
        );
        j.append(
            at,
            Event::GateWaiting {
                run,
                gate: "ask".into(),
                question: "Ship it?".into(),
            },
        );
    };
    let waiting: Vec<Uuid> = (0..WAITING).map(|_| Uuid::now_v7()).collect();
    for (i, run) in waiting.iter().enumerate() {
        start(&j, *run, i as u64);
    }
    let mut oldest = None;
    let output = Arc::new(json!({"shipped": true}));
    for i in 0..finished {
        let run = Uuid::now_v7();
        oldest.get_or_insert(run);
        let at = 1_000 + i as u64;
        start(&j, run, at);
        j.append(
            at,
            Event::GateDecided {
                run,
                gate: "ask".into(),
                approved: true,
                reason: String::new(),
            },
        );
        j.append(
            at,
            Event::StepEntered {
                run,
                step: "ship".into(),
                visit: 1,
            },
        );
        let task = Uuid::now_v7();
        j.append(
            at,
            Event::TaskSubmitted {
                task,
                capability: "ship".into(),
                correlation: run,
                input: Arc::new(json!({})),
                attempts: 1,
                timeout_ms: 5_000,
                sender: "gated/ship".into(),
            },
        );
        j.append(
            at,
            Event::ResultAccepted {
                task,
                agent: "shipper#0".into(),
                epoch: 1,
                output: output.clone(),
            },
        );
        j.append(
            at,
            Event::StepCompleted {
                run,
                step: "ship".into(),
                task,
                output: output.clone(),
            },
        );
        j.append(
            at,
            Event::RunEnded {
                run,
                status: "completed".into(),
                step: "done".into(),
                reason: None,
            },
        );
        if i % 100_000 == 99_999 {
            j.flush().expect("flush");
            eprintln!("  {} runs written", i + 1);
        }
    }
    j.close().expect("close");
    (waiting, oldest.expect("at least one finished run"))
}

async fn timed(client: &reqwest::Client, req: reqwest::RequestBuilder) -> (Duration, u16) {
    let _ = client;
    let t = Instant::now();
    let resp = req.bearer_auth(TOKEN).send().await.expect("a response");
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    (t.elapsed(), status)
}

/// Starts a node on `path` and times it; returns the figures.
fn measure(path: &Path, waiting: Vec<Uuid>, oldest: Uuid, samples: usize) -> Value {
    let sys = actix::System::new();
    let path = path.to_path_buf();
    sys.block_on(async move {
        let t0 = Instant::now();
        let sqlite = Arc::new(SqliteJournal::open(&path, Durability::Relaxed).expect("open"));
        let tap = Arc::new(TapJournal::new(sqlite.clone() as Arc<dyn Journal>, 4096));
        let muster = Muster::builder()
            .journal(tap.clone())
            .schema("any", json!({}))
            .agent(
                AgentDef::function("shipper", |input: Value, _ctx| async move { Ok(input) })
                    .capability(CapabilitySpec::new("ship", "any", "any")),
            )
            .start()
            .await
            .expect("the runtime starts");
        let wf = Arc::new(
            Workflow::parse(GATED, Path::new("gated.toml"), &muster.schemas())
                .expect("the workflow parses"),
        );
        let resume: Vec<_> = unfinished_runs(tap.as_ref())
            .into_iter()
            .map(|e| (wf.clone(), e.run))
            .collect();
        let config = ServeConfig {
            workflows: BTreeMap::from([("gated".to_string(), wf.clone())]),
            groups: Vec::new(),
            tokens: Tokens::admin(Token::parse(TOKEN, "bench").expect("a valid token")),
            limits: muster::serve::admission::Limits {
                max_runs: muster::serve::admission::MAX_BOUND,
                max_tasks: muster::serve::admission::MAX_BOUND,
            },
            resume,
            traces: None,
            failover: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        let answering = t0.elapsed();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = actix::spawn(serve(muster.clone(), tap, config, listener, async move {
            let _ = stop_rx.await;
        }));
        // The clients run on a thread of their own, as another program's would.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a client runtime");
            let figures = rt.block_on(async move {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let client = reqwest::Client::new();
                loop {
                    let r = client.get(format!("{base}/readyz")).send().await;
                    if r.is_ok_and(|r| r.status().as_u16() == 200) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let ready = t0.elapsed();
                let mut list = Vec::new();
                let mut detail = Vec::new();
                let mut decide = Vec::new();
                for i in 0..samples {
                    let (d, s) =
                        timed(&client, client.get(format!("{base}/v1/runs?limit=50"))).await;
                    assert_eq!(s, 200);
                    list.push(d);
                    let (d, s) =
                        timed(&client, client.get(format!("{base}/v1/runs/{oldest}"))).await;
                    assert_eq!(s, 200);
                    detail.push(d);
                    if let Some(run) = waiting.get(i) {
                        let (d, s) = timed(
                            &client,
                            client
                                .post(format!("{base}/v1/runs/{run}/gates/ask"))
                                .header("content-type", "application/json")
                                .body(r#"{"decision":"reject","note":"bench"}"#),
                        )
                        .await;
                        assert_eq!(s, 200, "the decision on run {run}");
                        decide.push(d);
                    }
                }
                json!({
                    "answering_ms": answering.as_secs_f64() * 1e3,
                    "start_ms": ready.as_secs_f64() * 1e3,
                    "list_runs": percentiles(list),
                    "run_detail_oldest": percentiles(detail),
                    "gate_decision": percentiles(decide),
                })
            });
            let _ = tx.send(figures);
        });
        let figures = rx.await.expect("the clients finished");
        let _ = stop_tx.send(());
        let _ = server.await;
        muster.shutdown().await;
        let _ = sqlite.close();
        figures
    })
}

/// Compacts every finished run of the journal at `path` into `archive`; its figures.
fn compact_all(path: &Path, archive: &Path) -> Value {
    use muster::journal::sqlite::{Compaction, compact};
    eprintln!("  compacting");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let what = Compaction {
        ended_before_ms: now_ms,
        archive: Some(archive.to_path_buf()),
    };
    let t = Instant::now();
    let c = compact(path, &what, now_ms).expect("the compaction");
    let seconds = t.elapsed().as_secs_f64();
    assert_eq!(
        c.kept_unfinished, WAITING as u64,
        "every waiting run is kept"
    );
    json!({
        "seconds": seconds,
        "runs_removed": c.runs,
        "records_removed": c.records,
        "kept_unfinished": c.kept_unfinished,
        "bytes_before": c.bytes_before,
        "bytes_after": c.bytes_after,
        "archive_bytes": std::fs::metadata(archive).map_or(0, |m| m.len()),
    })
}

fn main() {
    let sizes = env_list("NODE_HISTORY_SIZES", &[10_000, 100_000]);
    let samples = env_list("NODE_HISTORY_SAMPLES", &[200])[0].max(1);
    let mut out = serde_json::Map::new();
    for n in sizes {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("journal.db");
        let t = Instant::now();
        eprintln!("{n} finished runs: writing the journal");
        let (waiting, oldest) = make(&path, n);
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        eprintln!(
            "  written in {:.1} s, {} MB; measuring",
            t.elapsed().as_secs_f64(),
            bytes / 1_000_000
        );
        let mut figures = measure(&path, waiting, oldest, samples);
        figures["journal_bytes"] = json!(bytes);
        if std::env::var("NODE_HISTORY_COMPACT").is_ok_and(|v| v == "1") {
            figures["compaction"] = compact_all(&path, &dir.path().join("archive.jsonl.zst"));
        }
        out.insert(n.to_string(), figures);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&Value::Object(out)).unwrap_or_default()
    );
}
