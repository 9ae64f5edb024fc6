//! The cluster over NATS JetStream against muster in process and against bare NATS, in
//! one run on this machine (issue 13's performance targets):
//!
//! 1. W3 request-response (docs/workloads.md): a bare async-nats request-reply loop (a
//!    responder on a thread and a connection of its own echoes every request), then
//!    sequential `delegate`s to one agent in process, then the same through a control
//!    node (this process) to the agent on a `muster worker` child process (warmed up for
//!    at least 1 s after it joins; bare NATS and the cluster take turns, 1/10 of the
//!    requests at a time). p50 / p99 of each; the ratio of the cluster's p50 to the bare round trip (target: <= 1.5).
//! 2. W2 fan-out: tasks in batches of 1,000 in flight, to instances of one capability in
//!    process, then to the same number of instances split over two `muster worker`
//!    processes. Tasks per second (target across two workers: >= 50,000).
//! 3. A worker's death: two workers each hold slow tasks; one is SIGKILLed; the time until
//!    the owner journals its attempts as failed, and until every one of its tasks is
//!    leased to the other worker (target at the default 1.5 s TTL: <= 2 s). Every task
//!    then completes once.
//!
//! Run: `cargo bench --bench cluster` (prints one JSON document on stdout; progress on
//! stderr). `CLUSTER_BENCH_RUNS` sets the runs (default 3; every figure is reported per
//! run and as the median with min..max), `CLUSTER_BENCH_W3` the timed W3 requests per
//! variant (default 10,000, after 500 warm-up), `CLUSTER_BENCH_W2` the W2 tasks (default
//! 100,000), `CLUSTER_BENCH_W2_AGENTS` the W2 instances (default 1,000; half on each
//! worker). `CLUSTER_BENCH_ONLY` picks phases (`w3`, `w2`, `kill`, comma-separated; for a
//! profile of one). nats-server comes from `scripts/nats-server path`.

#[path = "../tests/it/support/cluster.rs"]
mod cluster;
#[path = "../tests/it/support/node.rs"]
mod node;
use self::cluster as cluster_support;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::{Nats, Proc, worker};
use futures::StreamExt;
use muster::bench::workloads::{PAYLOAD_SCHEMA, echo_def, payload, payload_schema, percentile};
use muster::cluster::{ClusterConfig, Control};
use muster::journal::{Journal, MemoryJournal};
use muster::{AgentDef, CapabilitySpec, Event, Muster, Task};
use serde_json::{Value, json};

const BATCH: usize = 1_000;
const SLOW_TASKS: usize = 8;
const SLOW_DELAY_MS: u64 = 5_000;
/// The cluster W3's shortest warm-up: a worker that has just joined answers its first
/// few hundred milliseconds of requests with millisecond stalls.
const CLUSTER_WARM_UP: Duration = Duration::from_secs(1);
/// The turns bare NATS and the cluster take in W3.
const W3_TURNS: u64 = 10;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// p50 and p99 of latencies in µs.
fn p50_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 50.0), percentile(&v, 99.0))
}

/// A worker's cast: the bench payload schema, `obj`, and one manifest.
fn cast_dir(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    for d in ["actors", "schemas"] {
        std::fs::create_dir_all(p.join(d)).expect("dir");
    }
    std::fs::write(p.join("schemas/bench-payload.schema.json"), PAYLOAD_SCHEMA).expect("schema");
    std::fs::write(p.join("schemas/obj.schema.json"), r#"{"type": "object"}"#).expect("schema");
    std::fs::write(p.join("actors/agent.toml"), manifest).expect("manifest");
    dir
}

fn hop_manifest(name: &str, capability: &str, replicas: usize) -> String {
    format!(
        "name = \"{name}\"\nreplicas = {replicas}\n[[capabilities]]\nname = \"{capability}\"\n\
         input = \"bench-payload\"\noutput = \"bench-payload\"\n\
         [backend]\nkind = \"function\"\nname = \"hop\"\n"
    )
}

fn slow_manifest() -> String {
    let slow = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("tests/fixtures/agents/slow_stdio.py");
    format!(
        "name = \"slow\"\nconcurrency = {SLOW_TASKS}\n[[capabilities]]\nname = \"bench.slow\"\n\
         input = \"obj\"\noutput = \"obj\"\n\
         [backend]\nkind = \"command\"\nprogram = \"python3\"\nargs = [{:?}]\nmode = \"stdio\"\n",
        slow.display().to_string()
    )
}

/// Starts `muster worker` processes named `nodes` on `dir`'s cast (off the runtime's
/// thread: the control node keeps serving meanwhile), then waits until the control node
/// has registered `instances` remote instances.
async fn workers(
    control: &Control,
    dir: &Path,
    url: &str,
    nodes: &[&str],
    instances: usize,
) -> Vec<Proc> {
    let mut out = Vec::new();
    for node in nodes {
        let (dir, url, node) = (dir.to_path_buf(), url.to_string(), node.to_string());
        out.push(
            tokio::task::spawn_blocking(move || worker(&dir, &url, &node))
                .await
                .expect("the worker starts"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while control.instances().len() != instances {
        assert!(
            Instant::now() < deadline,
            "the control node has {} remote instances, not {instances}",
            control.instances().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out
}

/// Stops workers with SIGTERM (they delete their keys), then waits until the control
/// node has none left.
async fn stop(control: &Control, procs: Vec<Proc>) {
    for mut p in procs {
        tokio::task::spawn_blocking(move || p.stop(10))
            .await
            .expect("the worker stops");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !control.instances().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A responder on a thread, a runtime and a connection of its own: answers every request
/// on `subject` with its payload.
fn bare_responder(url: String, subject: String) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let client = async_nats::connect(url.as_str()).await.expect("connects");
            let mut sub = client.subscribe(subject).await.expect("subscribes");
            client.flush().await.expect("flushes");
            let _ = ready_tx.send(());
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let _ = client.publish(reply, m.payload).await;
                }
            }
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the responder subscribed");
}

/// W3 over bare NATS: sequential requests (the bench payload as JSON, decoded on return).
async fn w3_bare(client: &async_nats::Client, subject: &str, warm: u64, n: u64) -> Vec<f64> {
    let call = |i: u64| {
        let body = serde_json::to_vec(&payload(i)).expect("encodes");
        async move {
            let r = client
                .request(subject.to_string(), body.into())
                .await
                .expect("an answer");
            let v: Value = serde_json::from_slice(&r.payload).expect("JSON");
            assert_eq!(v["task_id"], json!(i));
        }
    };
    for i in 0..warm {
        call(i).await;
    }
    let mut v = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t = Instant::now();
        call(i).await;
        v.push(us(t.elapsed()));
    }
    v
}

/// W3 through `m`: sequential delegations to `capability`, each timed alone, after `warm`
/// untimed ones and at least `warm_for` of them (a worker process that has just joined
/// answers slowly for its first few hundred milliseconds).
async fn w3_delegate(
    m: &Muster,
    capability: &str,
    warm: u64,
    warm_for: Duration,
    n: u64,
) -> Vec<f64> {
    let started = Instant::now();
    let mut i = 0;
    while i < warm || started.elapsed() < warm_for {
        let o = m.delegate(Task::new(capability, payload(i))).await;
        assert!(o.map(|o| o.is_completed()).unwrap_or(false), "warm-up");
        i += 1;
    }
    let mut v = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t = Instant::now();
        let o = m
            .delegate(Task::new(capability, payload(i)))
            .await
            .expect("submitted");
        v.push(us(t.elapsed()));
        assert!(o.is_completed(), "W3 task {i} ended {:?}", o.status);
        assert_eq!(o.output.as_ref().map(|x| x["hops"].clone()), Some(json!(1)));
    }
    v
}

/// W2 through `m`: `n` tasks to `capability`, `BATCH` in flight; tasks per second.
async fn w2(m: &Muster, capability: &str, n: usize) -> f64 {
    let t = Instant::now();
    let mut i = 0usize;
    while i < n {
        let end = (i + BATCH).min(n);
        let mut handles = Vec::with_capacity(end - i);
        for k in i..end {
            handles.push(
                m.submit(Task::new(capability, payload(k as u64)))
                    .await
                    .expect("submitted"),
            );
        }
        let outs = futures::future::join_all(handles.into_iter().map(|h| h.outcome())).await;
        if let Some(o) = outs.iter().find(|o| !o.is_completed()) {
            panic!("W2 task {} ended {:?}", o.id, o.status);
        }
        i = end;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// The worker's death, one sample: (ms to the first failed attempt on `victim`, ms until
/// every task it held is leased to another node, tasks it held, tasks completed).
async fn kill_sample(
    m: &Muster,
    journal: &Arc<MemoryJournal>,
    control: &Control,
    mut procs: Vec<Proc>,
) -> (f64, f64, usize, usize) {
    let from = journal.len();
    let mut handles = Vec::new();
    for n in 0..SLOW_TASKS {
        let task = Task::new("bench.slow", json!({"n": n, "delay_ms": SLOW_DELAY_MS}))
            .timeout(Duration::from_secs(60))
            .attempts(4);
        handles.push(m.submit(task).await.expect("submitted"));
    }
    // Both workers hold tasks.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held: HashSet<String> = control
            .instances()
            .into_iter()
            .filter(|i| i.in_flight > 0)
            .map(|i| i.node)
            .collect();
        if held.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "both workers never held tasks");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let victim = procs.remove(0);
    let suffix = format!("@{}", victim.name.trim_start_matches("worker "));
    let held: HashSet<uuid::Uuid> = journal
        .read_after(from)
        .into_iter()
        .filter_map(|r| match r.event {
            Event::LeaseGranted { task, agent, .. } if agent.ends_with(&suffix) => Some(task),
            _ => None,
        })
        .collect();
    let mut victim = victim;
    let since = journal.len();
    let t0 = Instant::now();
    victim.kill();
    let (mut detected, mut moved) = (None, HashSet::new());
    let deadline = t0 + Duration::from_secs(30);
    let mut seen = since;
    while moved.len() < held.len() {
        for r in journal.read_after(seen) {
            seen = r.seq;
            match r.event {
                Event::AttemptFailed { agent, .. }
                    if agent.ends_with(&suffix) && detected.is_none() =>
                {
                    detected = Some(t0.elapsed());
                }
                Event::LeaseGranted { task, agent, .. }
                    if held.contains(&task) && !agent.ends_with(&suffix) =>
                {
                    moved.insert(task);
                }
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "the tasks were not reassigned");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let reassigned = t0.elapsed();
    let outs = futures::future::join_all(handles.into_iter().map(|h| h.outcome())).await;
    let completed = outs.iter().filter(|o| o.is_completed()).count();
    stop(control, procs).await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        detected.map(ms).unwrap_or(f64::NAN),
        ms(reassigned),
        held.len(),
        completed,
    )
}

/// Median, min and max of a figure over the runs.
fn spread(v: &[f64]) -> Value {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    json!({"median": s[s.len() / 2], "min": s[0], "max": s[s.len() - 1], "runs": v})
}

fn main() {
    let runs = env_count("CLUSTER_BENCH_RUNS", 3).max(1);
    let w3_n = env_count("CLUSTER_BENCH_W3", 10_000).max(1) as u64;
    let w3_warm = (w3_n / 20).max(1);
    let w2_n = env_count("CLUSTER_BENCH_W2", 100_000).max(1);
    let w2_agents = env_count("CLUSTER_BENCH_W2_AGENTS", 1_000).max(2);
    let only = std::env::var("CLUSTER_BENCH_ONLY").unwrap_or_else(|_| "w3,w2,kill".into());
    let phase = move |p: &str| only.split(',').any(|o| o.trim() == p);
    let store = tempfile::tempdir().expect("tempdir");
    let nats = Nats::start(store.path());
    let url = nats.url();
    eprintln!("nats-server on {url}; {runs} runs");
    let echo_cast = cast_dir(&hop_manifest("echo", "bench.echo", 1));
    let swarm_cast = cast_dir(&hop_manifest("swarm", "bench.swarm", w2_agents / 2));
    let slow_cast = cast_dir(&slow_manifest());
    let subject = "bench.bare.echo".to_string();
    bare_responder(url.clone(), subject.clone());

    let sys = actix::System::new();
    let doc = sys.block_on(async move {
        // The control node: this process, the runtime on this thread; no agents here.
        let journal = Arc::new(MemoryJournal::default());
        let control_m = Muster::builder()
            .schema("bench-payload", payload_schema().expect("schema"))
            .schema("obj", json!({"type": "object"}))
            .journal(journal.clone() as Arc<dyn Journal>)
            .start()
            .await
            .expect("the control runtime starts");
        let defs: Vec<AgentDef> = vec![
            echo_def("echo", "bench.echo"),
            echo_def("swarm", "bench.swarm"),
            AgentDef::function("slow", |v: Value, _ctx| async move { Ok(v) })
                .capability(CapabilitySpec::new("bench.slow", "obj", "obj")),
        ];
        let control = Control::start(control_m.clone(), &defs, ClusterConfig::new(&url, "c1"))
            .await
            .expect("the control node joins");
        let requester = async_nats::connect(url.as_str()).await.expect("connects");

        let mut fig: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut kills = Vec::new();
        for run in 1..=runs {
            if phase("w3") {
                eprintln!("run {run}: W3 in process, then bare NATS and cluster interleaved");
                let local = muster::bench::workloads::runtime(Arc::new(MemoryJournal::default()))
                    .await
                    .expect("runtime");
                local
                    .register(echo_def("echo", "bench.echo"))
                    .await
                    .expect("registers");
                let v = w3_delegate(&local, "bench.echo", w3_warm, Duration::ZERO, w3_n).await;
                local.shutdown().await;
                let (p50, p99) = p50_p99(v);
                fig.entry("w3_in_process_p50_us").or_default().push(p50);
                fig.entry("w3_in_process_p99_us").or_default().push(p99);

                // Bare NATS and the cluster take turns, a tenth of the requests at a time,
                // so that a change of the machine's load weighs on both alike.
                let procs = workers(&control, echo_cast.path(), &url, &["w3"], 1).await;
                w3_bare(&requester, &subject, w3_warm, 0).await;
                w3_delegate(&control_m, "bench.echo", w3_warm, CLUSTER_WARM_UP, 0).await;
                let per = (w3_n / W3_TURNS).max(1);
                let (mut bare, mut cluster) = (Vec::new(), Vec::new());
                for _ in 0..W3_TURNS {
                    bare.extend(w3_bare(&requester, &subject, 0, per).await);
                    let v = w3_delegate(&control_m, "bench.echo", 0, Duration::ZERO, per).await;
                    cluster.extend(v);
                }
                stop(&control, procs).await;
                let (bare_p50, bare_p99) = p50_p99(bare);
                fig.entry("w3_bare_nats_p50_us").or_default().push(bare_p50);
                fig.entry("w3_bare_nats_p99_us").or_default().push(bare_p99);
                let (p50, p99) = p50_p99(cluster);
                fig.entry("w3_cluster_p50_us").or_default().push(p50);
                fig.entry("w3_cluster_p99_us").or_default().push(p99);
                fig.entry("w3_cluster_p50_over_bare_nats_p50")
                    .or_default()
                    .push(p50 / bare_p50);
            }

            if phase("w2") {
            eprintln!("run {run}: W2 in process, cluster ({w2_agents} instances)");
            let local = muster::bench::workloads::runtime(Arc::new(MemoryJournal::default()))
                .await
                .expect("runtime");
            local
                .register(echo_def("swarm", "bench.swarm").replicas(w2_agents))
                .await
                .expect("registers");
            let rate = w2(&local, "bench.swarm", w2_n).await;
            local.shutdown().await;
            fig.entry("w2_in_process_tasks_per_s").or_default().push(rate);
            let per = w2_agents / 2;
            let procs = workers(&control, swarm_cast.path(), &url, &["a", "b"], 2 * per).await;
            let rate = w2(&control_m, "bench.swarm", w2_n).await;
            stop(&control, procs).await;
            fig.entry("w2_cluster_two_workers_tasks_per_s")
                .or_default()
                .push(rate);
            }

            if phase("kill") {
            eprintln!("run {run}: SIGKILL a worker holding slow tasks");
            let procs = workers(&control, slow_cast.path(), &url, &["k1", "k2"], 2).await;
            let (detect, reassign, held, completed) =
                kill_sample(&control_m, &journal, &control, procs).await;
            fig.entry("kill_to_attempt_failed_ms").or_default().push(detect);
            fig.entry("kill_to_all_reassigned_ms")
                .or_default()
                .push(reassign);
            kills.push(json!({"held_by_killed_worker": held, "completed": completed, "tasks": SLOW_TASKS}));
            }
        }
        let (late, refused, swept) = control.counts();
        control_m.shutdown().await;
        let med = |k: &str| {
            fig.get(k)
                .and_then(|v| spread(v)["median"].as_f64())
                .unwrap_or(f64::NAN)
        };
        let mut figures = serde_json::Map::new();
        for (k, v) in &fig {
            figures.insert(k.to_string(), spread(v));
        }
        json!({
            "runs": runs,
            "w3_requests": w3_n,
            "w3_warm_up": w3_warm,
            "w2_tasks": w2_n,
            "w2_instances": w2_agents,
            "w2_in_flight": BATCH,
            "ttl_ms": muster::cluster::DEFAULT_TTL.as_millis() as u64,
            "figures": figures,
            "kills": kills,
            "control_counts": {"late_reports": late, "refused": refused, "swept": swept},
            "targets": {
                "w3_cluster_p50_within_1_5x_bare_nats": med("w3_cluster_p50_over_bare_nats_p50") <= 1.5,
                "w2_cluster_at_least_50000_tasks_per_s": med("w2_cluster_two_workers_tasks_per_s") >= 50_000.0,
                "kill_reassigned_within_2000_ms": med("kill_to_all_reassigned_ms") <= 2_000.0,
            },
        })
    });
    drop(nats);
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
}
