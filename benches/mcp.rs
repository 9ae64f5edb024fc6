//! The MCP backend's overhead (docs/mcp.md, BENCHMARKS.md "MCP"): one small stdio MCP
//! server (this binary itself, started with `--echo-server`: an rmcp server with one tool,
//! `echo`, answering its arguments as structured content) is called in the same run by
//!
//! - a bare `rmcp` client session (`tools/call`, nothing else): the baseline;
//! - an MCP agent's `handle` (muster's backend alone: progress route, cancel switch,
//!   output mapping);
//! - the runtime (`Muster::delegate`: submission, owner, routing, fenced lease, the
//!   contract check of input and output, the journal's records, the agent).
//!
//! Per-call latencies with one call in flight (p50/p99; what muster adds is the
//! difference to the baseline), then calls per second through the runtime with 64 in
//! flight over 4 server instances (beside 4 bare sessions with 16 each).
//!
//! Run: `cargo bench -p muster-cli --bench mcp` (prints one JSON document; `MCP_BENCH_CALLS`
//! sets the calls per latency loop, default 5000, and `MCP_BENCH_BURST` the calls of the
//! throughput runs, default 20000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use muster::agents::mcp::{McpConfig, McpFactory};
use muster::agents::{AgentDef, AgentFactory, AgentLink};
use muster::discovery::CapabilitySpec;
use muster::{Muster, Task, TaskContext};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

/// The bench's stdio server: one tool, `echo`, its arguments back as structured content.
#[derive(Clone)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let object = Arc::new(match json!({"type": "object"}) {
            Value::Object(m) => m,
            _ => Default::default(),
        });
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new_with_raw("echo", Some("echoes its arguments".into()), object.clone())
                .with_raw_output_schema(object),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        Ok(CallToolResult::structured(args).into())
    }
}

fn echo_server() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let running = Echo
            .serve(rmcp::transport::stdio())
            .await
            .expect("the client initialises");
        let _ = running.waiting().await;
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A bare rmcp client session to a new echo server.
async fn bare_session() -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    let exe = std::env::current_exe().expect("the bench's path");
    let mut child = tokio::process::Command::new(exe)
        .arg("--echo-server")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the echo server starts");
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    // The child lives as long as the process (killed on drop would end it at once).
    std::mem::forget(child);
    ().serve((stdout, stdin)).await.expect("initialised")
}

fn args() -> rmcp::model::JsonObject {
    match json!({"text": "hello", "n": 1}) {
        Value::Object(m) => m,
        _ => Default::default(),
    }
}

fn config() -> McpConfig {
    let exe = std::env::current_exe().expect("the bench's path");
    McpConfig::stdio(exe.display().to_string(), ["--echo-server"]).with_tool("echo", "echo")
}

fn main() {
    if std::env::args().any(|a| a == "--echo-server") {
        return echo_server();
    }
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let calls = env("MCP_BENCH_CALLS", 5000);
    let burst = env("MCP_BENCH_BURST", 20000);
    let sys = actix::System::new();
    let doc = sys.block_on(async move {
        // The baseline: a bare session.
        let bare = bare_session().await;
        let bare_call = || {
            let p = CallToolRequestParams::new("echo").with_arguments(args());
            let peer = bare.peer().clone();
            async move {
                let r = peer.call_tool(p).await.expect("the call answers");
                assert!(r.structured_content.is_some());
            }
        };

        // The backend alone: one MCP agent, its session opened.
        let agent = McpFactory::new(config()).create("echo#0");
        agent
            .start(AgentLink::detached())
            .await
            .expect("the agent's session opens");
        let input = json!({"text": "hello", "n": 1});
        let agent_call = |i: usize| {
            let ctx = TaskContext::standalone(
                uuid::Uuid::from_u128(i as u128 + 1),
                1,
                "echo",
                "echo#0",
                tokio::time::Instant::now() + Duration::from_secs(60),
            );
            agent.handle(input.clone(), ctx)
        };

        // The runtime: one instance for the latency loop.
        let obj = json!({"type": "object"});
        let def = |replicas: usize, concurrency: usize| {
            AgentDef::new("echo", McpFactory::new(config()))
                .capability(CapabilitySpec::new("echo", "obj", "obj"))
                .replicas(replicas)
                .concurrency(concurrency)
        };
        let one = Muster::builder()
            .schema("obj", obj.clone())
            .agent(def(1, 1))
            .start()
            .await
            .expect("the runtime starts");
        let task = || {
            Task::new("echo", json!({"text": "hello", "n": 1}))
                .timeout(Duration::from_secs(60))
                .attempts(1)
        };
        let runtime_call = |m: &Muster| {
            let m = m.clone();
            let t = task();
            async move {
                let r = m.delegate(t).await.expect("accepted");
                assert!(r.is_completed(), "{r:?}");
            }
        };

        // Warm up every path, then interleave the loops in rounds so that all three see
        // the same machine.
        for i in 0..200 {
            bare_call().await;
            agent_call(i).await.expect("the agent answers");
            runtime_call(&one).await;
        }
        let (mut b, mut a, mut r) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..10 {
            for _ in 0..calls / 10 {
                let t = Instant::now();
                bare_call().await;
                b.push(t.elapsed());
            }
            for i in 0..calls / 10 {
                let t = Instant::now();
                agent_call(1000 + round * calls + i)
                    .await
                    .expect("the agent answers");
                a.push(t.elapsed());
            }
            for _ in 0..calls / 10 {
                let t = Instant::now();
                runtime_call(&one).await;
                r.push(t.elapsed());
            }
        }
        one.shutdown().await;
        let ((b50, b99), (a50, a99), (r50, r99)) = (stats(b), stats(a), stats(r));

        // Throughput: 64 in flight over 4 instances (16 calls per session each).
        let four = Muster::builder()
            .schema("obj", obj)
            .agent(def(4, 16))
            .start()
            .await
            .expect("the runtime starts");
        for _ in 0..256 {
            runtime_call(&four).await;
        }
        let t = Instant::now();
        futures::stream::iter(0..burst)
            .map(|_| runtime_call(&four))
            .buffer_unordered(64)
            .collect::<Vec<()>>()
            .await;
        let through_muster = burst as f64 / t.elapsed().as_secs_f64();
        four.shutdown().await;

        // The same load on 4 bare sessions.
        let mut sessions = Vec::new();
        for _ in 0..4 {
            sessions.push(bare_session().await);
        }
        let peers: Vec<_> = sessions.iter().map(|s| s.peer().clone()).collect();
        let t = Instant::now();
        futures::stream::iter(0..burst)
            .map(|i| {
                let peer = peers[i % 4].clone();
                let p = CallToolRequestParams::new("echo").with_arguments(args());
                async move {
                    peer.call_tool(p).await.expect("the call answers");
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<()>>()
            .await;
        let through_bare = burst as f64 / t.elapsed().as_secs_f64();

        json!({
            "bench": "mcp",
            "calls": calls,
            "bare_rmcp_us": {"p50": us(b50), "p99": us(b99)},
            "agent_us": {"p50": us(a50), "p99": us(a99)},
            "runtime_us": {"p50": us(r50), "p99": us(r99)},
            "agent_overhead_us": {"p50": us(a50.saturating_sub(b50)), "p99": us(a99.saturating_sub(b99))},
            "runtime_overhead_us": {"p50": us(r50.saturating_sub(b50)), "p99": us(r99.saturating_sub(b99))},
            "throughput": {
                "in_flight": 64,
                "instances": 4,
                "calls": burst,
                "muster_calls_per_s": through_muster.round(),
                "bare_rmcp_calls_per_s": through_bare.round(),
            },
        })
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
}
