//! The LLM backend's own overhead: a fake chat-completions server (axum on 127.0.0.1:0,
//! answering instantly with a fixed completion) is called in the same run by a bare
//! `reqwest` loop and by an LLM agent (template rendering, request body, provider permit,
//! HTTP, decoding, schema validation, usage recording). The difference of the per-call
//! latencies is what muster adds. Then the provider actor alone: permits granted per
//! second, and agent calls per second with 64 in flight.
//!
//! Run: `cargo bench --bench llm` (prints one JSON document; `LLM_BENCH_CALLS` sets the
//! number of calls per loop, default 5000).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use muster::agents::llm::{LlmConfig, LlmFactory, LlmLimits, ProviderHandle, Structured};
use muster::agents::{AgentFactory, AgentLink};
use muster::{SchemaStore, TaskContext};
use serde_json::json;

const ANSWER: &str = r#"{"id":"c","object":"chat.completion","model":"fake","choices":[{"index":0,"message":{"role":"assistant","content":"{\"component\":\"parser\",\"severity\":\"high\"}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":7,"total_tokens":27}}"#;

async fn chat(_body: Bytes) -> ([(&'static str, &'static str); 1], &'static str) {
    ([("content-type", "application/json")], ANSWER)
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
    d.as_secs_f64() * 1e6
}

fn main() {
    let calls: usize = std::env::var("LLM_BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let sys = actix::System::new();
    sys.block_on(async move {
        let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The server on a thread of its own, as a real one would be.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener.into_std().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let base = format!("http://{addr}/v1");
        let url = format!("{base}/chat/completions");
        let body =
            json!({"model": "fake", "messages": [{"role": "user", "content": "Triage: crash"}],
                          "response_format": {"type": "json_object"}})
            .to_string();

        // The bare loop: one client, the same body, the body read and parsed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().build().unwrap();
        let bare_call = || {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            async move {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let b = r.bytes().await.unwrap();
                let _: serde_json::Value = serde_json::from_slice(&b).unwrap();
            }
        };

        // The agent.
        let schemas = Arc::new(SchemaStore::new());
        schemas.add("report", json!({"type": "object"})).unwrap();
        schemas
            .add(
                "triage",
                json!({"type": "object", "required": ["component", "severity"],
                       "properties": {"component": {"type": "string"},
                                      "severity": {"enum": ["low", "high", "critical"]}}}),
            )
            .unwrap();
        let mut config = LlmConfig::new(&base, "fake", "Triage: {{ input.title }}");
        config.structured = Structured::JsonObject;
        let provider = ProviderHandle::new(&config.provider_key()).unwrap();
        provider.start(LlmLimits::default());
        let factory = LlmFactory::new(
            config,
            HashMap::from([("triage".to_string(), "triage".to_string())]),
            schemas,
        )
        .unwrap()
        .with_provider(provider.clone());
        let agent = factory.create("triager#0");
        agent.start(AgentLink::detached()).await.unwrap();
        let input = json!({"title": "crash on start"});
        let agent_call = |i: usize| {
            let ctx = TaskContext::standalone(
                uuid::Uuid::from_u128(i as u128 + 1),
                1,
                "triage",
                "triager#0",
                tokio::time::Instant::now() + Duration::from_secs(60),
            );
            agent.handle(input.clone(), ctx)
        };

        // Warm up both paths (connections, allocator), then interleave the two loops in
        // rounds so that both see the same machine.
        for i in 0..200 {
            bare_call().await;
            agent_call(i).await.unwrap();
        }
        let (mut bare, mut ours) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
        for round in 0..10 {
            for _ in 0..calls / 10 {
                let t = Instant::now();
                bare_call().await;
                bare.push(t.elapsed());
            }
            for i in 0..calls / 10 {
                let t = Instant::now();
                agent_call(round * calls + i).await.unwrap();
                ours.push(t.elapsed());
            }
        }
        let (bare_p50, bare_p99) = stats(bare);
        let (ours_p50, ours_p99) = stats(ours);

        // The provider actor alone: acquire and release, one at a time.
        let t = Instant::now();
        let n = calls * 10;
        for _ in 0..n {
            drop(provider.acquire(10).await.unwrap());
        }
        let grants_per_sec = n as f64 / t.elapsed().as_secs_f64();

        // Agent calls with 64 in flight, through the provider, against the fake server.
        let t = Instant::now();
        let per_task = calls / 64 + 1;
        let mut joins = Vec::new();
        for w in 0..64usize {
            let factory = factory.clone();
            let input = input.clone();
            joins.push(actix_rt::spawn(async move {
                let agent = factory.create("triager#1");
                for i in 0..per_task {
                    let ctx = TaskContext::standalone(
                        uuid::Uuid::from_u128(((w * per_task + i) as u128) << 8),
                        1,
                        "triage",
                        "triager#1",
                        tokio::time::Instant::now() + Duration::from_secs(60),
                    );
                    agent.handle(input.clone(), ctx).await.unwrap();
                }
            }));
        }
        for j in joins {
            j.await.unwrap();
        }
        let concurrent_per_sec = (64 * per_task) as f64 / t.elapsed().as_secs_f64();

        let doc = json!({
            "calls_per_loop": calls,
            "bare_reqwest_us": {"p50": us(bare_p50), "p99": us(bare_p99)},
            "llm_agent_us": {"p50": us(ours_p50), "p99": us(ours_p99)},
            "added_us": {"p50": us(ours_p50) - us(bare_p50), "p99": us(ours_p99) - us(bare_p99)},
            "provider_grants_per_sec": grants_per_sec,
            "agent_calls_per_sec_64_in_flight": concurrent_per_sec,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap());
    });
}
