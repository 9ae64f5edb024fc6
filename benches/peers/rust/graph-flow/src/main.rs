//! W1, W2 and W3 of muster's docs/workloads.md on graph-flow 0.8.1, the way its docs
//! show a workflow of agents: tasks implementing `Task` in a `Graph` built with
//! `GraphBuilder`, run by a `FlowRunner` over `InMemorySessionStorage`, the payload in the
//! session's `Context`, each task choosing its next action.
//!
//! - W1: tasks A -> B -> C (edges), A and B answer `ContinueAndExecute`, C `End`; one
//!   session per task, one `FlowRunner::run`. Microseconds per handoff = task time / 3.
//! - W2: `--agents` echo tasks in one graph; task i's session starts at echo task
//!   i % agents; `--in-flight` sessions run concurrently at a time.
//! - W3: one echo task; each session's run timed alone.
//!
//! One-thread tokio runtime, like muster's bench. Prints one JSON line.

#[path = "../../peer_common.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use graph_flow::{
    Context, FlowRunner, GraphBuilder, InMemorySessionStorage, NextAction, Session, SessionStorage,
    Task, TaskResult,
};
use serde_json::{json, Value};

const PEER: &str = "graph-flow";
const VERSION: &str = "0.8.1";

/// An agent: takes the payload from the context, hops, puts it back, moves on.
struct Hop {
    name: String,
    next: NextAction,
}

#[async_trait]
impl Task for Hop {
    fn id(&self) -> &str {
        &self.name
    }

    async fn run(&self, context: Context) -> graph_flow::Result<TaskResult> {
        let v: Value = context.get("payload").unwrap_or(Value::Null);
        context.set("payload", common::hop(v, &self.name))?;
        Ok(TaskResult::new(None, self.next.clone()))
    }
}

fn hop(name: &str, next: NextAction) -> Arc<Hop> {
    Arc::new(Hop {
        name: name.to_string(),
        next,
    })
}

/// Runs one session from `start` with payload `i`; the payload it ends with.
async fn run_one(
    runner: &FlowRunner,
    storage: &InMemorySessionStorage,
    start: &str,
    i: u64,
) -> Value {
    let id = format!("task-{i}");
    let session = Session::new_from_task(id.clone(), start);
    let context = session.context.clone();
    if let Err(e) = context.set("payload", common::payload(i)) {
        common::fail(&format!("task {i}: {e}"));
    }
    if let Err(e) = storage.save(session).await {
        common::fail(&format!("task {i}: {e}"));
    }
    if let Err(e) = runner.run(&id).await {
        common::fail(&format!("task {i}: {e}"));
    }
    let _ = storage.delete(&id).await;
    context.get("payload").unwrap_or(Value::Null)
}

async fn w1(a: &common::Args) -> Value {
    let (ta, tb, tc) = (
        hop("A", NextAction::ContinueAndExecute),
        hop("B", NextAction::ContinueAndExecute),
        hop("C", NextAction::End),
    );
    let graph = GraphBuilder::new("w1")
        .add_task(ta.clone())
        .add_task(tb.clone())
        .add_task(tc.clone())
        .add_edge("A", "B")
        .add_edge("B", "C")
        .set_start_task("A")
        .build()
        .unwrap_or_else(|e| common::fail(&format!("W1 graph: {e}")));
    let storage = Arc::new(InMemorySessionStorage::new());
    let runner = FlowRunner::new(Arc::new(graph), storage.clone());
    for i in 0..a.warmup as u64 {
        run_one(&runner, &storage, "A", i).await;
    }
    let t = Instant::now();
    for i in 0..a.tasks as u64 {
        let out = run_one(&runner, &storage, "A", a.warmup as u64 + i).await;
        if common::hops(&out) != 3 {
            common::fail(&format!("W1 task {i}: ended with {out}"));
        }
    }
    let d = t.elapsed().as_secs_f64();
    json!({"us_per_handoff": d * 1e6 / a.tasks as f64 / 3.0, "tasks_per_s": a.tasks as f64 / d})
}

async fn w2(a: &common::Args) -> Value {
    let t = Instant::now();
    let names: Vec<String> = (0..a.agents).map(|k| format!("echo-{k}")).collect();
    let mut b = GraphBuilder::new("w2");
    for n in &names {
        b = b.add_task(hop(n, NextAction::End));
    }
    let graph = b
        .set_start_task(&names[0])
        .build()
        .unwrap_or_else(|e| common::fail(&format!("W2 graph: {e}")));
    let storage = Arc::new(InMemorySessionStorage::new());
    let runner = FlowRunner::new(Arc::new(graph), storage.clone());
    let register_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let mut i = 0usize;
    while i < a.tasks {
        let end = (i + a.in_flight).min(a.tasks);
        let outs = futures::future::join_all(
            (i..end).map(|k| run_one(&runner, &storage, &names[k % a.agents], k as u64)),
        )
        .await;
        if outs.iter().any(|o| common::hops(o) != 1) {
            common::fail(&format!("W2 batch at {i}: an echo without its hop"));
        }
        i = end;
    }
    let d = t.elapsed().as_secs_f64();
    json!({"tasks_per_s": a.tasks as f64 / d, "register_agents_ms": register_ms, "peak_rss_mb": common::peak_rss_mb()})
}

async fn w3(a: &common::Args) -> Value {
    let graph = GraphBuilder::new("w3")
        .add_task(hop("echo", NextAction::End))
        .build()
        .unwrap_or_else(|e| common::fail(&format!("W3 graph: {e}")));
    let storage = Arc::new(InMemorySessionStorage::new());
    let runner = FlowRunner::new(Arc::new(graph), storage.clone());
    for i in 0..a.warmup as u64 {
        run_one(&runner, &storage, "echo", i).await;
    }
    let mut v = Vec::with_capacity(a.tasks);
    for i in 0..a.tasks as u64 {
        let t = Instant::now();
        let out = run_one(&runner, &storage, "echo", i).await;
        v.push(t.elapsed().as_secs_f64() * 1e6);
        if common::hops(&out) != 1 {
            common::fail(&format!("W3 task {i}: ended with {out}"));
        }
    }
    common::latency_figures(v)
}

fn main() {
    let a = common::parse_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| common::fail(&format!("tokio runtime: {e}")));
    let figures = rt.block_on(async {
        match a.workload.as_str() {
            "W1" => w1(&a).await,
            "W2" => w2(&a).await,
            _ => w3(&a).await,
        }
    });
    common::emit(PEER, VERSION, &a, figures);
}
