//! muster as an MCP server (docs/mcp.md, "muster as an MCP server"): the node's
//! capabilities, workflows, runs and gates as Model Context Protocol tools, served over
//! streamable HTTP at `/mcp` (behind the API's bearer token) and over stdio
//! (`muster mcp`), with `rmcp`'s server side.
//!
//! ```text
//!  cap_<capability>   one task of the capability: its contract as inputSchema and
//!                     outputSchema, its output as structuredContent
//!  wf_<workflow>      starts a run, reports progress, answers once it ends or waits at
//!                     a gate
//!  muster_runs        GET /v1/runs          muster_run     GET /v1/runs/{id}
//!  muster_decide      POST /v1/runs/{id}/gates/{gate}
//! ```
//!
//! It owns the tool names ([`tool_names`]), the schemas' shape as MCP wants it (an object
//! at the root, `$ref`s between schema files inlined) and the mapping from tool calls to
//! the API's own functions. It must not hold logic of its own: every call goes through
//! the same checks, the same node commands and the same error messages as the HTTP API
//! (an error is an MCP tool error, `isError`, with the API's message), and the roles of
//! docs/api.md apply per tool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::auth::{Caller, Role};
use super::error::ApiError;
use super::routes::{self, AppState, ListRuns, SubmitTask};
use muster_core::delegation::{TaskRecord, TaskStatus};
use muster_core::messaging::SchemaStore;

/// The prefix of a capability's tool: `cap_` and the capability's name, each `.` a `_`.
pub const CAPABILITY_PREFIX: &str = "cap_";
/// The prefix of a workflow's tool: `wf_` and the workflow's name, each `.` a `_`.
pub const WORKFLOW_PREFIX: &str = "wf_";
/// The tool that lists runs (`GET /v1/runs`).
pub const RUNS_TOOL: &str = "muster_runs";
/// The tool that reads one run (`GET /v1/runs/{id}`).
pub const RUN_TOOL: &str = "muster_run";
/// The tool that decides a gate (`POST /v1/runs/{id}/gates/{gate}`).
pub const DECIDE_TOOL: &str = "muster_decide";
/// The longest tool name (what MCP hosts accept, e.g. `^[a-zA-Z0-9_-]{1,64}$`).
pub const MAX_TOOL_NAME: usize = 64;
/// How often a workflow tool looks at its run while it waits for it.
const POLL: Duration = Duration::from_millis(100);

/// The MCP tool name of a capability or workflow (`prefix` + name), or `None` when the
/// name cannot be one: every character other than an ASCII letter, digit, `_` or `-` is
/// written `_`, and a name longer than [`MAX_TOOL_NAME`] is left out.
///
/// # Example
/// ```
/// use muster_serve::mcp::{CAPABILITY_PREFIX, tool_name};
///
/// assert_eq!(tool_name(CAPABILITY_PREFIX, "code.review").as_deref(), Some("cap_code_review"));
/// assert_eq!(tool_name(CAPABILITY_PREFIX, &"x".repeat(80)), None);
/// ```
pub fn tool_name(prefix: &str, name: &str) -> Option<String> {
    let mapped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let full = format!("{prefix}{mapped}");
    (!name.is_empty() && full.len() <= MAX_TOOL_NAME).then_some(full)
}

/// What a tool name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Capability(String),
    Workflow(String),
    Runs,
    Run,
    Decide,
}

/// Every tool name of a node serving `capabilities` and `workflows`, with what it stands
/// for; of two names that map to one tool name the first (in name order) keeps it, and the
/// other is left out with a warning in the log.
///
/// # Example
/// ```
/// let names = muster_serve::mcp::tool_names(["echo".to_string()], ["review".to_string()]);
/// assert!(names.contains(&"cap_echo".to_string()));
/// assert!(names.contains(&"wf_review".to_string()));
/// assert!(names.contains(&"muster_decide".to_string()));
/// ```
pub fn tool_names(
    capabilities: impl IntoIterator<Item = String>,
    workflows: impl IntoIterator<Item = String>,
) -> Vec<String> {
    targets(capabilities, workflows).into_keys().collect()
}

fn targets(
    capabilities: impl IntoIterator<Item = String>,
    workflows: impl IntoIterator<Item = String>,
) -> BTreeMap<String, Target> {
    let mut out = BTreeMap::new();
    for (t, n) in [
        (RUNS_TOOL, Target::Runs),
        (RUN_TOOL, Target::Run),
        (DECIDE_TOOL, Target::Decide),
    ] {
        out.insert(t.to_string(), n);
    }
    let mut caps: Vec<String> = capabilities.into_iter().collect();
    caps.sort();
    caps.dedup();
    let mut wfs: Vec<String> = workflows.into_iter().collect();
    wfs.sort();
    let named = caps
        .into_iter()
        .map(|c| (CAPABILITY_PREFIX, c.clone(), Target::Capability(c)))
        .chain(
            wfs.into_iter()
                .map(|w| (WORKFLOW_PREFIX, w.clone(), Target::Workflow(w))),
        );
    for (prefix, name, target) in named {
        match tool_name(prefix, &name) {
            None => {
                tracing::warn!(%name, "not served as an MCP tool: its name is empty or too long")
            }
            Some(t) if out.contains_key(&t) => {
                tracing::warn!(%name, tool = %t, "not served as an MCP tool: another name maps to the same tool name")
            }
            Some(t) => {
                out.insert(t, target);
            }
        }
    }
    out
}

/// The MCP server of a node: one per session (a stdio process, or an HTTP client's
/// session); it holds the API's shared state and, on stdio, the caller every call acts
/// as.
///
/// # Example
/// ```no_run
/// # async fn demo(st: muster_serve::AppState) -> Result<(), Box<dyn std::error::Error>> {
/// use rmcp::ServiceExt;
///
/// // Any rmcp transport; `muster mcp` serves stdio, `muster serve` streamable HTTP.
/// let running = muster_serve::mcp::McpServer::local(st)
///     .serve(rmcp::transport::stdio())
///     .await?;
/// running.waiting().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct McpServer {
    st: AppState,
    /// On stdio: who the calls are (the local user, an admin). Over HTTP: `None`, the
    /// caller is the token the request was authenticated with.
    local: Option<Caller>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer").finish_non_exhaustive()
    }
}

impl McpServer {
    /// The server of a node's API state, for HTTP sessions (the caller comes with each
    /// request).
    pub fn new(st: AppState) -> Self {
        McpServer { st, local: None }
    }

    /// The server for stdio: every call acts as the local user (role `admin`, named
    /// `mcp-stdio` in the journal's gate decisions), who started the process.
    pub fn local(st: AppState) -> Self {
        McpServer {
            st,
            local: Some(Caller {
                id: usize::MAX,
                role: Role::Admin,
                name: Some("mcp-stdio".into()),
            }),
        }
    }

    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Option<Caller> {
        if let Some(c) = &self.local {
            return Some(c.clone());
        }
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Caller>())
            .cloned()
    }

    fn targets(&self) -> BTreeMap<String, Target> {
        targets(self.capabilities(), self.st.workflows.keys().cloned())
    }

    fn capabilities(&self) -> Vec<String> {
        self.st
            .muster
            .agents()
            .iter()
            .flat_map(|a| a.capabilities.iter().map(|c| c.name.clone()))
            .collect()
    }

    fn tools(&self) -> Vec<Tool> {
        let store = self.st.muster.schemas();
        let mut out = Vec::new();
        for (name, target) in self.targets() {
            let tool = match &target {
                Target::Capability(c) => {
                    let Some(contract) = self.st.muster.contract(c) else {
                        continue;
                    };
                    let (input, _) = object_schema(&bundle(&store, &contract.input.name), "input");
                    let (output, _) =
                        object_schema(&bundle(&store, &contract.output.name), "output");
                    Tool::new_with_raw(
                        name,
                        Some(
                            format!(
                                "muster capability `{c}`: one task with a fenced lease, its \
                                 output checked against schema `{}` (input schema `{}`)",
                                contract.output.name, contract.input.name
                            )
                            .into(),
                        ),
                        Arc::new(input),
                    )
                    .with_raw_output_schema(Arc::new(output))
                }
                Target::Workflow(w) => {
                    let Some(wf) = self.st.workflows.get(w) else {
                        continue;
                    };
                    let input = if wf.input.is_empty() {
                        json!({"type": "object"})
                    } else {
                        bundle(&store, &wf.input)
                    };
                    let (input, _) = object_schema(&input, "input");
                    let about = if wf.description.is_empty() {
                        String::new()
                    } else {
                        format!("{}. ", wf.description.trim_end_matches('.'))
                    };
                    Tool::new_with_raw(
                        name,
                        Some(
                            format!(
                                "{about}Runs muster workflow `{w}` and answers when the run ends \
                                 or waits at a gate (decide it with `{DECIDE_TOOL}`, follow it \
                                 with `{RUN_TOOL}`); reports progress per step."
                            )
                            .into(),
                        ),
                        Arc::new(input),
                    )
                }
                Target::Runs => Tool::new_with_raw(
                    name,
                    Some("Lists the node's runs, newest first (as GET /v1/runs).".into()),
                    Arc::new(obj(json!({
                        "type": "object",
                        "properties": {
                            "status": {"type": "string", "enum": super::views::RUN_STATUSES},
                            "workflow": {"type": "string"},
                            "limit": {"type": "integer", "minimum": 1, "maximum": routes::MAX_PAGE},
                            "after": {"type": "string", "description": "the last run id of the previous page"}
                        },
                        "additionalProperties": false
                    }))),
                ),
                Target::Run => Tool::new_with_raw(
                    name,
                    Some("Reads one run: status, steps, gates, outcome (as GET /v1/runs/{id}).".into()),
                    Arc::new(obj(json!({
                        "type": "object",
                        "properties": {"run": {"type": "string", "description": "the run id"}},
                        "required": ["run"],
                        "additionalProperties": false
                    }))),
                ),
                Target::Decide => Tool::new_with_raw(
                    name,
                    Some("Decides a gate where a run waits, exactly once (as POST /v1/runs/{id}/gates/{gate}).".into()),
                    Arc::new(obj(json!({
                        "type": "object",
                        "properties": {
                            "run": {"type": "string", "description": "the run id"},
                            "gate": {"type": "string"},
                            "decision": {"type": "string", "enum": ["approve", "reject"]},
                            "note": {"type": "string"}
                        },
                        "required": ["run", "gate", "decision"],
                        "additionalProperties": false
                    }))),
                ),
            };
            out.push(tool);
        }
        out
    }

    async fn call(
        &self,
        name: &str,
        args: Value,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ApiError> {
        let Some(caller) = self.caller(ctx) else {
            return Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "a valid token is required: Authorization: Bearer <token>",
            ));
        };
        let target = self.targets().remove(name).ok_or_else(|| {
            ApiError::not_found(format!(
                "no tool `{}` (tools/list names them; see docs/mcp.md)",
                muster_core::util::bounded_text(name)
            ))
        })?;
        let needed = match target {
            Target::Runs | Target::Run => Role::Viewer,
            Target::Capability(_) | Target::Workflow(_) => Role::Submitter,
            Target::Decide => Role::Operator,
        };
        if !caller.role.allows(needed) {
            return Err(ApiError::forbidden(format!(
                "tool `{name}` needs role `{needed}`; {}",
                caller.describe()
            )));
        }
        match target {
            Target::Runs => {
                let q = ListRuns {
                    status: text_arg(&args, "status")?,
                    workflow: text_arg(&args, "workflow")?,
                    limit: match args.get("limit") {
                        None | Some(Value::Null) => None,
                        Some(v) => Some(v.as_str().map_or_else(|| v.to_string(), str::to_string)),
                    },
                    after: text_arg(&args, "after")?,
                    ..routes::ListRuns::default()
                };
                Ok(structured(routes::run_list(&self.st, q).await?))
            }
            Target::Run => {
                let run = required(&args, "run")?;
                Ok(structured(routes::run_view(&self.st, &run).await?))
            }
            Target::Decide => {
                let run = required(&args, "run")?;
                let gate = required(&args, "gate")?;
                let decision = required(&args, "decision")?;
                let note = text_arg(&args, "note")?.unwrap_or_default();
                let doc =
                    routes::decide_gate(&self.st, &caller, &run, gate, &decision, note).await?;
                Ok(structured(doc))
            }
            Target::Capability(c) => self.capability(c, args, ctx).await,
            Target::Workflow(w) => self.workflow(&caller, w, args, ctx).await,
        }
    }

    /// One task of capability `c`, its input the arguments (or their `input` field when
    /// the contract's input is not an object); answers its output.
    async fn capability(
        &self,
        c: String,
        args: Value,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ApiError> {
        let store = self.st.muster.schemas();
        let (input_wrapped, output_wrapped) = match self.st.muster.contract(&c) {
            Some(contract) => (
                object_schema(&bundle(&store, &contract.input.name), "input").1,
                object_schema(&bundle(&store, &contract.output.name), "output").1,
            ),
            None => (false, false),
        };
        let input = if input_wrapped {
            args.get("input").cloned().unwrap_or(Value::Null)
        } else {
            args
        };
        let (task, slot) = routes::bare_task(
            &self.st,
            SubmitTask {
                capability: c.clone(),
                input,
                timeout_ms: None,
                attempts: None,
            },
        )?;
        let handle = self
            .st
            .muster
            .submit(task)
            .await
            .map_err(routes::submit_refused)?;
        let id = handle.id();
        let record = tokio::select! {
            r = handle.outcome() => r,
            _ = ctx.ct.cancelled() => {
                // The client gave up: so does the node (the task ends `cancelled`).
                self.st.muster.cancel(id).await;
                drop(slot);
                return Err(ApiError::conflict(format!("task {id} was cancelled by the MCP client")));
            }
        };
        drop(slot);
        Ok(task_result(&record, output_wrapped))
    }

    /// Starts a run of workflow `w` and waits until it ends or waits at a gate, sending a
    /// progress notification per ended step when the client gave a progress token.
    async fn workflow(
        &self,
        caller: &Caller,
        w: String,
        args: Value,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ApiError> {
        let wf = self.st.workflows.get(&w).cloned();
        let store = self.st.muster.schemas();
        let wrapped = wf
            .as_ref()
            .filter(|wf| !wf.input.is_empty())
            .is_some_and(|wf| object_schema(&bundle(&store, &wf.input), "input").1);
        let input = if wrapped {
            args.get("input").cloned().unwrap_or(Value::Null)
        } else {
            args
        };
        let total = wf.as_ref().map(|wf| wf.steps.len() as f64);
        let (run, _) = routes::start(&self.st, caller, w, input).await?;
        let token = ctx.meta.get_progress_token();
        let mut reported = 0usize;
        let mut stop = self.st.stop.clone();
        loop {
            let doc = routes::run_view(&self.st, &run.to_string()).await?;
            let status = doc["status"].as_str().unwrap_or("running").to_string();
            if let Some(token) = &token {
                let ended: Vec<&Value> = doc["steps"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .filter(|t| {
                                matches!(
                                    t["status"].as_str(),
                                    Some("completed" | "escalated" | "cancelled")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if ended.len() > reported {
                    reported = ended.len();
                    let last = ended.last().and_then(|t| t["step"].as_str()).unwrap_or("");
                    let mut p = ProgressNotificationParam::new(token.clone(), reported as f64)
                        .with_message(format!("run {run}: step `{last}` ended"));
                    if let Some(t) = total {
                        p = p.with_total(t);
                    }
                    let _ = ctx.peer.notify_progress(p).await;
                }
            }
            match status.as_str() {
                "completed" => return Ok(structured(doc)),
                "waiting" => return Ok(structured(doc)),
                "failed" | "cancelled" => {
                    let why = doc["reason"].as_str().unwrap_or("").to_string();
                    let text = format!(
                        "run {run} {status}{}",
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!(": {why}")
                        }
                    );
                    let mut r = CallToolResult::structured_error(doc);
                    r.content = vec![ContentBlock::text(text)];
                    return Ok(r);
                }
                _ => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = ctx.ct.cancelled() => {
                    // The run goes on: the client stopped waiting, not the run.
                    return Err(ApiError::conflict(format!(
                        "stopped waiting for run {run}: the MCP client cancelled the call; the run goes on (`{RUN_TOOL}` follows it)"
                    )));
                }
                _ = stop.wait_for(|s| *s) => {
                    return Err(ApiError::unavailable("the node is shutting down"));
                }
            }
        }
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("muster", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "A muster node: `cap_*` tools run one task of a capability, `wf_*` tools run a \
                 workflow; `muster_runs`, `muster_run` and `muster_decide` follow runs and \
                 decide their gates. See docs/mcp.md.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        let r = match self.call(&request.name, args, &context).await {
            Ok(r) => r,
            Err(e) => tool_error(&e),
        };
        Ok(r.into())
    }
}

/// An API error as an MCP tool error: the API's message as text, and `{error, field?}`
/// as structured content.
fn tool_error(e: &ApiError) -> CallToolResult {
    let mut r = CallToolResult::structured_error(e.body());
    r.content = vec![ContentBlock::text(e.error.clone())];
    r
}

/// A JSON document as a tool result: structured, and as text for clients that read only
/// text.
fn structured(doc: Value) -> CallToolResult {
    let text = doc.to_string();
    let mut r = CallToolResult::structured(doc);
    r.content = vec![ContentBlock::text(text)];
    r
}

/// A capability's task outcome as a tool result: the output (in `{"output": ...}` when
/// the contract's output is not an object) or a tool error saying how the task ended.
fn task_result(record: &TaskRecord, output_wrapped: bool) -> CallToolResult {
    match (&record.status, &record.output) {
        (TaskStatus::Completed, Some(out)) => {
            let out = (**out).clone();
            structured(if output_wrapped {
                json!({"output": out})
            } else {
                out
            })
        }
        (status, _) => {
            let why = record
                .escalation
                .as_ref()
                .map(|e| e.reason.clone())
                .unwrap_or_default();
            let status = match status {
                TaskStatus::Cancelled => "cancelled",
                TaskStatus::Completed => "completed without an output",
                _ => "escalated",
            };
            let text = format!(
                "task {} ({}) {status}{}",
                record.id,
                record.capability,
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            );
            let mut r = CallToolResult::structured_error(
                json!({"error": text, "task": record.id, "status": status}),
            );
            r.content = vec![ContentBlock::text(text)];
            r
        }
    }
}

fn text_arg(args: &Value, field: &str) -> Result<Option<String>, ApiError> {
    match args.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::bad_request(format!(
            "argument `{field}` must be a string, not `{}`",
            muster_core::util::bounded_text(&other.to_string())
        ))
        .field(field)),
    }
}

fn required(args: &Value, field: &str) -> Result<String, ApiError> {
    text_arg(args, field)?.ok_or_else(|| {
        ApiError::bad_request(format!("argument `{field}` is required")).field(field)
    })
}

fn obj(v: Value) -> JsonObject {
    match v {
        Value::Object(m) => m,
        _ => JsonObject::new(),
    }
}

/// `schema` as MCP wants a tool's schemas, an object at the root: itself when it
/// describes an object, else `{"type": "object", "properties": {key: schema}}` (and
/// `true`: the value goes in, or comes out of, the field `key`).
fn object_schema(schema: &Value, key: &str) -> (JsonObject, bool) {
    if schema.get("type").and_then(Value::as_str) == Some("object") {
        return (obj(schema.clone()), false);
    }
    let mut inner = schema.clone();
    let defs = inner.as_object_mut().and_then(|m| m.remove("$defs"));
    let mut doc = json!({
        "type": "object",
        "properties": {key: inner},
        "required": [key],
    });
    if let Some(d) = defs {
        doc["$defs"] = d;
    }
    (obj(doc), true)
}

/// The most schema files one tool's schema inlines.
const MAX_INLINED: usize = 64;

/// Schema `name` of the store with every `$ref` to another schema of the store inlined
/// under `$defs` (an MCP client resolves no file names).
fn bundle(store: &SchemaStore, name: &str) -> Value {
    let Ok(root) = store.get(name) else {
        return json!({"type": "object"});
    };
    let mut doc = root.document.clone();
    let mut defs = serde_json::Map::new();
    let mut todo = Vec::new();
    rewrite_refs(&mut doc, store, &mut todo);
    while let Some(n) = todo.pop() {
        if defs.contains_key(&n) || defs.len() >= MAX_INLINED {
            continue;
        }
        let Ok(s) = store.get(&n) else { continue };
        let mut d = s.document.clone();
        rewrite_refs(&mut d, store, &mut todo);
        if let Some(m) = d.as_object_mut() {
            m.remove("$id");
            m.remove("$schema");
        }
        defs.insert(n, d);
    }
    if !defs.is_empty()
        && let Some(m) = doc.as_object_mut()
    {
        let slot = m
            .entry("$defs")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(existing) = slot.as_object_mut() {
            for (k, v) in defs {
                existing.entry(k).or_insert(v);
            }
        }
    }
    doc
}

fn rewrite_refs(v: &mut Value, store: &SchemaStore, todo: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && !r.starts_with('#')
            {
                let (target, fragment) = r.split_once('#').unwrap_or((r.as_str(), ""));
                let name = target.trim_end_matches(".schema.json").to_string();
                if store.contains(&name) {
                    *r = format!("#/$defs/{name}{}", fragment.trim_start_matches('#'));
                    todo.push(name);
                }
            }
            for (_, x) in m.iter_mut() {
                rewrite_refs(x, store, todo);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_refs(x, store, todo)),
        _ => {}
    }
}

/// The route `/mcp`: the node's streamable-HTTP MCP endpoint, for
/// [`router_with`](crate::routes::router_with), which puts it behind the API's
/// authentication.
///
/// # Example
/// ```no_run
/// # fn demo(state: muster_serve::AppState) {
/// let app = muster_serve::routes::router_with(state.clone(), axum::Router::new(), muster_serve::mcp::router(state));
/// # let _ = app;
/// # }
/// ```
pub fn router(st: AppState) -> axum::Router<AppState> {
    axum::Router::new().route_service("/mcp", http_service(st))
}

/// The streamable-HTTP MCP endpoint of a node: one [`McpServer`] per session; the node's
/// stop ends every session's stream, so a stopping node does not wait on them.
fn http_service(
    st: AppState,
) -> rmcp::transport::StreamableHttpService<
    McpServer,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        let mut stop = st.stop.clone();
        // Spawned on whatever runtime builds the router; a router built outside one (a
        // unit test's) just never cancels.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = stop.wait_for(|s| *s).await;
                cancel.cancel();
            });
        }
    }
    // The bearer token guards the endpoint, so the Host check against DNS rebinding (for
    // unauthenticated local servers) is off: a node may listen on any address.
    let config = rmcp::transport::StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_cancellation_token(cancel)
        .with_max_request_body_bytes(super::error::BODY_LIMIT);
    let server = McpServer::new(st);
    rmcp::transport::StreamableHttpService::new(move || Ok(server.clone()), Arc::default(), config)
}

/// Serves MCP over this process's stdin and stdout as the local user until the client
/// closes stdin or `stop` turns true.
pub(crate) async fn serve_stdio(
    st: AppState,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    use rmcp::ServiceExt;
    let running = McpServer::local(st)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| std::io::Error::other(format!("the MCP client did not initialise: {e}")))?;
    let ct = running.cancellation_token();
    tokio::select! {
        r = running.waiting() => {
            r.map_err(|e| std::io::Error::other(format!("the MCP session failed: {e}")))?;
        }
        _ = stop.wait_for(|s| *s) => ct.cancel(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_valid_tool_names_and_collisions_keep_the_first() {
        let t = targets(
            ["a.b".to_string(), "a_b".to_string(), "x y".to_string()],
            ["flow".to_string()],
        );
        assert_eq!(t.get("cap_a_b"), Some(&Target::Capability("a.b".into())));
        assert_eq!(t.get("cap_x_y"), Some(&Target::Capability("x y".into())));
        assert_eq!(t.get("wf_flow"), Some(&Target::Workflow("flow".into())));
        assert_eq!(
            t.values()
                .filter(|v| matches!(v, Target::Capability(_)))
                .count(),
            2
        );
        assert!(t.keys().all(|k| {
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }));
    }

    #[test]
    fn a_schema_that_is_not_an_object_is_wrapped_in_a_field() {
        let (s, wrapped) = object_schema(&json!({"type": "string"}), "input");
        assert!(wrapped);
        assert_eq!(Value::Object(s)["properties"]["input"]["type"], "string");
        let (_, wrapped) = object_schema(&json!({"type": "object"}), "input");
        assert!(!wrapped);
    }

    #[test]
    fn refs_between_schema_files_are_inlined() {
        let store = SchemaStore::new();
        store.add("leaf", json!({"type": "string"})).unwrap();
        store
            .add(
                "root",
                json!({"type": "object", "properties": {"x": {"$ref": "leaf.schema.json"}}}),
            )
            .unwrap();
        let b = bundle(&store, "root");
        assert_eq!(b["properties"]["x"]["$ref"], "#/$defs/leaf");
        assert_eq!(b["$defs"]["leaf"]["type"], "string");
    }
}
