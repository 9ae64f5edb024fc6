//! `muster serve` as an A2A agent (protocol 1.0, docs/a2a.md): the agent card at
//! `/.well-known/agent-card.json` and the JSON-RPC endpoint `POST /a2a` (`SendMessage`,
//! `SendStreamingMessage`, `GetTask`, `CancelTask`).
//!
//! A message names its skill in `metadata.skill`: a capability (one delegated task:
//! fenced, contract-checked, journaled) or `workflow:NAME` (a run). The A2A task id is the
//! muster task or run id, and its state is a fold over the journal:
//!
//! ```text
//!  task: submitted (no lease yet) ─▶ working (leased) ─▶ completed | failed (escalated) | canceled
//!  run:  working ─▶ input-required (waits at a gate) ─▶ working ─▶ completed | failed | canceled
//! ```
//!
//! It owns the translation between A2A and the node's commands; it must not run tasks or
//! workflows itself (the node does) nor keep any view that is not a fold over the journal
//! (the one thing it remembers is each task's A2A `contextId`, bounded).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::admission::RETRY_AFTER_SECS;
use super::auth::{Caller, Role};
use super::protocol::{Cancelled, Command, DecideRefused};
use super::routes::{AppState, MAX_ATTEMPTS, MAX_TIMEOUT_MS, ask, read, records_of};
use super::views;
use muster_a2a::types::{
    AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Artifact, CARD_PATH, JSONRPC_BINDING,
    Message, PROTOCOL_VERSION, Part, SendMessageRequest, StreamResponse, Task,
    TaskArtifactUpdateEvent, TaskState, TaskStatus, TaskStatusUpdateEvent, code, method,
};
use muster_core::delegation::SubmitError;

/// The path of the JSON-RPC endpoint.
pub const RPC_PATH: &str = "/a2a";
/// The prefix of a workflow's skill id (`workflow:review`).
pub const WORKFLOW_SKILL: &str = "workflow:";
/// How long a blocking `SendMessage` waits for its task to end (or wait for input) before
/// it answers with the task as it is.
pub const BLOCKING_WAIT: Duration = Duration::from_secs(600);
/// The most tasks whose A2A `contextId` the node remembers.
pub const MAX_CONTEXTS: usize = 65_536;

/// What the A2A routes know of the node beyond [`AppState`]: whether it serves TLS (the
/// card's URL scheme) and the contexts of the tasks it started.
#[derive(Debug, Clone, Default)]
pub struct A2aNode {
    /// The listener serves TLS (`https` in the card).
    pub tls: bool,
    contexts: Arc<parking_lot::Mutex<Contexts>>,
}

impl A2aNode {
    /// The A2A side of a node that serves TLS or not.
    pub fn new(tls: bool) -> Self {
        A2aNode {
            tls,
            contexts: Arc::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Contexts {
    by_task: HashMap<Uuid, String>,
    order: VecDeque<Uuid>,
}

impl Contexts {
    fn insert(&mut self, task: Uuid, context: String) {
        if self.by_task.insert(task, context).is_none() {
            self.order.push_back(task);
        }
        while self.order.len() > MAX_CONTEXTS {
            if let Some(old) = self.order.pop_front() {
                self.by_task.remove(&old);
            }
        }
    }
}

/// A JSON-RPC error: its code and a message naming what was wrong.
#[derive(Debug, Clone)]
struct RpcError {
    code: i64,
    message: String,
}

fn rpc_err(code: i64, message: impl Into<String>) -> RpcError {
    RpcError {
        code,
        message: message.into(),
    }
}

fn invalid_params(message: impl Into<String>) -> RpcError {
    rpc_err(code::INVALID_PARAMS, message)
}

fn error_doc(id: &Value, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}})
}

fn result_doc(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// `GET /.well-known/agent-card.json`: the node's card (no token needed; it declares the
/// bearer scheme its endpoint wants).
async fn card(
    State(st): State<AppState>,
    node: Option<Extension<A2aNode>>,
    headers: HeaderMap,
) -> Response {
    let tls = node.map(|Extension(n)| n.tls).unwrap_or(false);
    axum::Json(agent_card(&st, &headers, tls)).into_response()
}

/// The node's card: its skills are the registry's capabilities and the loaded workflows.
fn agent_card(st: &AppState, headers: &HeaderMap, tls: bool) -> AgentCard {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    let scheme = if tls { "https" } else { "http" };
    let schemas = st.muster.schemas();
    let schema_text = |name: &str| {
        schemas
            .get(name)
            .map(|s| s.document.to_string())
            .unwrap_or_else(|_| format!("\"{name}\""))
    };
    let mut caps: std::collections::BTreeMap<String, (Vec<String>, String, String)> =
        Default::default();
    for a in st.muster.agents() {
        for c in &a.capabilities {
            let e = caps
                .entry(c.name.clone())
                .or_insert_with(|| (Vec::new(), c.input.clone(), c.output.clone()));
            if !e.0.contains(&a.agent) {
                e.0.push(a.agent.clone());
            }
        }
    }
    let mut skills: Vec<AgentSkill> = caps
        .into_iter()
        .map(|(name, (agents, input, output))| AgentSkill {
            description: format!(
                "Capability `{name}` of muster (served by {}): one delegated task, fenced, \
                 contract-checked and journaled. Send its input as a data part and \
                 metadata.skill = \"{name}\". Input schema `{input}`: {}. Output schema \
                 `{output}`: {}.",
                agents.join(", "),
                schema_text(&input),
                schema_text(&output)
            ),
            examples: vec![
                json!({"metadata": {"skill": name}, "parts": [{"data": {}}]}).to_string(),
            ],
            name: name.clone(),
            id: name,
            tags: vec!["capability".into()],
            input_modes: vec!["application/json".into()],
            output_modes: vec!["application/json".into()],
        })
        .collect();
    for (name, wf) in st.workflows.iter() {
        let id = format!("{WORKFLOW_SKILL}{name}");
        let input = if wf.input.is_empty() {
            "any JSON".to_string()
        } else {
            format!("schema `{}`: {}", wf.input, schema_text(&wf.input))
        };
        skills.push(AgentSkill {
            description: format!(
                "Workflow `{name}` of muster: a run{}. Send its input as a data part and \
                 metadata.skill = \"{id}\". Input: {input}. The task waits \
                 (input-required) at each gate; answer with a message on the task holding \
                 {{\"decision\": \"approve\"}} or {{\"decision\": \"reject\"}}. Its artifact is \
                 each step's output.",
                if wf.description.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", wf.description)
                }
            ),
            examples: vec![json!({"metadata": {"skill": id}, "parts": [{"data": {}}]}).to_string()],
            name: name.clone(),
            id,
            tags: vec!["workflow".into()],
            input_modes: vec!["application/json".into()],
            output_modes: vec!["application/json".into()],
        });
    }
    let mut security_schemes = Map::new();
    security_schemes.insert(
        "bearer".into(),
        json!({"httpAuthSecurityScheme": {
            "scheme": "Bearer",
            "description": "A token of the node (muster serve --token or --tokens): role submitter to send messages and cancel its own runs, operator to answer gates."
        }}),
    );
    AgentCard {
        name: "muster".into(),
        description: "A muster node: every capability of its agents and every workflow it \
                      loaded, as skills. Tasks are fenced, contract-checked, supervised and \
                      journaled (docs/a2a.md)."
            .into(),
        supported_interfaces: vec![AgentInterface {
            url: format!("{scheme}://{host}{RPC_PATH}"),
            protocol_binding: JSONRPC_BINDING.into(),
            protocol_version: PROTOCOL_VERSION.into(),
        }],
        version: env!("CARGO_PKG_VERSION").into(),
        capabilities: AgentCapabilities {
            streaming: true,
            push_notifications: false,
        },
        security_schemes,
        security_requirements: vec![json!({"schemes": {"bearer": {"list": []}}})],
        default_input_modes: vec!["application/json".into(), "text/plain".into()],
        default_output_modes: vec!["application/json".into()],
        skills,
    }
}

/// The A2A routes that need no token: the agent card.
pub fn public_routes() -> axum::Router<AppState> {
    axum::Router::new().route(CARD_PATH, axum::routing::get(card))
}

/// The A2A routes behind the token check: the JSON-RPC endpoint.
pub fn protected_routes() -> axum::Router<AppState> {
    axum::Router::new().route(RPC_PATH, axum::routing::post(rpc))
}

/// `POST /a2a`: one JSON-RPC request (batches are refused). Every failure is a JSON-RPC
/// error with a message naming the field and what was expected.
async fn rpc(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    node: Option<Extension<A2aNode>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let node = node.map(|Extension(n)| n).unwrap_or_default();
    let doc: Value = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => {
            let e = rpc_err(
                code::PARSE_ERROR,
                format!("the body is not JSON: {e} (send one JSON-RPC 2.0 request)"),
            );
            return axum::Json(error_doc(&Value::Null, &e)).into_response();
        }
    };
    let id = doc.get("id").cloned().unwrap_or(Value::Null);
    let reply = |r: Result<Value, RpcError>| {
        axum::Json(match r {
            Ok(v) => result_doc(&id, v),
            Err(e) => error_doc(&id, &e),
        })
        .into_response()
    };
    let (method, params) = match request_parts(&doc, &headers) {
        Ok(p) => p,
        Err(e) => return reply(Err(e)),
    };
    match method.as_str() {
        method::SEND_MESSAGE => reply(send_message(&st, &caller, &node, params).await),
        method::SEND_STREAMING_MESSAGE => {
            let Some(slot) = st.streams.open() else {
                return reply(Err(rpc_err(
                    code::INTERNAL_ERROR,
                    format!(
                        "too many event streams are open (at most {}); try again later",
                        super::events::MAX_STREAMS
                    ),
                )));
            };
            let started = match parse_send(params) {
                Ok(req) => start(&st, &caller, &node, &req).await,
                Err(e) => Err(e),
            };
            match started {
                Ok((task, kind, _)) => stream_response(st, node, id, task, kind, slot),
                Err(e) => reply(Err(e)),
            }
        }
        method::GET_TASK => reply(get_task(&st, &node, params).await),
        method::CANCEL_TASK => reply(cancel_task(&st, &caller, &node, params).await),
        method::LIST_TASKS => reply(Err(rpc_err(
            code::UNSUPPORTED_OPERATION,
            "ListTasks is not supported by muster's A2A endpoint: list runs with GET /v1/runs \
             (docs/api.md), read one with GetTask",
        ))),
        other => reply(Err(unknown_method(other))),
    }
}

fn unknown_method(m: &str) -> RpcError {
    let legacy = matches!(
        m,
        "message/send" | "message/stream" | "tasks/get" | "tasks/cancel" | "tasks/list"
    );
    rpc_err(
        code::METHOD_NOT_FOUND,
        if legacy {
            format!(
                "`{m}` is an A2A 0.3 method; this node speaks A2A {PROTOCOL_VERSION}: SendMessage, \
                 SendStreamingMessage, GetTask, CancelTask"
            )
        } else {
            format!(
                "no method `{}`; this node answers SendMessage, SendStreamingMessage, GetTask, \
                 CancelTask (A2A {PROTOCOL_VERSION})",
                muster_core::util::bounded_text(m)
            )
        },
    )
}

/// The method and params of a JSON-RPC 2.0 request, once its shape and version are
/// checked.
fn request_parts(doc: &Value, headers: &HeaderMap) -> Result<(String, Value), RpcError> {
    let Some(obj) = doc.as_object() else {
        return Err(rpc_err(
            code::INVALID_REQUEST,
            if doc.is_array() {
                "batches are not supported: send one JSON-RPC request per POST".to_string()
            } else {
                "the body must be a JSON-RPC 2.0 request object".to_string()
            },
        ));
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(rpc_err(code::INVALID_REQUEST, "`jsonrpc` must be \"2.0\""));
    }
    if let Some(id) = obj.get("id")
        && !(id.is_string() || id.is_number() || id.is_null())
    {
        return Err(rpc_err(
            code::INVALID_REQUEST,
            "`id` must be a string, a number or null",
        ));
    }
    let method = obj
        .get("method")
        .and_then(Value::as_str)
        .ok_or_else(|| rpc_err(code::INVALID_REQUEST, "`method` must be a string"))?;
    if let Some(v) = headers.get("a2a-version") {
        let v = v.to_str().unwrap_or("").trim();
        if !(v.is_empty() || v == "1" || v.starts_with("1.")) {
            return Err(rpc_err(
                code::VERSION_NOT_SUPPORTED,
                format!(
                    "A2A-Version `{}` is not supported; this node speaks {PROTOCOL_VERSION}",
                    muster_core::util::bounded_text(v)
                ),
            ));
        }
    }
    let params = obj.get("params").cloned().unwrap_or(Value::Null);
    if !params.is_object() {
        return Err(invalid_params(format!(
            "`params` of {method} must be an object"
        )));
    }
    Ok((method.to_string(), params))
}

/// What an A2A task is in muster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A bare delegated task.
    Task,
    /// A workflow run.
    Run,
}

/// A task's A2A view at one moment.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    kind: Kind,
    state: TaskState,
    /// Why it failed, what it waits for.
    message: Option<String>,
    /// The output of a completed task or run.
    output: Option<Value>,
    /// The gate a run waits at.
    gate: Option<String>,
}

/// The A2A view of `id` from the journal, if it is a task or a run this journal knows.
async fn snapshot(st: &AppState, id: Uuid) -> Result<Option<Snapshot>, RpcError> {
    // Asked before the read: a run started a moment ago may have journaled nothing yet
    // when its records are read and have ended by the time they are looked at.
    let live_before = st.live.workflow(id).is_some();
    let records = read(&st.journal, move |j| records_of(j, id))
        .await
        .map_err(|e| rpc_err(code::INTERNAL_ERROR, e.body()["error"].to_string()))?;
    // Only the run's status and outcome are read: no lease's model calls.
    let no_calls = std::collections::HashMap::new();
    if let Some(doc) = views::run_detail(&records, id, st.live.contains(id), &no_calls) {
        let status = doc["status"].as_str().unwrap_or("running");
        let outcome = &doc["outcome"];
        let s = match status {
            "completed" => Snapshot {
                kind: Kind::Run,
                state: TaskState::Completed,
                message: None,
                output: Some(outcome["outputs"].clone()),
                gate: None,
            },
            "failed" | "cancelled" => Snapshot {
                kind: Kind::Run,
                state: if status == "failed" {
                    TaskState::Failed
                } else {
                    TaskState::Canceled
                },
                message: Some(format!(
                    "run {id} {status} at step `{}`: {}",
                    outcome["step"].as_str().unwrap_or("?"),
                    outcome["reason"].as_str().unwrap_or("no reason given")
                )),
                output: None,
                gate: None,
            },
            "waiting" => {
                let gate = outcome["gate"].as_str().unwrap_or_default().to_string();
                Snapshot {
                    kind: Kind::Run,
                    state: TaskState::InputRequired,
                    message: Some(format!(
                        "run {id} waits at gate `{gate}`: {} Answer with a message on this task \
                         holding a data part {{\"decision\": \"approve\"}} or {{\"decision\": \
                         \"reject\"}} (and an optional \"note\"); it needs a token of role operator.",
                        outcome["question"].as_str().unwrap_or_default()
                    )),
                    output: None,
                    gate: Some(gate),
                }
            }
            _ => Snapshot {
                kind: Kind::Run,
                state: TaskState::Working,
                message: None,
                output: None,
                gate: None,
            },
        };
        return Ok(Some(s));
    }
    if live_before || st.live.workflow(id).is_some() {
        return Ok(Some(Snapshot {
            kind: Kind::Run,
            state: TaskState::Working,
            message: None,
            output: None,
            gate: None,
        }));
    }
    let Some(t) = views::task(&records, id) else {
        return Ok(None);
    };
    let (state, message, output) = match t.status.as_str() {
        "completed" => (TaskState::Completed, None, Some(t.output.clone())),
        "escalated" => (
            TaskState::Failed,
            Some(format!(
                "task {id} failed after {} attempt(s): {}",
                t.attempts,
                t.reason.clone().unwrap_or_default()
            )),
            None,
        ),
        "cancelled" => (
            TaskState::Canceled,
            Some(format!(
                "task {id} was cancelled: {}",
                t.reason.clone().unwrap_or_default()
            )),
            None,
        ),
        _ if t.leases.is_empty() => (TaskState::Submitted, None, None),
        _ => (TaskState::Working, None, None),
    };
    Ok(Some(Snapshot {
        kind: Kind::Task,
        state,
        message,
        output,
        gate: None,
    }))
}

fn context_of(node: &A2aNode, id: Uuid) -> String {
    node.contexts
        .lock()
        .by_task
        .get(&id)
        .cloned()
        .unwrap_or_else(|| id.to_string())
}

fn status_of(s: &Snapshot) -> TaskStatus {
    TaskStatus {
        state: s.state,
        message: s.message.clone().map(Message::agent_text),
        timestamp: None,
    }
}

fn artifact_of(s: &Snapshot) -> Option<Artifact> {
    let out = s.output.clone()?;
    Some(Artifact {
        artifact_id: "output".into(),
        name: Some("output".into()),
        parts: vec![Part::data(out)],
    })
}

/// The A2A task of a snapshot.
fn task_doc(node: &A2aNode, id: Uuid, s: &Snapshot) -> Task {
    let mut meta = Map::new();
    meta.insert(
        "muster".into(),
        json!({"kind": if s.kind == Kind::Run { "run" } else { "task" }, "id": id}),
    );
    Task {
        id: id.to_string(),
        context_id: context_of(node, id),
        status: status_of(s),
        artifacts: artifact_of(s).into_iter().collect(),
        history: Vec::new(),
        metadata: Some(meta),
    }
}

fn parse_task_id(params: &Value) -> Result<Uuid, RpcError> {
    let raw = params
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_params("`params.id` must be the task's id (a string)"))?;
    Uuid::parse_str(raw.trim()).map_err(|_| {
        rpc_err(
            code::TASK_NOT_FOUND,
            format!(
                "no task `{}`: muster's task ids are UUIDs",
                muster_core::util::bounded_text(raw)
            ),
        )
    })
}

fn not_found(id: Uuid) -> RpcError {
    rpc_err(
        code::TASK_NOT_FOUND,
        format!("no task or run `{id}` in this node's journal"),
    )
}

async fn get_task(st: &AppState, node: &A2aNode, params: Value) -> Result<Value, RpcError> {
    let id = parse_task_id(&params)?;
    let s = snapshot(st, id).await?.ok_or_else(|| not_found(id))?;
    Ok(serde_json::to_value(task_doc(node, id, &s)).unwrap_or_default())
}

/// The request of a `SendMessage`, read leniently enough for any A2A 1.0 client and
/// strictly enough to name what is wrong.
fn parse_send(params: Value) -> Result<SendMessageRequest, RpcError> {
    serde_json::from_value(params).map_err(|e| {
        invalid_params(format!(
            "params: {e} (expected {{\"message\": {{\"messageId\", \"role\", \"parts\": [...], \
             \"metadata\": {{\"skill\": ...}}}}}})"
        ))
    })
}

/// The skill a message names: `message.metadata.skill`, else the request's
/// `metadata.skill`.
fn skill_of(req: &SendMessageRequest) -> Option<Result<String, RpcError>> {
    let from = |m: &Option<Map<String, Value>>, at: &str| {
        m.as_ref().and_then(|m| m.get("skill")).map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| invalid_params(format!("`{at}.skill` must be a string")))
        })
    };
    from(&req.message.metadata, "message.metadata").or_else(|| from(&req.metadata, "metadata"))
}

/// The input a message carries: its first data part, else its first text part (as JSON
/// when it parses as JSON, else wrapped as `{"text": ...}`).
fn input_of(message: &Message) -> Result<Value, RpcError> {
    if let Some(d) = message.parts.iter().find_map(|p| p.data.clone()) {
        return Ok(d);
    }
    if let Some(t) = message.parts.iter().find_map(|p| p.text.clone()) {
        return Ok(serde_json::from_str::<Value>(&t).unwrap_or_else(|_| json!({"text": t})));
    }
    Err(invalid_params(
        "`message.parts` holds no data or text part: send the input as a data part",
    ))
}

/// A bounded number from the message's metadata (`timeout_ms`, `attempts`).
fn meta_number(req: &SendMessageRequest, key: &str, max: u64) -> Result<Option<u64>, RpcError> {
    let Some(v) = req.message.metadata.as_ref().and_then(|m| m.get(key)) else {
        return Ok(None);
    };
    match v.as_u64() {
        Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(invalid_params(format!(
            "`message.metadata.{key}` must be a whole number from 1 to {max}, got {}",
            muster_core::util::bounded_text(&v.to_string())
        ))),
    }
}

/// Starts what a message asks for (or answers the gate its task waits at): the muster id
/// of the A2A task and what it is.
async fn start(
    st: &AppState,
    caller: &Caller,
    node: &A2aNode,
    req: &SendMessageRequest,
) -> Result<(Uuid, Kind, Option<String>), RpcError> {
    if let Some(task) = req.message.task_id.as_deref().filter(|t| !t.is_empty()) {
        let (id, gate) = continue_task(st, caller, req, task).await?;
        return Ok((id, Kind::Run, Some(gate)));
    }
    let skill = skill_of(req).ok_or_else(|| {
        invalid_params(
            "name the skill in `message.metadata.skill`: a capability, or `workflow:NAME` \
             (the agent card lists them)",
        )
    })??;
    let input = input_of(&req.message)?;
    let id = if let Some(name) = skill.strip_prefix(WORKFLOW_SKILL) {
        let wf = st.workflows.get(name).cloned().ok_or_else(|| {
            invalid_params(format!(
                "no workflow `{name}` is loaded (loaded: {})",
                st.workflows.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        if !wf.input.is_empty() {
            st.muster
                .schemas()
                .validate(&wf.input, &input)
                .map_err(|e| {
                    invalid_params(format!(
                        "the message's input does not fit schema `{}` of workflow `{name}`: {e}",
                        wf.input
                    ))
                })?;
        }
        let run = ask(st, |reply| Command::StartRun {
            workflow: wf,
            input,
            by: Some(caller.id),
            reply,
        })
        .await
        .map_err(|e| rpc_err(code::INTERNAL_ERROR, api_text(&e)))?
        .map_err(|full| {
            rpc_err(
                code::INTERNAL_ERROR,
                format!(
                    "this node has {} runs in flight, its bound (--max-runs {}); try again in {RETRY_AFTER_SECS} s",
                    full.in_flight, full.max
                ),
            )
        })?;
        (run, Kind::Run)
    } else {
        let declared = st
            .muster
            .agents()
            .iter()
            .any(|a| a.capabilities.iter().any(|c| c.name == skill));
        if !declared {
            return Err(invalid_params(format!(
                "no skill `{}`: no agent declares that capability and it does not start with \
                 `{WORKFLOW_SKILL}` (the agent card lists the skills)",
                muster_core::util::bounded_text(&skill)
            )));
        }
        let timeout_ms = meta_number(req, "timeout_ms", MAX_TIMEOUT_MS)?.unwrap_or(30_000);
        let attempts = meta_number(req, "attempts", u64::from(MAX_ATTEMPTS))?.unwrap_or(3) as u32;
        let slot = st.admission.tasks.take().ok_or_else(|| {
            rpc_err(
                code::INTERNAL_ERROR,
                format!(
                    "this node has {} bare tasks in flight, its bound (--max-tasks {}); try again later",
                    st.admission.tasks.in_use(),
                    st.admission.tasks.max()
                ),
            )
        })?;
        let task = muster_core::delegation::Task::new(skill, input)
            .timeout(Duration::from_millis(timeout_ms))
            .attempts(attempts)
            .sender("a2a");
        let r = ask(st, |reply| Command::SubmitTask {
            task: Box::new(task),
            slot: Some(slot),
            reply,
        })
        .await
        .map_err(|e| rpc_err(code::INTERNAL_ERROR, api_text(&e)))?;
        match r {
            Ok(id) => (id, Kind::Task),
            Err(e @ (SubmitError::InvalidInput { .. } | SubmitError::InvalidTask { .. })) => {
                return Err(invalid_params(e.to_string()));
            }
            Err(e) => return Err(rpc_err(code::INTERNAL_ERROR, e.to_string())),
        }
    };
    let context = req
        .message
        .context_id
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| id.0.to_string());
    node.contexts.lock().insert(id.0, context);
    Ok((id.0, id.1, None))
}

fn api_text(e: &super::error::ApiError) -> String {
    e.body()["error"]
        .as_str()
        .unwrap_or("the node refused")
        .to_string()
}

/// A message on an existing task: the answer to the gate a run waits at.
async fn continue_task(
    st: &AppState,
    caller: &Caller,
    req: &SendMessageRequest,
    task: &str,
) -> Result<(Uuid, String), RpcError> {
    let id = parse_task_id(&json!({"id": task}))?;
    let s = snapshot(st, id).await?.ok_or_else(|| not_found(id))?;
    let Some(gate) = s
        .gate
        .clone()
        .filter(|_| s.state == TaskState::InputRequired)
    else {
        return Err(invalid_params(format!(
            "task {id} does not wait for input (it is {}): only a run waiting at a gate \
             takes a message on its task",
            s.state.as_str()
        )));
    };
    if !caller.role.allows(Role::Operator) {
        return Err(invalid_params(format!(
            "answering gate `{gate}` of run {id} needs role `operator`; {}",
            caller.describe()
        )));
    }
    let answer = input_of(&req.message)?;
    let decision = match &answer {
        Value::Object(m) => m
            .get("decision")
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
    .or_else(|| {
        answer
            .get("text")
            .and_then(Value::as_str)
            .map(|t| t.trim().to_lowercase())
    })
    .unwrap_or_default();
    let approved = match decision.as_str() {
        "approve" => true,
        "reject" => false,
        other => {
            return Err(invalid_params(format!(
                "the answer to gate `{gate}` must hold \"decision\": \"approve\" or \"reject\", got `{}`",
                muster_core::util::bounded_text(other)
            )));
        }
    };
    let note = answer
        .get("note")
        .and_then(Value::as_str)
        .unwrap_or("decided over A2A")
        .to_string();
    let r = ask(st, |reply| Command::Decide {
        run: id,
        gate: gate.clone(),
        approved,
        note,
        by: caller.name.clone(),
        retries: super::node::DECIDE_RETRIES,
        reply,
    })
    .await
    .map_err(|e| rpc_err(code::INTERNAL_ERROR, api_text(&e)))?;
    match r {
        Ok(()) => Ok((id, gate)),
        Err(DecideRefused::AlreadyDecided { approved }) => Err(invalid_params(format!(
            "gate `{gate}` of run {id} is already decided ({})",
            if approved { "approved" } else { "rejected" }
        ))),
        Err(DecideRefused::NotWaiting) => Err(invalid_params(format!(
            "run {id} does not wait at gate `{gate}` on this node"
        ))),
    }
}

/// Waits until `id`'s snapshot differs from `last` (or `last` is `None`), or `within`
/// passes; the snapshot then. Wakes on the journal's records of `id`, and once a second
/// in case a record was missed.
async fn next_change(
    st: &AppState,
    id: Uuid,
    last: Option<&Snapshot>,
    within: Duration,
) -> Result<Option<Snapshot>, RpcError> {
    let deadline = tokio::time::Instant::now() + within;
    let mut tap = st.journal.subscribe();
    loop {
        let now = snapshot(st, id).await?;
        if now.as_ref() != last || tokio::time::Instant::now() >= deadline {
            return Ok(now);
        }
        let tick = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
        loop {
            match tokio::time::timeout_at(tick, tap.recv()).await {
                Ok(Ok(r)) if r.event.task() == Some(id) || r.event.run() == Some(id) => break,
                Ok(Ok(_)) => continue,
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
            }
        }
        if *st.stop.borrow() {
            return Ok(now);
        }
    }
}

async fn send_message(
    st: &AppState,
    caller: &Caller,
    node: &A2aNode,
    params: Value,
) -> Result<Value, RpcError> {
    let req = parse_send(params)?;
    let (id, kind, answered) = start(st, caller, node, &req).await?;
    let immediate = req
        .configuration
        .as_ref()
        .is_some_and(|c| c.return_immediately);
    let deadline = tokio::time::Instant::now() + BLOCKING_WAIT;
    let mut last: Option<Snapshot> = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let now = next_change(st, id, last.as_ref(), left).await?;
        let s = now.unwrap_or_else(|| fresh(kind));
        // A gate just answered still shows `input-required` until the run moves on.
        let settled = s.state.is_terminal()
            || (s.state.is_interrupted() && (answered.is_none() || s.gate != answered));
        if immediate || settled || left.is_zero() {
            let task = task_doc(node, id, &s);
            return Ok(json!({"task": task}));
        }
        last = Some(s);
    }
}

/// The snapshot of a task or run this node just started, before the journal shows it.
fn fresh(kind: Kind) -> Snapshot {
    Snapshot {
        kind,
        state: if kind == Kind::Run {
            TaskState::Working
        } else {
            TaskState::Submitted
        },
        message: None,
        output: None,
        gate: None,
    }
}

/// `SendStreamingMessage`'s answer: the task, then a status update on every change (an
/// artifact update before `completed`), until the task ends or waits for input.
fn stream_response(
    st: AppState,
    node: A2aNode,
    rpc_id: Value,
    id: Uuid,
    kind: Kind,
    slot: super::events::StreamSlot,
) -> Response {
    Sse::new(events(st, node, rpc_id, id, kind, slot))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Where a stream is: what it showed last, what it has yet to send, whether it ends after.
struct Follow {
    last: Option<Snapshot>,
    pending: VecDeque<StreamResponse>,
    ending: bool,
    _slot: super::events::StreamSlot,
}

fn events(
    st: AppState,
    node: A2aNode,
    rpc_id: Value,
    id: Uuid,
    kind: Kind,
    slot: super::events::StreamSlot,
) -> impl Stream<Item = Result<SseEvent, std::convert::Infallible>> {
    let follow = Follow {
        last: None,
        pending: VecDeque::new(),
        ending: false,
        _slot: slot,
    };
    futures::stream::unfold(follow, move |mut f| {
        let st = st.clone();
        let node = node.clone();
        let rpc_id = rpc_id.clone();
        async move {
            if f.pending.is_empty() {
                if f.ending || *st.stop.borrow() {
                    return None;
                }
                let first = f.last.is_none();
                let now = match next_change(&st, id, f.last.as_ref(), BLOCKING_WAIT).await {
                    Ok(Some(s)) => s,
                    Ok(None) if first => fresh(kind),
                    Ok(None) | Err(_) => return None,
                };
                if !first && Some(&now) == f.last.as_ref() {
                    // The bound passed with nothing new: the client reads on with GetTask.
                    return None;
                }
                f.ending = now.state.is_terminal() || now.state.is_interrupted();
                if first {
                    f.pending
                        .push_back(StreamResponse::Task(task_doc(&node, id, &now)));
                } else {
                    let context_id = context_of(&node, id);
                    if let Some(a) = artifact_of(&now) {
                        f.pending.push_back(StreamResponse::ArtifactUpdate(
                            TaskArtifactUpdateEvent {
                                task_id: id.to_string(),
                                context_id: context_id.clone(),
                                artifact: a,
                                last_chunk: true,
                            },
                        ));
                    }
                    f.pending
                        .push_back(StreamResponse::StatusUpdate(TaskStatusUpdateEvent {
                            task_id: id.to_string(),
                            context_id,
                            status: status_of(&now),
                        }));
                }
                f.last = Some(now);
            }
            let next = f.pending.pop_front()?;
            let doc = result_doc(&rpc_id, serde_json::to_value(next).unwrap_or_default());
            Some((Ok(SseEvent::default().data(doc.to_string())), f))
        }
    })
}

async fn cancel_task(
    st: &AppState,
    caller: &Caller,
    node: &A2aNode,
    params: Value,
) -> Result<Value, RpcError> {
    let id = parse_task_id(&params)?;
    let s = snapshot(st, id).await?.ok_or_else(|| not_found(id))?;
    if s.state.is_terminal() {
        return Err(rpc_err(
            code::TASK_NOT_CANCELABLE,
            format!(
                "task {id} has already ended ({}); there is nothing to cancel",
                s.state.as_str()
            ),
        ));
    }
    match s.kind {
        Kind::Run => {
            let own_only = !caller.role.allows(Role::Operator);
            let r = ask(st, |reply| Command::CancelRun {
                run: id,
                reason: "cancelled over A2A (CancelTask)".into(),
                by: caller.name.clone(),
                only_if_started_by: own_only.then_some(caller.id),
                reply,
            })
            .await
            .map_err(|e| rpc_err(code::INTERNAL_ERROR, api_text(&e)))?;
            match r {
                Cancelled::Done => {}
                Cancelled::NotStarter => {
                    return Err(invalid_params(format!(
                        "cancelling run {id} needs role `operator`: a `submitter` cancels only \
                         the runs it started; {}",
                        caller.describe()
                    )));
                }
                Cancelled::NotDriven => {
                    return Err(rpc_err(
                        code::TASK_NOT_CANCELABLE,
                        format!(
                            "run {id} is not driven by this node; there is nothing to cancel here"
                        ),
                    ));
                }
            }
        }
        Kind::Task => {
            let live = ask(st, |reply| Command::CancelTask { task: id, reply })
                .await
                .map_err(|e| rpc_err(code::INTERNAL_ERROR, api_text(&e)))?;
            if !live {
                return Err(rpc_err(
                    code::TASK_NOT_CANCELABLE,
                    format!("task {id} is not live on this node; there is nothing to cancel"),
                ));
            }
        }
    }
    // The cancel is journaled by the node; answer once the journal shows it (bounded).
    let mut last = s;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let now = next_change(st, id, Some(&last), left)
            .await?
            .unwrap_or_else(|| last.clone());
        if now.state.is_terminal() || left.is_zero() {
            return Ok(serde_json::to_value(task_doc(node, id, &now)).unwrap_or_default());
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_of_the_wrong_shape_is_refused_with_its_reason() {
        let h = HeaderMap::new();
        let e = request_parts(&json!([1]), &h).unwrap_err();
        assert_eq!(e.code, code::INVALID_REQUEST);
        assert!(e.message.contains("batches"));
        let e = request_parts(&json!({"jsonrpc": "1.0", "method": "GetTask"}), &h).unwrap_err();
        assert!(e.message.contains("jsonrpc"));
        let e = request_parts(
            &json!({"jsonrpc": "2.0", "method": "GetTask", "params": 3}),
            &h,
        )
        .unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
        let mut v = HeaderMap::new();
        v.insert("a2a-version", "0.3".parse().unwrap());
        let e = request_parts(
            &json!({"jsonrpc": "2.0", "method": "GetTask", "params": {}}),
            &v,
        )
        .unwrap_err();
        assert_eq!(e.code, code::VERSION_NOT_SUPPORTED);
        assert!(unknown_method("message/send").message.contains("0.3"));
    }

    #[test]
    fn the_input_is_the_data_part_else_the_text() {
        let m = |parts: Vec<Part>| Message {
            parts,
            ..Message::default()
        };
        assert_eq!(
            input_of(&m(vec![Part::text("x"), Part::data(json!({"n": 1}))])).unwrap(),
            json!({"n": 1})
        );
        assert_eq!(
            input_of(&m(vec![Part::text("{\"a\": 2}")])).unwrap(),
            json!({"a": 2})
        );
        assert_eq!(
            input_of(&m(vec![Part::text("hi")])).unwrap(),
            json!({"text": "hi"})
        );
        assert_eq!(input_of(&m(vec![])).unwrap_err().code, code::INVALID_PARAMS);
    }

    #[test]
    fn contexts_are_bounded() {
        let mut c = Contexts::default();
        for _ in 0..MAX_CONTEXTS + 10 {
            c.insert(Uuid::now_v7(), "c".into());
        }
        assert_eq!(c.by_task.len(), MAX_CONTEXTS);
        assert_eq!(c.order.len(), MAX_CONTEXTS);
    }
}
