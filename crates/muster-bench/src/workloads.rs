//! The workloads W1-W5 of `docs/workloads.md` on muster, each beside its raw tokio and raw
//! actix baselines, measured in the same run on the same payload.
//!
//! Everything runs on the caller's actix system (one thread): a task stays on that thread
//! from submission to completion, as the runtime is designed to run. Each function here
//! measures one run of one workload and records its samples in a [`Collector`]; the
//! harness in [`muster_bench`] repeats runs and summarises. Must not time anything it does
//! not report, and must not report a figure it did not measure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use super::BenchError;
use super::baseline::{self, ActixAgents, TokioAgents};
pub use super::payload::{hop, payload};
use super::report::{Collector, Unit};
use muster_core::journal::{Event, Journal, MemoryJournal, Record};
use muster_core::runtime::{AgentDef, Muster};
use muster_core::supervision::Supervision;
use muster_core::{CapabilitySpec, Task};
use muster_workflow::Workflow;
use muster_workflow::WorkflowExt;

/// The payload schema (`schemas/bench-payload.schema.json`), compiled into the binary so
/// that `muster bench` runs from any directory.
pub const PAYLOAD_SCHEMA: &str = include_str!("../../../schemas/bench-payload.schema.json");

/// The W1 chain as a workflow: three task steps, each step's input the previous output.
pub const CHAIN_WORKFLOW: &str = r#"
name = "bench-chain"
description = "W1: a task through A -> B -> C"
input = "bench-payload"
start = "a"

[steps.a]
capability = "bench.a"
timeout = "30s"
attempts = 1
next = "b"

[steps.b]
capability = "bench.b"
input = "steps.a.output"
timeout = "30s"
attempts = 1
next = "c"

[steps.c]
capability = "bench.c"
input = "steps.b.output"
timeout = "30s"
attempts = 1
next = "done"

[steps.done]
terminal = "done"
"#;

/// The payload schema as JSON.
pub fn payload_schema() -> Result<Value, BenchError> {
    serde_json::from_str(PAYLOAD_SCHEMA)
        .map_err(|e| BenchError::Setup(format!("bench-payload schema: {e}")))
}

/// `n * scale`, at least 1.
pub fn scaled(n: usize, scale: f64) -> usize {
    ((n as f64 * scale).round() as usize).max(1)
}

/// An echo function agent type serving `capability` with the payload schema both ways.
pub fn echo_def(name: &str, capability: &str) -> AgentDef {
    AgentDef::function(name, |v, ctx| async move { Ok(hop(v, &ctx.agent)) }).capability(
        CapabilitySpec::new(capability, "bench-payload", "bench-payload"),
    )
}

/// A runtime on the current thread with the payload schema and the given journal.
pub async fn runtime(journal: Arc<dyn Journal>) -> Result<Muster, BenchError> {
    Ok(Muster::builder()
        .schema("bench-payload", payload_schema()?)
        .journal(journal)
        .start()
        .await?)
}

/// A journal that keeps nothing: what the runtime costs without retaining its events.
#[derive(Debug, Default)]
pub struct DiscardJournal(std::sync::atomic::AtomicU64);

impl Journal for DiscardJournal {
    fn append(&self, _at_ms: u64, _event: Event) -> u64 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }
    fn read_after(&self, _after: u64) -> Vec<Record> {
        Vec::new()
    }
    fn len(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The durable journal for the W1 SQLite figures: a fresh file in `dir` with the given
/// durability; `None` if it cannot be opened (then W1 reports them as not measured).
pub fn sqlite_journal(
    dir: &std::path::Path,
    durability: muster_sqlite::Durability,
) -> Option<Arc<dyn Journal>> {
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("bench-{durability:?}.db"));
    let _ = std::fs::remove_file(&path);
    muster_sqlite::SqliteJournal::open(&path, durability)
        .ok()
        .map(|j| Arc::new(j) as Arc<dyn Journal>)
}

/// The W1 runtime: capabilities `bench.a`, `bench.b`, `bench.c`, one agent each.
pub async fn chain_runtime(journal: Arc<dyn Journal>) -> Result<Muster, BenchError> {
    let m = runtime(journal).await?;
    for (name, cap) in [("A", "bench.a"), ("B", "bench.b"), ("C", "bench.c")] {
        m.register(echo_def(name, cap)).await?;
    }
    Ok(m)
}

/// The W1 workflow, parsed from [`CHAIN_WORKFLOW`].
pub fn chain_workflow(m: &Muster) -> Result<Arc<Workflow>, BenchError> {
    Workflow::parse(
        CHAIN_WORKFLOW,
        std::path::Path::new("<bench-chain>"),
        &m.schemas(),
    )
    .map(Arc::new)
    .map_err(|e| BenchError::Setup(format!("the W1 workflow: {e:?}")))
}

/// One W1 task through the workflow engine; fails unless it completed with 3 hops.
pub async fn chain_by_workflow(m: &Muster, wf: &Arc<Workflow>, i: u64) -> Result<(), BenchError> {
    let out = m
        .run_workflow(wf.clone(), payload(i))
        .await
        .map_err(|e| BenchError::Incomplete(format!("W1 run {i}: {e}")))?;
    let hops = out.outputs.get("c").and_then(|c| c["hops"].as_u64());
    if !out.is_completed() || hops != Some(3) {
        return Err(BenchError::Incomplete(format!(
            "W1 run {i} ended {:?} with {hops:?} hops",
            out.status
        )));
    }
    Ok(())
}

/// One W1 task as three chained `delegate` calls (no workflow engine).
pub async fn chain_by_delegate(m: &Muster, i: u64) -> Result<(), BenchError> {
    // Each output is the next task's input, shared rather than copied.
    let mut v = Arc::new(payload(i));
    for cap in ["bench.a", "bench.b", "bench.c"] {
        let o = m.delegate(Task::new(cap, v)).await?;
        v = match o.output {
            Some(out) if o.is_completed() => out,
            _ => {
                return Err(BenchError::Incomplete(format!(
                    "W1 task {i} at {cap} ended {:?}",
                    o.status
                )));
            }
        };
    }
    Ok(())
}

async fn time_loop<F, Fut>(n: usize, offset: u64, mut f: F) -> Result<Duration, BenchError>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), BenchError>>,
{
    let t = Instant::now();
    for i in 0..n as u64 {
        f(offset + i).await?;
    }
    Ok(t.elapsed())
}

fn ok_or(v: Option<Value>, what: &str) -> Result<(), BenchError> {
    v.map(|_| ())
        .ok_or_else(|| BenchError::Incomplete(format!("{what}: a reply was lost")))
}

/// W1 handoff chain, one run: the workflow and the chained delegates with the in-memory
/// journal, chained delegates with a discarding journal (the journal's cost), and the raw
/// tokio and raw actix chains, each over `10,000 * scale` tasks after `200 * scale`
/// warm-up tasks.
pub async fn w1(scale: f64, c: &mut Collector) -> Result<(), BenchError> {
    let n = scaled(10_000, scale);
    let warm = scaled(200, scale) as u64;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64 / 3.0;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();

    let tokio = TokioAgents::start(&["A", "B", "C"]);
    for i in 0..warm {
        ok_or(tokio.chain(payload(i)).await, "raw tokio chain")?;
    }
    let d = time_loop(n, warm, |i| {
        let t = tokio.clone();
        async move { ok_or(t.chain(payload(i)).await, "raw tokio chain") }
    })
    .await?;
    c.rec("raw_tokio_us_per_handoff", Unit::Micros, per(d));

    let actix = ActixAgents::start(&["A", "B", "C"]);
    for i in 0..warm {
        ok_or(actix.chain(payload(i)).await, "raw actix chain")?;
    }
    let d = time_loop(n, warm, |i| {
        let a = actix.clone();
        async move { ok_or(a.chain(payload(i)).await, "raw actix chain") }
    })
    .await?;
    c.rec("raw_actix_us_per_handoff", Unit::Micros, per(d));

    let journal = Arc::new(MemoryJournal::default());
    let m = chain_runtime(journal.clone()).await?;
    let wf = chain_workflow(&m)?;
    for i in 0..warm {
        chain_by_workflow(&m, &wf, i).await?;
    }
    let before = journal.len();
    let d = time_loop(n, warm, |i| {
        let (m, wf) = (m.clone(), wf.clone());
        async move { chain_by_workflow(&m, &wf, i).await }
    })
    .await?;
    let events = (journal.len() - before) as f64 / n as f64;
    m.shutdown().await;
    drop(m);
    drop(journal);
    c.rec("muster_workflow_tasks_per_s", Unit::PerSecond, rate(d));
    c.rec("muster_workflow_us_per_handoff", Unit::Micros, per(d));
    c.rec(
        "muster_workflow_journal_events_per_task",
        Unit::Count,
        events,
    );

    let m = chain_runtime(Arc::new(MemoryJournal::default())).await?;
    for i in 0..warm {
        chain_by_delegate(&m, i).await?;
    }
    let d_mem = time_loop(n, warm, |i| {
        let m = m.clone();
        async move { chain_by_delegate(&m, i).await }
    })
    .await?;
    m.shutdown().await;
    drop(m);
    c.rec("muster_delegate_tasks_per_s", Unit::PerSecond, rate(d_mem));
    c.rec("muster_delegate_us_per_handoff", Unit::Micros, per(d_mem));

    let m = chain_runtime(Arc::new(DiscardJournal::default())).await?;
    for i in 0..warm {
        chain_by_delegate(&m, i).await?;
    }
    let d_none = time_loop(n, warm, |i| {
        let m = m.clone();
        async move { chain_by_delegate(&m, i).await }
    })
    .await?;
    m.shutdown().await;
    drop(m);
    c.rec(
        "muster_delegate_journal_discarded_us_per_handoff",
        Unit::Micros,
        per(d_none),
    );
    c.rec(
        "memory_journal_cost_us_per_handoff",
        Unit::Micros,
        per(d_mem) - per(d_none),
    );

    let dir = std::env::temp_dir().join(format!("muster-bench-{}", std::process::id()));
    // `sync` acknowledges each result only once its batch is on disk: every sequential
    // task waits for an fsync, so it runs a tenth of the tasks.
    for (durability, label, count) in [
        (muster_sqlite::Durability::Relaxed, "relaxed", n),
        (muster_sqlite::Durability::Sync, "sync", (n / 10).max(1)),
    ] {
        let Some(j) = sqlite_journal(&dir, durability) else {
            continue;
        };
        let m = chain_runtime(j).await?;
        let wf = chain_workflow(&m)?;
        for i in 0..warm.min(count as u64) {
            chain_by_workflow(&m, &wf, i).await?;
        }
        let d = time_loop(count, warm, |i| {
            let (m, wf) = (m.clone(), wf.clone());
            async move { chain_by_workflow(&m, &wf, i).await }
        })
        .await?;
        let dd = time_loop(count, warm + count as u64, |i| {
            let m = m.clone();
            async move { chain_by_delegate(&m, i).await }
        })
        .await?;
        m.shutdown().await;
        let per_n = |d: Duration| d.as_secs_f64() * 1e6 / (count as f64 * 3.0);
        c.rec(
            &format!("muster_workflow_sqlite_{label}_us_per_handoff"),
            Unit::Micros,
            per_n(d),
        );
        c.rec(
            &format!("muster_delegate_sqlite_{label}_us_per_handoff"),
            Unit::Micros,
            per_n(dd),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Process-wide memory figures from `/proc/self/status`, in bytes: (VmRSS, VmHWM).
/// Zeros where the file does not exist (not Linux).
pub fn memory() -> (u64, u64) {
    muster_core::util::resident_memory().unwrap_or((0, 0))
}

/// W2 fan-out, one run: 1,000 echo instances of one capability, `100,000 * scale` tasks
/// in batches of 1,000 in flight, beside 1,000 tokio tasks and 1,000 actix actors; on one
/// shard and on every core with the in-memory journal, then on every core with the SQLite
/// journal (relaxed), whose figure is left out when no file can be opened in the temp
/// directory.
pub async fn w2(scale: f64, c: &mut Collector) -> Result<(), BenchError> {
    const AGENTS: usize = 1_000;
    const BATCH: usize = 1_000;
    let n = scaled(100_000, scale);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();

    let tokio = TokioAgents::start_many(AGENTS);
    let t = Instant::now();
    let mut i = 0usize;
    while i < n {
        let end = (i + BATCH).min(n);
        let replies =
            futures::future::join_all((i..end).map(|k| tokio.call(k, payload(k as u64)))).await;
        if replies.iter().any(Option::is_none) {
            return Err(BenchError::Incomplete(
                "W2 raw tokio: a reply was lost".into(),
            ));
        }
        i = end;
    }
    c.rec("raw_tokio_tasks_per_s", Unit::PerSecond, rate(t.elapsed()));
    drop(tokio);

    let actix = ActixAgents::start_many(AGENTS);
    let t = Instant::now();
    let mut i = 0usize;
    while i < n {
        let end = (i + BATCH).min(n);
        let replies =
            futures::future::join_all((i..end).map(|k| actix.call(k, payload(k as u64)))).await;
        if replies.iter().any(Option::is_none) {
            return Err(BenchError::Incomplete(
                "W2 raw actix: a reply was lost".into(),
            ));
        }
        i = end;
    }
    c.rec("raw_actix_tasks_per_s", Unit::PerSecond, rate(t.elapsed()));
    drop(actix);

    // One shard first (the single-threaded runtime), then one per core, submitting from
    // every shard: each shard's submitter keeps its share of the batch in flight.
    let one = w2_muster(n, 1, Arc::new(MemoryJournal::default())).await?;
    c.rec(
        "muster_one_shard_tasks_per_s",
        Unit::PerSecond,
        rate(one.took),
    );
    let (rss0, _) = memory();
    let shards = muster_core::shards::available();
    let all = w2_muster(n, shards, Arc::new(MemoryJournal::default())).await?;
    let (rss1, hwm) = memory();
    c.rec(
        "muster_register_1000_agents_ms",
        Unit::Millis,
        all.register.as_secs_f64() * 1e3,
    );
    c.rec("shards", Unit::Count, shards as f64);
    c.rec("muster_tasks_per_s", Unit::PerSecond, rate(all.took));
    c.rec(
        "process_peak_rss_mb",
        Unit::Megabytes,
        hwm as f64 / 1048576.0,
    );
    c.rec(
        "muster_rss_growth_mb",
        Unit::Megabytes,
        rss1.saturating_sub(rss0) as f64 / 1048576.0,
    );
    // Durable: the same fan-out with every record in a SQLite file (relaxed), each result
    // acknowledged only once its records are committed; the tasks in flight share commits.
    let dir = std::env::temp_dir().join(format!("muster-bench-w2-{}", std::process::id()));
    if let Some(j) = sqlite_journal(&dir, muster_sqlite::Durability::Relaxed) {
        let durable = w2_muster(n, shards, j).await?;
        c.rec(
            "muster_sqlite_relaxed_tasks_per_s",
            Unit::PerSecond,
            rate(durable.took),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// What one W2 run through muster took.
struct W2Run {
    register: Duration,
    took: Duration,
}

/// W2 through a runtime on `shards` shards journaling to `journal`: 1,000 echo instances
/// spread over them, and
/// `n` tasks submitted from every shard (shard `s` takes every `shards`-th batch slot), each
/// keeping its share of the 1,000 in flight.
async fn w2_muster(
    n: usize,
    shards: usize,
    journal: Arc<dyn Journal>,
) -> Result<W2Run, BenchError> {
    const AGENTS: usize = 1_000;
    const BATCH: usize = 1_000;
    let m = Muster::builder()
        .schema("bench-payload", payload_schema()?)
        .journal(journal)
        .shards(shards)
        .start()
        .await?;
    let t = Instant::now();
    m.register(echo_def("swarm", "bench.echo").replicas(AGENTS))
        .await?;
    let register = t.elapsed();
    let t = Instant::now();
    let mut done = Vec::with_capacity(shards);
    for s in 0..shards {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let m2 = m.clone();
        let batch = (BATCH / shards).max(1);
        let started = m.spawn_on_shard(s, move || async move {
            let _ = tx.send(w2_submitter(&m2, s, shards, n, batch).await);
        });
        if !started {
            return Err(BenchError::Incomplete(format!("W2: shard {s} has stopped")));
        }
        done.push(rx);
    }
    for rx in done {
        rx.await
            .map_err(|_| BenchError::Incomplete("W2: a submitter stopped".into()))??;
    }
    let took = t.elapsed();
    m.shutdown().await;
    Ok(W2Run { register, took })
}

/// Submits tasks `s, s + shards, ...` below `n`, `batch` at a time, and checks each ended
/// completed.
async fn w2_submitter(
    m: &Muster,
    s: usize,
    shards: usize,
    n: usize,
    batch: usize,
) -> Result<(), BenchError> {
    let mine: Vec<usize> = (s..n).step_by(shards).collect();
    for chunk in mine.chunks(batch) {
        let mut handles = Vec::with_capacity(chunk.len());
        for &k in chunk {
            handles.push(m.submit(Task::new("bench.echo", payload(k as u64))).await?);
        }
        let outs = futures::future::join_all(handles.into_iter().map(|h| h.outcome())).await;
        if let Some(o) = outs.iter().find(|o| !o.is_completed()) {
            return Err(BenchError::Incomplete(format!(
                "W2: task {} ended {:?}",
                o.id, o.status
            )));
        }
    }
    Ok(())
}

/// The p-th percentile (0..=100) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn record_percentiles(c: &mut Collector, prefix: &str, mut v: Vec<f64>, p90: bool) {
    v.sort_by(f64::total_cmp);
    c.rec(
        &format!("{prefix}_p50_us"),
        Unit::Micros,
        percentile(&v, 50.0),
    );
    if p90 {
        c.rec(
            &format!("{prefix}_p90_us"),
            Unit::Micros,
            percentile(&v, 90.0),
        );
    }
    c.rec(
        &format!("{prefix}_p99_us"),
        Unit::Micros,
        percentile(&v, 99.0),
    );
}

/// W3 request-response, one run: `10,000 * scale` sequential delegations to one agent
/// after `500 * scale` warm-up, each timed alone; the same loop on raw tokio and actix.
pub async fn w3(scale: f64, c: &mut Collector) -> Result<(), BenchError> {
    let n = scaled(10_000, scale);
    let warm = scaled(500, scale) as u64;
    let us = |d: Duration| d.as_secs_f64() * 1e6;

    let tokio = TokioAgents::start(&["echo"]);
    let actix = ActixAgents::start(&["echo"]);
    for i in 0..warm {
        ok_or(tokio.call(0, payload(i)).await, "W3 raw tokio")?;
        ok_or(actix.call(0, payload(i)).await, "W3 raw actix")?;
    }
    let mut v = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        ok_or(tokio.call(0, payload(i)).await, "W3 raw tokio")?;
        v.push(us(t.elapsed()));
    }
    record_percentiles(c, "raw_tokio", v, false);
    let mut v = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        ok_or(actix.call(0, payload(i)).await, "W3 raw actix")?;
        v.push(us(t.elapsed()));
    }
    record_percentiles(c, "raw_actix", v, false);

    let m = runtime(Arc::new(MemoryJournal::default())).await?;
    m.register(echo_def("echo", "bench.echo")).await?;
    for i in 0..warm {
        m.delegate(Task::new("bench.echo", payload(i))).await?;
    }
    let mut v = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        let o = m.delegate(Task::new("bench.echo", payload(i))).await?;
        v.push(us(t.elapsed()));
        if !o.is_completed() {
            return Err(BenchError::Incomplete(format!(
                "W3 task {i} ended {:?}",
                o.status
            )));
        }
    }
    m.shutdown().await;
    record_percentiles(c, "muster", v, true);
    Ok(())
}

type Stamps = Arc<Mutex<HashMap<Uuid, Instant>>>;

/// The W4 runtime: capability `bench.recover` served by `w4-crashy#0` (registered first,
/// so it wins ties and gets every task first) which panics on every task, and
/// `w4-healthy#0`. Both record, keyed by task id, the instant they got the task (the
/// crashy one just before panicking). The crashy one's supervisor allows a million
/// restarts a second, so it never drops out.
pub async fn recovery_runtime() -> Result<(Muster, Stamps, Stamps), BenchError> {
    let crashed: Stamps = Arc::default();
    let started: Stamps = Arc::default();
    let m = runtime(Arc::new(MemoryJournal::default())).await?;
    let spec = CapabilitySpec::new("bench.recover", "bench-payload", "bench-payload");
    let cr = crashed.clone();
    let crashy = AgentDef::function("w4-crashy", move |_v, ctx| {
        let cr = cr.clone();
        async move {
            cr.lock().insert(ctx.task_id, Instant::now());
            panic!("bench: w4-crashy panics on every task");
        }
    })
    .capability(spec.clone())
    .supervision(Supervision {
        intensity: 1_000_000,
        period: Duration::from_secs(1),
        ..Supervision::default()
    });
    let st = started.clone();
    let healthy = AgentDef::function("w4-healthy", move |v, ctx| {
        st.lock().insert(ctx.task_id, Instant::now());
        async move { Ok(hop(v, &ctx.agent)) }
    })
    .capability(spec);
    m.register(crashy).await?;
    m.register(healthy).await?;
    Ok((m, crashed, started))
}

/// Runs `f` with a panic hook that prints nothing (the W4 agents panic on purpose, once
/// per task; the default hook would print and time a message per panic), then restores
/// the previous hook.
pub async fn with_quiet_panics<F: std::future::Future>(f: F) -> F::Output {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = f.await;
    std::panic::set_hook(previous);
    out
}

/// What a W4 run found in the task records.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecoveryCounts {
    /// Tasks submitted.
    pub tasks: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Tasks with no terminal state.
    pub lost: u64,
    /// Tasks with more than one accepted result.
    pub duplicated: u64,
    /// Tasks escalated or cancelled.
    pub not_completed: u64,
    /// Tasks that failed over (more than one lease).
    pub failed_over: u64,
}

/// W4 recovery, one run: `10,000 * scale` sequential tasks; the recovery time of each
/// task that failed over, and the counts from the records; beside the raw floors.
pub async fn w4(scale: f64, c: &mut Collector) -> Result<(), BenchError> {
    let n = scaled(10_000, scale);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    with_quiet_panics(async {
        let mut v = Vec::with_capacity(n);
        for i in 0..n as u64 {
            if let Some(d) = baseline::tokio_recovery_once(i).await {
                v.push(us(d));
            }
        }
        v.sort_by(f64::total_cmp);
        c.rec(
            "raw_tokio_recovery_p50_us",
            Unit::Micros,
            percentile(&v, 50.0),
        );
        let mut v = Vec::with_capacity(n);
        for i in 0..n as u64 {
            if let Some(d) = baseline::actix_recovery_once(i).await {
                v.push(us(d));
            }
        }
        v.sort_by(f64::total_cmp);
        c.rec(
            "raw_actix_recovery_p50_us",
            Unit::Micros,
            percentile(&v, 50.0),
        );

        let (m, crashed, started) = recovery_runtime().await?;
        let mut counts = RecoveryCounts::default();
        let mut times = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let o = m.delegate(Task::new("bench.recover", payload(i))).await?;
            counts.tasks += 1;
            if o.is_completed() {
                counts.completed += 1;
            } else if o.status.is_terminal() {
                counts.not_completed += 1;
            } else {
                counts.lost += 1;
            }
            if o.accepted_results() > 1 {
                counts.duplicated += 1;
            }
            if o.leases.len() > 1 {
                counts.failed_over += 1;
            }
            let a = crashed.lock().remove(&o.id);
            let b = started.lock().remove(&o.id);
            if let (Some(a), Some(b)) = (a, b) {
                times.push(us(b.duration_since(a)));
            }
        }
        let restarts = m.stats().failed_attempts;
        m.shutdown().await;
        times.sort_by(f64::total_cmp);
        c.rec(
            "muster_recovery_p50_us",
            Unit::Micros,
            percentile(&times, 50.0),
        );
        c.rec(
            "muster_recovery_p99_us",
            Unit::Micros,
            percentile(&times, 99.0),
        );
        c.rec("tasks", Unit::Count, counts.tasks as f64);
        c.rec("completed", Unit::Count, counts.completed as f64);
        c.rec("lost", Unit::Count, counts.lost as f64);
        c.rec("duplicated", Unit::Count, counts.duplicated as f64);
        c.rec(
            "escalated_or_cancelled",
            Unit::Count,
            counts.not_completed as f64,
        );
        c.rec("failed_over", Unit::Count, counts.failed_over as f64);
        c.rec("failed_attempts", Unit::Count, restarts as f64);
        Ok(())
    })
    .await
}

/// W5 scale, one run: registers `1,000,000 * scale` echo instances as agent types of
/// 1,000 replicas, each type with a capability of its own (registration sorts a
/// capability's instance list on every insert, so one capability of a million instances
/// would be quadratic). Stops early when `budget` is spent and reports how many it
/// registered. Reports bytes per agent (VmRSS delta / count, process-wide, so it includes
/// the registry, supervisors and the journal's registration events) and look-up times at
/// that size. Leaves the agents running: run it in a process of its own.
pub async fn w5(scale: f64, budget: Duration, c: &mut Collector) -> Result<(), BenchError> {
    const PER_TYPE: usize = 1_000;
    let total = scaled(1_000_000, scale);
    let types = total.div_ceil(PER_TYPE);
    let m = runtime(Arc::new(MemoryJournal::default())).await?;
    // One agent type first, so that the runtime's fixed costs are not counted per agent.
    m.register(echo_def("probe", "bench.probe")).await?;
    let (rss0, _) = memory();
    let t = Instant::now();
    let mut registered = 0usize;
    let mut declared = 0usize;
    for k in 0..types {
        if t.elapsed() > budget {
            break;
        }
        let replicas = PER_TYPE.min(total - registered);
        m.register(echo_def(&format!("s{k}"), &format!("bench.scale.{k}")).replicas(replicas))
            .await?;
        registered += replicas;
        declared += 1;
    }
    let reg = t.elapsed();
    let (rss1, _) = memory();
    c.rec("agents_registered", Unit::Count, registered as f64);
    c.rec("register_s", Unit::Seconds, reg.as_secs_f64());
    c.rec(
        "register_agents_per_s",
        Unit::PerSecond,
        registered as f64 / reg.as_secs_f64(),
    );
    c.rec(
        "bytes_per_agent",
        Unit::Bytes,
        rss1.saturating_sub(rss0) as f64 / registered.max(1) as f64,
    );
    const LOOKUPS: u64 = 1_000;
    let cap = |j: u64| format!("bench.scale.{}", (j * 7919) % declared.max(1) as u64);
    let mut v = Vec::with_capacity(LOOKUPS as usize);
    for j in 0..LOOKUPS {
        let name = cap(j);
        let t = Instant::now();
        let found = m.candidates(&name, &[]);
        v.push(t.elapsed().as_secs_f64() * 1e6);
        if found.is_empty() {
            return Err(BenchError::Incomplete(format!(
                "W5: no candidate for {name}"
            )));
        }
    }
    v.sort_by(f64::total_cmp);
    c.rec("candidates_p50_us", Unit::Micros, percentile(&v, 50.0));
    // The dispatch decision itself: the instance the next task would get (the least
    // loaded, ties by registration order), which the router's pick reads in O(log n).
    let mut v = Vec::with_capacity(LOOKUPS as usize);
    for j in 0..LOOKUPS {
        let name = cap(j);
        let t = Instant::now();
        let found = m.least_loaded(&name, &[]);
        v.push(t.elapsed().as_secs_f64() * 1e6);
        if found.is_none() {
            return Err(BenchError::Incomplete(format!(
                "W5: no instance to pick for {name}"
            )));
        }
    }
    v.sort_by(f64::total_cmp);
    c.rec("pick_p50_us", Unit::Micros, percentile(&v, 50.0));
    let mut v = Vec::with_capacity(LOOKUPS as usize);
    for j in 0..LOOKUPS {
        let t = Instant::now();
        let o = m.delegate(Task::new(cap(j), payload(j))).await?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
        if !o.is_completed() {
            return Err(BenchError::Incomplete(format!(
                "W5: task {j} ended {:?}",
                o.status
            )));
        }
    }
    v.sort_by(f64::total_cmp);
    c.rec(
        "delegate_at_size_p50_us",
        Unit::Micros,
        percentile(&v, 50.0),
    );
    Ok(())
}
