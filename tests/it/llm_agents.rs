//! LLM agents against a scripted fake chat-completions server (axum on 127.0.0.1:0, in
//! the test's own runtime on tokio's paused clock): every way a model server can answer
//! ends in the journal records a user would look for.

use crate::support::common;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{paused, within};
use muster::agents::llm::{LlmConfig, LlmFactory, Structured};
use muster::journal::Record;
use muster::{AgentDef, CapabilitySpec, Event, Muster, SchemaStore, Task, TaskStatus};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::time::Instant;

/// What the fake server does for one request.
#[derive(Clone)]
enum Reply {
    /// 200 with this chat-completions body.
    Body(Value),
    /// This status, headers and raw body.
    Status(u16, Vec<(&'static str, &'static str)>, &'static str),
    /// Never answers.
    Hang,
    /// 200 as an event stream: these chunks, then nothing more (the stream stays open).
    StreamThenStall(Vec<String>),
    /// 200 as an event stream: these chunks, one per this gap, then the end.
    SlowStream(Vec<String>, Duration),
}

/// A request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    headers: HeaderMap,
    body: Value,
}

#[derive(Clone, Default)]
struct Script {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn chat(State(s): State<Script>, headers: HeaderMap, body: Bytes) -> Response {
    s.seen.lock().push(Seen {
        at: Instant::now(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let reply = s.replies.lock().pop_front();
    match reply {
        None => (StatusCode::IM_A_TEAPOT, "the script has no more replies").into_response(),
        Some(Reply::Body(v)) => {
            ([("content-type", "application/json")], v.to_string()).into_response()
        }
        Some(Reply::Status(code, headers, body)) => {
            let mut r = (StatusCode::from_u16(code).unwrap(), body).into_response();
            for (k, v) in headers {
                r.headers_mut().insert(k, v.parse().unwrap());
            }
            r
        }
        Some(Reply::Hang) => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Some(Reply::SlowStream(chunks, gap)) => {
            let stream = futures::stream::unfold(chunks.into_iter(), move |mut it| async move {
                let c = it.next()?;
                tokio::time::sleep(gap).await;
                Some((Ok::<_, Infallible>(Bytes::from(c)), it))
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        Some(Reply::StreamThenStall(chunks)) => {
            let chunks = futures::stream::iter(
                chunks
                    .into_iter()
                    .map(|c| Ok::<_, Infallible>(Bytes::from(c))),
            );
            let stream = futures::StreamExt::chain(chunks, futures::stream::pending());
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }
}

/// Starts the fake server on a free port; returns its base URL and its script.
async fn fake_server(replies: Vec<Reply>) -> (String, Script) {
    let script = Script::default();
    script.replies.lock().extend(replies);
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/v1"), script)
}

fn answer(content: &str) -> Value {
    json!({"id": "c1", "object": "chat.completion", "model": "fake",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}})
}

fn triage_schema() -> Value {
    json!({"type": "object", "required": ["component", "severity"],
           "additionalProperties": false,
           "properties": {"component": {"type": "string"},
                          "severity": {"enum": ["low", "high", "critical"]}}})
}

const VALID: &str = r#"{"component": "parser", "severity": "high"}"#;
const VIOLATING: &str = r#"{"component": "parser", "severity": "catastrophic"}"#;

fn config(base_url: &str) -> LlmConfig {
    let mut c = LlmConfig::new(base_url, "fake-model", "Triage: {{ input.title }}");
    c.structured = Structured::JsonObject;
    c
}

/// A runtime with `replicas` instances of an LLM agent serving `triage`.
async fn runtime(config: LlmConfig, replicas: usize) -> Muster {
    runtime_with(config, replicas, Vec::new()).await
}

async fn runtime_with(config: LlmConfig, replicas: usize, more: Vec<AgentDef>) -> Muster {
    runtime_full(config, replicas, more, None).await
}

async fn runtime_full(
    config: LlmConfig,
    replicas: usize,
    more: Vec<AgentDef>,
    heartbeat: Option<Duration>,
) -> Muster {
    let schemas = Arc::new(SchemaStore::new());
    schemas.add("report", json!({"type": "object"})).unwrap();
    schemas.add("triage", triage_schema()).unwrap();
    let outputs = HashMap::from([("triage".to_string(), "triage".to_string())]);
    let factory = LlmFactory::new(config, outputs, schemas).unwrap();
    let mut b = Muster::builder()
        .schema("report", json!({"type": "object"}))
        .schema("triage", triage_schema())
        .agent(
            AgentDef::new("triager", factory)
                .capability({
                    let c = CapabilitySpec::new("triage", "report", "triage");
                    match heartbeat {
                        Some(h) => c.heartbeat(h),
                        None => c,
                    }
                })
                .replicas(replicas),
        );
    for d in more {
        b = b.agent(d);
    }
    b.start().await.unwrap()
}

fn task() -> Task {
    Task::new("triage", json!({"title": "crash on start"})).timeout(Duration::from_secs(10))
}

fn records(m: &Muster) -> Vec<Record> {
    m.journal().read_after(0)
}

fn kinds(records: &[Record], task: uuid::Uuid) -> Vec<&'static str> {
    records
        .iter()
        .filter(|r| r.event.task() == Some(task))
        .map(|r| r.event.kind())
        .collect()
}

fn failures(records: &[Record]) -> Vec<(String, String)> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::AttemptFailed { reason, detail, .. } => Some((reason.clone(), detail.clone())),
            _ => None,
        })
        .collect()
}

fn usages(records: &[Record]) -> Vec<muster::journal::Usage> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::ModelUsage { usage, .. } => Some(usage.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_valid_answer_is_accepted_with_its_usage_and_idempotency_key() {
    paused(async {
        let (url, script) = fake_server(vec![Reply::Body(answer(VALID))]).await;
        let mut c = config(&url);
        c.api_key_env = Some("MUSTER_TEST_LLM_KEY_VALID".into());
        // SAFETY: no other test uses this variable, and std's environment reads take the
        // same lock as `set_var`; the agent reads it through `std::env::var`.
        unsafe { std::env::set_var("MUSTER_TEST_LLM_KEY_VALID", "sk-test") };
        let m = runtime(c, 1).await;
        let out = within(30, "task", m.delegate(task())).await.unwrap();
        assert_eq!(out.status, TaskStatus::Completed);
        assert_eq!(
            out.output.as_deref(),
            Some(&serde_json::from_str::<Value>(VALID).unwrap())
        );
        let rs = records(&m);
        assert_eq!(
            kinds(&rs, out.id),
            [
                "task_submitted",
                "lease_granted",
                "model_usage",
                "result_accepted"
            ]
        );
        let u = &usages(&rs)[0];
        assert_eq!(
            (
                u.calls,
                u.prompt_tokens,
                u.completion_tokens,
                u.total_tokens
            ),
            (1, Some(20), Some(7), Some(27))
        );
        let seen = script.seen.lock()[0].clone();
        assert_eq!(seen.headers["idempotency-key"], format!("{}-1", out.id));
        assert_eq!(seen.headers["authorization"], "Bearer sk-test");
        assert_eq!(seen.body["metadata"]["muster_task"], out.id.to_string());
        assert_eq!(seen.body["model"], "fake-model");
        assert_eq!(seen.body["response_format"]["type"], "json_object");
        assert_eq!(seen.body["response_format"]["schema"], triage_schema());
        assert_eq!(
            seen.body["messages"][1]["content"],
            "Triage: crash on start"
        );
        m.shutdown().await;
    });
}

#[test]
fn an_answer_that_is_not_json_fails_the_attempt_as_a_protocol_failure() {
    paused(async {
        let (url, _) = fake_server(vec![Reply::Body(answer("The component is the parser."))]).await;
        let mut c = config(&url);
        c.repair = 0;
        let m = runtime(c, 1).await;
        let out = within(30, "task", m.delegate(task().attempts(1)))
            .await
            .unwrap();
        assert_eq!(out.status, TaskStatus::Escalated);
        let rs = records(&m);
        let f = failures(&rs);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, "protocol");
        assert!(f[0].1.contains("not JSON"), "{}", f[0].1);
        // The call was made and its tokens are journaled even though it failed.
        assert_eq!(usages(&rs)[0].total_tokens, Some(27));
        m.shutdown().await;
    });
}

#[test]
fn a_schema_violation_is_repaired_within_the_attempt() {
    paused(async {
        let (url, script) = fake_server(vec![
            Reply::Body(answer(VIOLATING)),
            Reply::Body(answer(VALID)),
        ])
        .await;
        let m = runtime(config(&url), 1).await;
        let out = within(30, "task", m.delegate(task())).await.unwrap();
        assert_eq!(out.status, TaskStatus::Completed);
        assert_eq!(out.leases.len(), 1, "repaired without a second attempt");
        let rs = records(&m);
        assert!(failures(&rs).is_empty());
        let u = &usages(&rs)[0];
        assert_eq!((u.calls, u.total_tokens), (2, Some(54)));
        let seen = script.seen.lock().clone();
        assert_eq!(seen.len(), 2);
        // The repair turn shows the model its answer and the validator's errors.
        let msgs = seen[1].body["messages"].as_array().unwrap().clone();
        assert_eq!(msgs[msgs.len() - 2]["content"], VIOLATING);
        let last = msgs[msgs.len() - 1]["content"].as_str().unwrap();
        assert!(last.contains("/severity"), "{last}");
        assert_eq!(
            seen[1].headers["idempotency-key"],
            format!("{}-1-1", out.id),
            "a repair turn is a request of its own"
        );
        m.shutdown().await;
    });
}

#[test]
fn a_schema_violation_on_every_turn_is_a_contract_violation_reassigned_then_escalated() {
    paused(async {
        let (url, _) = fake_server(vec![Reply::Body(answer(VIOLATING)); 4]).await;
        let m = runtime(config(&url), 2).await;
        let out = within(30, "task", m.delegate(task().attempts(2)))
            .await
            .unwrap();
        assert_eq!(out.status, TaskStatus::Escalated);
        let rs = records(&m);
        let f = failures(&rs);
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|(r, _)| r == "contract_violation"), "{f:?}");
        let agents: Vec<String> = out.leases.iter().map(|l| l.agent.to_string()).collect();
        assert_eq!(agents.len(), 2);
        assert_ne!(agents[0], agents[1], "reassigned to another instance");
        assert!(kinds(&rs, out.id).contains(&"task_escalated"));
        assert!(
            usages(&rs).iter().all(|u| u.calls == 2),
            "one repair turn each"
        );
        m.shutdown().await;
    });
}

#[test]
fn a_429_fails_the_attempt_and_the_next_waits_out_retry_after() {
    paused(async {
        let (url, script) = fake_server(vec![
            Reply::Status(429, vec![("retry-after", "1")], "rate limit reached"),
            Reply::Body(answer(VALID)),
        ])
        .await;
        // Two instances: the second attempt goes to the other one, and still waits, since
        // the provider (and its Retry-After) is shared by every instance.
        let m = runtime(config(&url), 2).await;
        let out = within(30, "task", m.delegate(task())).await.unwrap();
        assert_eq!(out.status, TaskStatus::Completed);
        assert_ne!(out.leases[0].agent, out.leases[1].agent);
        let f = failures(&records(&m));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, "error");
        assert!(
            f[0].1.contains("rate_limited: HTTP 429 (retry after 1s)"),
            "{}",
            f[0].1
        );
        let seen = script.seen.lock().clone();
        assert!(
            seen[1].at - seen[0].at >= Duration::from_secs(1),
            "the provider held the next request for Retry-After"
        );
        m.shutdown().await;
    });
}

#[test]
fn a_500_fails_the_attempt_with_its_status() {
    paused(async {
        let (url, _) = fake_server(vec![Reply::Status(500, vec![], "internal error")]).await;
        let m = runtime(config(&url), 1).await;
        let out = within(30, "task", m.delegate(task().attempts(1)))
            .await
            .unwrap();
        assert_eq!(out.status, TaskStatus::Escalated);
        let rs = records(&m);
        let f = failures(&rs);
        assert!(
            f[0].1.contains("server_error: HTTP 500: internal error"),
            "{}",
            f[0].1
        );
        assert!(usages(&rs).is_empty(), "no answer, no usage");
        m.shutdown().await;
    });
}

#[test]
fn a_hung_model_fails_the_attempt_at_the_task_deadline() {
    paused(async {
        let (url, _) = fake_server(vec![Reply::Hang]).await;
        let m = runtime(config(&url), 1).await;
        let out = within(60, "task", m.delegate(task().attempts(1)))
            .await
            .unwrap();
        assert_eq!(out.status, TaskStatus::Escalated);
        let f = failures(&records(&m));
        assert_eq!(f[0].0, "timeout");
        m.shutdown().await;
    });
}

#[test]
fn a_request_timeout_shorter_than_the_task_fails_with_its_kind() {
    paused(async {
        let (url, _) = fake_server(vec![Reply::Hang]).await;
        let mut c = config(&url);
        c.timeout = Duration::from_secs(2);
        let m = runtime(c, 1).await;
        let out = within(60, "task", m.delegate(task().attempts(1)))
            .await
            .unwrap();
        assert_eq!(out.status, TaskStatus::Escalated);
        let f = failures(&records(&m));
        assert!(
            f[0].1.contains("timeout: no answer within 2s"),
            "{}",
            f[0].1
        );
        m.shutdown().await;
    });
}

#[test]
fn a_stalled_stream_fails_the_attempt_in_seconds_not_at_the_deadline() {
    paused(async {
        let first = "data: {\"choices\":[{\"delta\":{\"content\":\"{\\\"comp\"}}]}\n\n".to_string();
        let (url, _) = fake_server(vec![Reply::StreamThenStall(vec![first])]).await;
        let mut c = config(&url);
        c.stream = true;
        c.stream_idle = Duration::from_secs(2);
        let m = runtime(c, 1).await;
        let t0 = Instant::now();
        let out = within(
            60,
            "task",
            m.delegate(task().attempts(1).timeout(Duration::from_secs(50))),
        )
        .await
        .unwrap();
        assert_eq!(out.status, TaskStatus::Escalated);
        assert!(t0.elapsed() < Duration::from_secs(50));
        let f = failures(&records(&m));
        assert!(f[0].1.contains("stream_idle"), "{}", f[0].1);
        m.shutdown().await;
    });
}

#[test]
fn a_streamed_answer_is_assembled_and_accepted() {
    paused(async {
        let chunks = vec![
            "data: {\"choices\":[{\"delta\":{\"content\":\"{\\\"component\\\": \\\"parser\\\", \"}}]}\n\n".to_string(),
            "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"severity\\\": \\\"low\\\"}\"},\"finish_reason\":\"stop\"}]}\n\n".to_string(),
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n".to_string(),
            "data: [DONE]\n\n".to_string(),
        ];
        let (url, _) = fake_server(vec![Reply::StreamThenStall(chunks)]).await;
        let mut c = config(&url);
        c.stream = true;
        let m = runtime(c, 1).await;
        let out = within(30, "task", m.delegate(task())).await.unwrap();
        assert_eq!(out.status, TaskStatus::Completed);
        assert_eq!(out.output.unwrap()["severity"], "low");
        assert_eq!(usages(&records(&m))[0].total_tokens, Some(12));
        m.shutdown().await;
    });
}

#[test]
fn an_answer_without_usage_journals_unknown_tokens_never_zero() {
    paused(async {
        let mut body = answer(VALID);
        body.as_object_mut().unwrap().remove("usage");
        let (url, _) = fake_server(vec![Reply::Body(body)]).await;
        let m = runtime(config(&url), 1).await;
        let out = within(30, "task", m.delegate(task())).await.unwrap();
        assert_eq!(out.status, TaskStatus::Completed);
        let rs = records(&m);
        let u = &usages(&rs)[0];
        assert_eq!((u.calls, u.total_tokens, u.prompt_tokens), (1, None, None));
        let json = serde_json::to_value(
            &rs.iter()
                .find(|r| r.event.kind() == "model_usage")
                .unwrap()
                .event,
        )
        .unwrap();
        assert_eq!(json["usage"]["total_tokens"], Value::Null);
        m.shutdown().await;
    });
}

#[test]
fn unknown_extra_fields_in_the_answer_are_ignored() {
    paused(async {
        let mut body = answer(VALID);
        body["system_fingerprint"] = json!("fp_1");
        body["choices"][0]["logprobs"] = json!(null);
        body["choices"][0]["message"]["refusal"] = json!(null);
        body["x_vendor"] = json!({"queue_ms": 3});
        body["usage"]["prompt_tokens_details"] = json!({"cached_tokens": 0});
        let (url, _) = fake_server(vec![Reply::Body(body)]).await;
        let m = runtime(config(&url), 1).await;
        let out = within(30, "task", m.delegate(task())).await.unwrap();
        assert_eq!(out.status, TaskStatus::Completed);
        m.shutdown().await;
    });
}

#[test]
fn a_tool_call_is_a_delegated_task_whose_result_goes_back_to_the_model() {
    paused(async {
        let tool_call = json!({"choices": [{"message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "code_lookup", "arguments": "{\"file\": \"parser.rs\"}"}}]},
            "finish_reason": "tool_calls"}]});
        let (url, script) =
            fake_server(vec![Reply::Body(tool_call), Reply::Body(answer(VALID))]).await;
        let mut c = config(&url);
        c.tools = vec!["code.lookup".into()];
        let lookup = AgentDef::function("looker", |input: Value, _ctx| async move {
            Ok(json!({"owner": "parser-team", "file": input["file"]}))
        })
        .capability(CapabilitySpec::new("code.lookup", "report", "report"));
        let m = runtime_with(c, 1, vec![lookup]).await;
        let out = within(30, "task", m.delegate(task())).await.unwrap();
        assert_eq!(out.status, TaskStatus::Completed);
        let rs = records(&m);
        // The tool call was a task of its own, in the same run, completed by its agent.
        let sub = rs
            .iter()
            .find_map(|r| match &r.event {
                Event::TaskSubmitted {
                    task,
                    capability,
                    correlation,
                    ..
                } if capability.as_ref() == "code.lookup" => Some((*task, *correlation)),
                _ => None,
            })
            .expect("the tool call was submitted as a task");
        assert_eq!(sub.1, out.correlation);
        assert!(kinds(&rs, sub.0).contains(&"result_accepted"));
        let seen = script.seen.lock().clone();
        assert_eq!(seen[0].body["tools"][0]["function"]["name"], "code_lookup");
        let msgs = seen[1].body["messages"].as_array().unwrap().clone();
        let tool_msg = msgs
            .iter()
            .find(|m| m["role"] == "tool")
            .expect("a tool message");
        assert_eq!(tool_msg["tool_call_id"], "call_1");
        assert!(
            tool_msg["content"]
                .as_str()
                .unwrap()
                .contains("parser-team")
        );
        m.shutdown().await;
    });
}

/// A tool call's effect keys (issue 26): the delegated task's keys derive from its
/// parent's key, the tool, its input (keys in any order) and how many identical calls the
/// attempt made before, so a parent retried after a failure hands its tool the same key
/// for the same call, and a second identical call in one attempt gets a key of its own.
#[test]
fn a_tool_call_has_the_same_effect_key_in_every_attempt_of_its_parent() {
    paused(async {
        let call = |args: &str| {
            json!({"id": "call_1", "type": "function",
                   "function": {"name": "code_lookup", "arguments": args}})
        };
        let calls = |list: Vec<Value>| {
            json!({"choices": [{"message": {"role": "assistant", "content": null,
                "tool_calls": list}, "finish_reason": "tool_calls"}]})
        };
        let (url, _script) = fake_server(vec![
            // Attempt 1: one call, then the model server fails the attempt.
            Reply::Body(calls(vec![call(r#"{"file": "parser.rs", "line": 7}"#)])),
            Reply::Status(500, vec![], "overloaded"),
            // Attempt 2: the same call (its keys in another order), twice.
            Reply::Body(calls(vec![
                call(r#"{"line": 7, "file": "parser.rs"}"#),
                call(r#"{"line": 7, "file": "parser.rs"}"#),
            ])),
            Reply::Body(answer(VALID)),
        ])
        .await;
        let mut c = config(&url);
        c.tools = vec!["code.lookup".into()];
        let keys = Arc::new(Mutex::new(Vec::new()));
        let seen = keys.clone();
        let lookup = AgentDef::function("looker", move |_input: Value, ctx| {
            let seen = seen.clone();
            async move {
                seen.lock().push(ctx.effect_key("notify"));
                Ok(json!({"owner": "parser-team"}))
            }
        })
        .capability(CapabilitySpec::new("code.lookup", "report", "report"));
        let m = runtime_with(c, 2, vec![lookup]).await;
        let out = within(30, "task", m.delegate(task())).await.unwrap();
        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
        assert_eq!(out.leases.len(), 2, "the parent was retried once: {out:?}");
        let keys = keys.lock().clone();
        assert_eq!(keys.len(), 3, "{keys:?}");
        let parent = format!("muster:{}:tool:code.lookup:", out.id);
        assert!(keys.iter().all(|k| k.starts_with(&parent)), "{keys:?}");
        assert_eq!(keys[0], keys[1], "the same call in the retried parent");
        assert_ne!(keys[1], keys[2], "a second identical call in one attempt");
        m.shutdown().await;
    });
}

/// Three model-backed steps under a budget of 30 tokens; each answer reports 27.
const BUDGETED: &str = r#"
    name = "budgeted"
    input = "report"
    start = "first"
    [budget]
    tokens = 30
    [steps.first]
    capability = "triage"
    input = "{'title': 'a'}"
    timeout = "10s"
    on_exhausted = "fail"
    next = "second"
    [steps.second]
    capability = "triage"
    input = "{'title': 'b'}"
    timeout = "10s"
    on_exhausted = "fail"
    next = "third"
    [steps.third]
    capability = "triage"
    input = "{'title': 'c'}"
    timeout = "10s"
    on_exhausted = "fail"
    next = "done"
    [steps.done]
    terminal = "done"
"#;

/// Runs [`BUDGETED`] and checks it failed before its third step, having made two calls.
async fn run_budgeted(m: &Muster, script: &Script) -> muster::workflow::RunOutcome {
    use muster::workflow::{RunStatus, Workflow, WorkflowExt};
    let wf = Workflow::parse(
        BUDGETED,
        std::path::Path::new("budgeted.toml"),
        &m.schemas(),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(wf.token_budget, Some(30));
    let o = within(60, "run", m.run_workflow(Arc::new(wf), json!({})))
        .await
        .unwrap();
    // 27 tokens after the first step (within 30), 54 after the second: the third
    // never runs.
    match &o.status {
        RunStatus::Failed { step, reason } => {
            assert_eq!(step, "third");
            assert!(reason.contains("token budget exceeded"), "{reason}");
            assert!(reason.contains("spent 54"), "{reason}");
        }
        other => panic!("expected a failed run, got {other:?}"),
    }
    assert_eq!(script.seen.lock().len(), 2);
    assert_eq!(
        o.usage.total_tokens, 54,
        "the outcome reports what the run spent"
    );
    assert_eq!(
        o.steps.iter().map(|s| s.usage.total_tokens).sum::<u64>(),
        54
    );
    o
}

#[test]
fn a_run_over_its_token_budget_fails_cleanly_before_its_next_step() {
    paused(async {
        let (url, script) = fake_server(vec![Reply::Body(answer(VALID)); 3]).await;
        let m = runtime(config(&url), 1).await;
        run_budgeted(&m, &script).await;
        let ended = records(&m).into_iter().any(|r| {
            matches!(&r.event, Event::RunEnded { status, reason: Some(why), .. }
                if status == "failed" && why.contains("token budget"))
        });
        assert!(ended, "the run's end is journaled with its reason");
        m.shutdown().await;
    });
}

#[test]
fn the_token_budget_holds_when_the_memory_journal_has_dropped_the_usage_records() {
    use muster::journal::{JournalConfig, MemoryJournal};
    paused(async {
        let (url, script) = fake_server(vec![Reply::Body(answer(VALID)); 3]).await;
        // A ring of 4 records: by the time the third step is due, the first step's usage
        // record is long gone from memory (a busy runtime evicts the same way).
        let journal = Arc::new(MemoryJournal::new(JournalConfig {
            retain_records: 4,
            ..JournalConfig::default()
        }));
        let schemas = Arc::new(SchemaStore::new());
        schemas.add("report", json!({"type": "object"})).unwrap();
        schemas.add("triage", triage_schema()).unwrap();
        let outputs = HashMap::from([("triage".to_string(), "triage".to_string())]);
        let factory = LlmFactory::new(config(&url), outputs, schemas).unwrap();
        let m = Muster::builder()
            .journal(journal.clone())
            .schema("report", json!({"type": "object"}))
            .schema("triage", triage_schema())
            .agent(
                AgentDef::new("triager", factory)
                    .capability(CapabilitySpec::new("triage", "report", "triage")),
            )
            .start()
            .await
            .unwrap();
        run_budgeted(&m, &script).await;
        let held = usages(&records(&m)).len();
        assert!(
            held < 2,
            "the ring no longer holds both usage records ({held}), yet the budget held"
        );
        m.shutdown().await;
    });
}

const MANIFEST: &str = r#"
name = "triager"
[[capabilities]]
name = "triage"
input = "report"
output = "triage"
[backend]
kind = "llm"
base_url = "http://127.0.0.1:8080/v1"
model = "smollm2-135m"
prompt = "Title: {{ input.title }}"
structured = "json_object"
"#;

fn manifest_schemas() -> SchemaStore {
    let s = SchemaStore::new();
    s.load_dir("schemas").unwrap(); // the manifest schema
    s.add("report", json!({"type": "object"})).unwrap();
    s.add("triage", triage_schema()).unwrap();
    s
}

#[test]
fn two_environment_variables_point_a_manifest_at_another_endpoint_and_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("triager.toml");
    std::fs::write(&path, MANIFEST).unwrap();
    let env = config::Map::from([
        (
            "MUSTER_TRIAGER__BACKEND__BASE_URL".to_string(),
            "https://api.openai.com/v1".to_string(),
        ),
        (
            "MUSTER_TRIAGER__BACKEND__MODEL".to_string(),
            "gpt-4o-mini".to_string(),
        ),
    ]);
    let m = muster::cast::Manifest::load(&path, &manifest_schemas(), Some(env)).unwrap();
    match m.backend {
        muster::cast::BackendSpec::Llm(c) => {
            assert_eq!(c.endpoint(), "https://api.openai.com/v1/chat/completions");
            assert_eq!(c.model, "gpt-4o-mini");
        }
        other => panic!("expected an llm backend, got {other:?}"),
    }
}

#[test]
fn a_template_with_an_unknown_variable_is_refused_at_load_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("triager.toml");
    std::fs::write(&path, MANIFEST.replace("input.title", "inptu.title")).unwrap();
    let errors = muster::cast::Manifest::load(&path, &manifest_schemas(), Some(config::Map::new()))
        .unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].file, path);
    assert_eq!(errors[0].field, "/backend/prompt");
    assert!(
        errors[0].message.contains("`inptu`"),
        "{}",
        errors[0].message
    );
    // And a bad override names its variable.
    std::fs::write(&path, MANIFEST).unwrap();
    let env = config::Map::from([(
        "MUSTER_TRIAGER__BACKEND__REPAIR".to_string(),
        "two".to_string(),
    )]);
    let errors = muster::cast::Manifest::load(&path, &manifest_schemas(), Some(env)).unwrap_err();
    assert_eq!(errors[0].field, "/backend/repair");
    assert!(
        errors[0]
            .message
            .contains("MUSTER_TRIAGER__BACKEND__REPAIR")
    );
}

#[test]
fn a_streamed_answer_renews_the_heartbeat_and_a_stalled_one_misses_it_in_seconds() {
    paused(async {
        let chunk = |c: &str| {
            format!(
                "data: {}\n\n",
                json!({"choices": [{"delta": {"content": c}}]})
            )
        };
        // A stream that goes on for 6 s, a chunk a second (three times the 2 s heartbeat
        // bound as a whole), then one that stalls after its first chunk.
        let parts = [
            "{\"component\": ",
            "\"parser\", ",
            "\"severity\": ",
            "\"low\"",
            "}",
        ];
        let mut slow: Vec<String> = parts.iter().map(|p| chunk(p)).collect();
        slow.push("data: [DONE]\n\n".into());
        let (url, _) = fake_server(vec![
            Reply::SlowStream(slow, Duration::from_secs(1)),
            Reply::StreamThenStall(vec![chunk("{")]),
        ])
        .await;
        let mut c = config(&url);
        c.stream = true; // stream_idle stays at its 30 s default: the heartbeat catches it
        let m = runtime_full(c, 1, Vec::new(), Some(Duration::from_secs(2))).await;
        let t0 = Instant::now();
        let out = within(60, "task", m.delegate(task().attempts(1)))
            .await
            .unwrap();
        assert_eq!(
            out.status,
            TaskStatus::Completed,
            "every chunk renewed the heartbeat"
        );
        assert!(t0.elapsed() >= Duration::from_secs(6));
        let t0 = Instant::now();
        let out = within(
            60,
            "task",
            m.delegate(task().attempts(1).timeout(Duration::from_secs(50))),
        )
        .await
        .unwrap();
        assert_eq!(out.status, TaskStatus::Escalated);
        let f = failures(&records(&m));
        assert_eq!(f[0].0, "heartbeat_missed", "{f:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "caught by the heartbeat bound"
        );
        m.shutdown().await;
    });
}

/// The `model_call` records of `records`, in order.
fn model_calls(records: &[Record]) -> Vec<muster::journal::ModelCall> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::ModelCall { call, .. } => Some((**call).clone()),
            _ => None,
        })
        .collect()
}

/// A runtime with one LLM agent journaling to the SQLite file `path`.
async fn runtime_on_file(config: LlmConfig, path: &std::path::Path) -> Muster {
    use muster::journal::{Durability, SqliteJournal};
    let journal = SqliteJournal::open(path, Durability::Sync).expect("a journal file");
    let schemas = Arc::new(SchemaStore::new());
    schemas.add("report", json!({"type": "object"})).unwrap();
    schemas.add("triage", triage_schema()).unwrap();
    let outputs = HashMap::from([("triage".to_string(), "triage".to_string())]);
    let factory = LlmFactory::new(config, outputs, schemas).unwrap();
    Muster::builder()
        .journal(Arc::new(journal))
        .schema("report", json!({"type": "object"}))
        .schema("triage", triage_schema())
        .agent(
            AgentDef::new("triager", factory)
                .capability(CapabilitySpec::new("triage", "report", "triage")),
        )
        .start()
        .await
        .unwrap()
}

/// Every byte of a SQLite journal: its file and its write-ahead log.
fn file_bytes(path: &std::path::Path) -> String {
    let mut all = std::fs::read(path).unwrap_or_default();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    all.extend(std::fs::read(&wal).unwrap_or_default());
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn recorded_prompts_journal_each_call_with_its_repair_turn_and_no_secret_reaches_the_file() {
    use muster::agents::llm::RecordMode;
    use muster::journal::TurnKind;
    // The real clock: the SQLite writer is a thread of its own, not on virtual time.
    common::real(async {
        // The model first answers with a field the schema refuses, holding a secret; the
        // repair turn shows it that answer and gets a valid one.
        let leaky =
            r#"{"component": "parser", "severity": "high", "api_key": "model-leaked-secret-42"}"#;
        let (url, _) =
            fake_server(vec![Reply::Body(answer(leaky)), Reply::Body(answer(VALID))]).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let mut c = config(&url);
        c.system = Some("You triage. Internal token tok_0123456789abcdef.".into());
        c.prompt = "Triage: {{ input.title }} (key {{ input.api_key }})".into();
        c.record = RecordMode::Prompts;
        c.redact = vec!["api_key".into()];
        c.redact_patterns = vec!["tok_[0-9a-f]{16}".into()];
        c.price = Some(muster::agents::llm::LlmPrice {
            prompt: 1.0,
            completion: 2.0,
        });
        let m = runtime_on_file(c, &path).await;
        let t = Task::new(
            "triage",
            json!({"title": "crash on start", "api_key": "input-secret-77"}),
        )
        .timeout(Duration::from_secs(10));
        let out = within(30, "task", m.delegate(t)).await.unwrap();
        assert_eq!(out.status, TaskStatus::Completed);
        let rs = records(&m);
        assert_eq!(
            kinds(&rs, out.id),
            [
                "task_submitted",
                "lease_granted",
                "model_call",
                "model_call",
                "model_usage",
                "result_accepted"
            ]
        );
        m.shutdown().await;
        drop(m);

        // What the file holds, read back as a user would.
        use muster::journal::{Durability, Journal, SqliteJournal};
        let j = SqliteJournal::open(&path, Durability::Sync).expect("the journal reopens");
        let calls = model_calls(&j.read_after(0));
        assert_eq!(calls.len(), 2, "{calls:?}");
        let (first, repair) = (&calls[0], &calls[1]);
        assert_eq!(
            (first.kind, first.turn, first.round),
            (TurnKind::First, 0, 0)
        );
        assert_eq!(
            (repair.kind, repair.turn, repair.round),
            (TurnKind::Repair, 1, 1)
        );
        assert_eq!(repair.label(), "repair turn 1");
        assert_eq!((first.attempt, first.model.as_str()), (1, "fake-model"));
        let usage = first.usage.as_ref().expect("the call's usage");
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (Some(20), Some(7), Some(27))
        );
        assert_eq!(usage.cost, Some((20.0 * 1.0 + 7.0 * 2.0) / 1e6));
        assert!(!first.truncated && !repair.truncated);
        // The first call: the system prompt and the rendered user prompt, redacted.
        let roles: Vec<&str> = first.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user"]);
        assert!(
            first.messages[0]
                .content
                .starts_with("You triage. Internal token [redacted]."),
            "{}",
            first.messages[0].content
        );
        assert_eq!(
            first.messages[1].content,
            "Triage: crash on start (key [redacted])"
        );
        assert_eq!(
            first.answer.as_deref(),
            Some(r#"{"component": "parser", "severity": "high", "api_key": "[redacted]"}"#)
        );
        // The repair turn: the answer being repaired and what was wrong with it.
        let roles: Vec<&str> = repair.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(repair.messages[2].content, first.answer.clone().unwrap());
        assert!(
            repair.messages[3].content.contains("api_key"),
            "the validator's errors: {}",
            repair.messages[3].content
        );
        assert_eq!(repair.answer.as_deref(), Some(VALID));
        // No secret anywhere in the file; the prompt's other text is there (the scan
        // reads the records' bytes).
        drop(j);
        let bytes = file_bytes(&path);
        assert!(bytes.contains("Triage: crash on start (key [redacted])"));
        for secret in ["tok_0123456789abcdef", "model-leaked-secret-42"] {
            assert!(!bytes.contains(secret), "{secret} is in the journal file");
        }
        // The input's own field is journaled with the task (task_submitted), never in a
        // recorded call.
        for c in &calls {
            let text = serde_json::to_string(c).unwrap();
            assert!(!text.contains("input-secret-77"), "{text}");
        }

        // `muster inspect --task` lists the calls: whole with --json, a line each as a table.
        let task_id = out.id.to_string();
        let file = path.to_str().unwrap();
        let mut cmd = common::muster();
        cmd.args(["inspect", "--journal", file, "--task", &task_id, "--json"]);
        let shown = common::output_within(60, cmd);
        assert!(shown.status.success(), "{shown:?}");
        let lines: Vec<Value> = String::from_utf8_lossy(&shown.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["record"] == "model_call")
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[1]["kind"].as_str(), lines[1]["epoch"].as_u64()),
            (Some("repair"), Some(1))
        );
        assert_eq!(
            lines[0]["messages"][1]["content"],
            "Triage: crash on start (key [redacted])"
        );
        let mut cmd = common::muster();
        cmd.args(["inspect", "--journal", file, "--task", &task_id]);
        let shown = common::output_within(60, cmd);
        let table = String::from_utf8_lossy(&shown.stdout);
        assert!(
            table.contains("repair turn 1 · fake-model · 27 tokens (20 prompt + 7 completion)"),
            "{table}"
        );
        assert!(
            table.contains("answer: {\"component\": \"parser\""),
            "{table}"
        );
    });
}

/// Runs [`task`] with one repair turn on an LLM agent journaling to a fresh SQLite file,
/// its system prompt holding a token; returns the file's bytes and the task's record
/// kinds.
async fn repaired_task_on_file(
    record: muster::agents::llm::RecordMode,
) -> (String, Vec<&'static str>) {
    let (url, _) = fake_server(vec![
        Reply::Body(answer(VIOLATING)),
        Reply::Body(answer(VALID)),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let mut c = config(&url);
    c.system = Some("Internal token tok_0123456789abcdef.".into());
    c.record = record;
    let m = runtime_on_file(c, &path).await;
    let out = within(30, "task", m.delegate(task())).await.unwrap();
    assert_eq!(out.status, TaskStatus::Completed);
    let kinds = kinds(&records(&m), out.id);
    m.shutdown().await;
    drop(m);
    (file_bytes(&path), kinds)
}

#[test]
fn without_record_no_call_is_journaled() {
    use muster::agents::llm::RecordMode;
    // The real clock: the SQLite writer is a thread of its own, not on virtual time.
    common::real(async {
        // The positive control: the same task with `record = "prompts"` journals both
        // calls, prompt and all, in the same file and in the bytes read the same way.
        let (bytes, kinds) = repaired_task_on_file(RecordMode::Prompts).await;
        assert_eq!(
            kinds,
            [
                "task_submitted",
                "lease_granted",
                "model_call",
                "model_call",
                "model_usage",
                "result_accepted"
            ]
        );
        assert!(
            bytes.contains("model_call"),
            "the control journaled no call"
        );
        assert!(
            bytes.contains("Internal token"),
            "the control's prompt is not in the file"
        );
        // Without `record`: the same task, not one call nor the prompt.
        let (bytes, kinds) = repaired_task_on_file(RecordMode::None).await;
        assert_eq!(
            kinds,
            [
                "task_submitted",
                "lease_granted",
                "model_usage",
                "result_accepted"
            ]
        );
        assert!(!bytes.contains("model_call"), "a model call was journaled");
        assert!(
            !bytes.contains("Internal token"),
            "the prompt was journaled"
        );
    });
}

/// One model-backed step.
const ONE_STEP: &str = r#"
    name = "one-step"
    input = "report"
    start = "triage"
    [steps.triage]
    capability = "triage"
    input = "{'title': 'a'}"
    timeout = "10s"
    on_exhausted = "fail"
    next = "done"
    [steps.done]
    terminal = "done"
"#;

/// A run with one step whose LLM agent records a first call and a repair turn: the run's
/// records hold its task's records but no model call, the task's hold both, and the
/// counts per lease come from the journal. On `file` (a SQLite journal) or in memory.
async fn model_calls_are_read_by_task_only(file: Option<&std::path::Path>) {
    use muster::agents::llm::RecordMode;
    use muster::workflow::{RunStatus, Workflow, WorkflowExt};
    let (url, _) = fake_server(vec![
        Reply::Body(answer(VIOLATING)),
        Reply::Body(answer(VALID)),
    ])
    .await;
    let mut c = config(&url);
    c.record = RecordMode::Prompts;
    let m = match file {
        Some(path) => runtime_on_file(c, path).await,
        None => runtime(c, 1).await,
    };
    let wf = Workflow::parse(ONE_STEP, std::path::Path::new("one.toml"), &m.schemas())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let o = within(60, "run", m.run_workflow(Arc::new(wf), json!({})))
        .await
        .unwrap();
    assert!(matches!(o.status, RunStatus::Completed), "{:?}", o.status);
    let step_task = records(&m)
        .iter()
        .find_map(|r| match &r.event {
            Event::TaskSubmitted {
                task, correlation, ..
            } if *correlation == o.run => Some(*task),
            _ => None,
        })
        .expect("the step's task");
    let j = m.journal();
    let count = |rs: &[Record]| rs.iter().filter(|r| r.event.kind() == "model_call").count();
    // What every read of the run decodes: its records, without a prompt.
    let run_records = j.records_of(o.run);
    assert!(
        run_records
            .iter()
            .any(|r| r.event.task() == Some(step_task)),
        "the run's records hold its task's"
    );
    assert_eq!(
        count(&run_records),
        0,
        "a model call is among the run's records"
    );
    // The task's records: both calls, the first and the repair turn.
    assert_eq!(count(&j.records_of(step_task)), 2);
    // The run's document counts them per lease from the journal.
    let counts = j.model_call_counts(&[step_task]);
    assert_eq!(counts.get(&(step_task, 1)), Some(&2), "{counts:?}");
    m.shutdown().await;
}

#[test]
fn a_runs_records_hold_no_model_call_while_its_tasks_records_hold_them_all() {
    paused(model_calls_are_read_by_task_only(None));
}

#[test]
fn a_runs_records_on_file_hold_no_model_call_while_its_tasks_records_hold_them_all() {
    // The real clock: the SQLite writer is a thread of its own, not on virtual time.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    common::real(model_calls_are_read_by_task_only(Some(&path)));
}

/// A failed attempt's reason quotes the model's answer, and it is journaled whether or not
/// calls are recorded: with `redact` set, neither a named field's value in the answer nor a
/// secret of the input reaches the `attempt_failed` record.
#[test]
fn a_failure_quoting_the_answer_is_redacted_without_recording() {
    paused(async {
        // Not JSON twice (the first turn and its repair): the attempt fails quoting it.
        // The named field's value stands again in prose, before the JSON that names it.
        let broken = r#"Sure! Using model-leaked-secret-42: {"component": "parser", "api_key": "model-leaked-secret-42", "note": "input-secret-77""#;
        let (url, _) = fake_server(vec![Reply::Body(answer(broken)); 2]).await;
        let mut c = config(&url);
        c.redact = vec!["api_key".into()];
        let m = runtime(c, 1).await;
        let t = Task::new(
            "triage",
            json!({"title": "crash on start", "api_key": "input-secret-77"}),
        )
        .timeout(Duration::from_secs(10))
        .attempts(1);
        let out = within(30, "task", m.delegate(t)).await.unwrap();
        assert_eq!(out.status, TaskStatus::Escalated);
        let f = failures(&records(&m));
        assert_eq!(f.len(), 1, "{f:?}");
        let detail = &f[0].1;
        assert!(
            detail.contains("not JSON"),
            "the failure says why: {detail}"
        );
        assert!(detail.contains("[redacted]"), "{detail}");
        for secret in ["model-leaked-secret-42", "input-secret-77"] {
            assert!(!detail.contains(secret), "{secret} in {detail}");
        }
        m.shutdown().await;
    });
}

#[test]
fn a_bad_record_value_is_refused_at_load_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("triager.toml");
    std::fs::write(&path, format!("{MANIFEST}record = \"everything\"\n")).unwrap();
    let errors = muster::cast::Manifest::load(&path, &manifest_schemas(), Some(config::Map::new()))
        .unwrap_err();
    assert_eq!(errors[0].file, path);
    assert_eq!(errors[0].field, "/backend/record", "{errors:?}");
    std::fs::write(
        &path,
        format!("{MANIFEST}record = \"prompts\"\nredact_patterns = [\"(unclosed\"]\n"),
    )
    .unwrap();
    let errors = muster::cast::Manifest::load(&path, &manifest_schemas(), Some(config::Map::new()))
        .unwrap_err();
    assert_eq!(errors[0].file, path);
    assert_eq!(errors[0].field, "/backend/redact_patterns/0", "{errors:?}");
    std::fs::write(
        &path,
        format!("{MANIFEST}record = \"prompts\"\nredact = [\"api_key\"]\n"),
    )
    .unwrap();
    let m = muster::cast::Manifest::load(&path, &manifest_schemas(), Some(config::Map::new()))
        .expect("a recording manifest loads");
    match m.backend {
        muster::cast::BackendSpec::Llm(c) => {
            assert_eq!(c.record, muster::agents::llm::RecordMode::Prompts)
        }
        other => panic!("expected an llm backend, got {other:?}"),
    }
}
