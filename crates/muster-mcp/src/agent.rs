//! The MCP agent: one session per instance, one `tools/call` per attempt.
//!
//! It turns every way a call can end into an attempt outcome: a result (its structured
//! content, or the generic content document), `isError` or a JSON-RPC error (an `error`
//! with the tool's text), the session ending (the instance is told first, so the attempt
//! ends `agent_gone` and the supervisor restarts the instance with a new session). A
//! progress notification renews the attempt's heartbeat; a cancelled or abandoned attempt
//! sends MCP's `notifications/cancelled`. It does not judge outputs against contracts (the
//! owner does) and does not retry.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CancelledNotification, CancelledNotificationParam,
    ClientRequest, ProgressToken, RequestId, ServerResult,
};
use rmcp::service::{PeerRequestOptions, ServiceError};
use rmcp::{Peer, RoleClient};
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::config::McpConfig;
use super::schema::{output_of, text_of};
use super::session::{Progress, Session};
use muster_core::agents::agent::{Agent, AgentError, AgentLink, TaskContext};

/// How long a call that saw its session end waits for the instance to have been told,
/// before it ends on its own as `exited`.
const GONE_REPORT_WAIT: Duration = Duration::from_secs(5);
/// How many characters of a tool's error text an attempt failure keeps.
const ERROR_CHARS: usize = 2000;

/// An agent whose work is one MCP server's tools (see the [crate docs](crate)).
///
/// Must run inside a tokio `LocalSet` (the actix runtime is one).
///
/// # Example
/// ```no_run
/// use std::time::Duration;
/// use muster_core::agents::{Agent, AgentError, AgentLink, TaskContext};
/// use muster_mcp::{McpAgent, McpConfig};
/// use serde_json::json;
///
/// # async fn demo() -> Result<(), AgentError> {
/// let config = McpConfig::stdio("mcp-server-time", Vec::<String>::new())
///     .with_tool("time.now", "get_current_time");
/// let agent = McpAgent::new("time#0", config);
/// agent.start(AgentLink::detached()).await?;
/// let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
/// let ctx = TaskContext::standalone(uuid::Uuid::now_v7(), 1, "time.now", "time#0", deadline);
/// let output = agent.handle(json!({"timezone": "UTC"}), ctx).await?;
/// assert!(output["json"]["datetime"].is_string());
/// agent.stop().await;
/// # Ok(())
/// # }
/// ```
pub struct McpAgent {
    name: Arc<str>,
    config: Arc<McpConfig>,
    state: Rc<State>,
}

#[derive(Default)]
struct State {
    session: RefCell<Option<Rc<Session>>>,
    /// (task, epoch) → fired to cancel that attempt's call.
    inflight: RefCell<HashMap<(Uuid, u64), oneshot::Sender<()>>>,
    /// Set once the instance has been told the session ended (or it was stopped).
    reported: RefCell<Option<tokio::sync::watch::Receiver<bool>>>,
    stopping: Cell<bool>,
}

impl std::fmt::Debug for McpAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpAgent")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish()
    }
}

impl McpAgent {
    /// An MCP agent for the instance `instance_name` (e.g. `git#0`). Nothing is started
    /// until [`Agent::start`].
    pub fn new(instance_name: &str, config: McpConfig) -> Self {
        McpAgent {
            name: Arc::from(instance_name),
            config: Arc::new(config),
            state: Rc::default(),
        }
    }

    /// The pid of its stdio server, while it has a session to one.
    pub fn server_pid(&self) -> Option<u32> {
        self.state.session.borrow().as_ref().and_then(|s| s.pid)
    }
}

impl Agent for McpAgent {
    fn start(&self, link: AgentLink) -> LocalBoxFuture<'static, Result<(), AgentError>> {
        let name = self.name.clone();
        let config = self.config.clone();
        let state = self.state.clone();
        Box::pin(async move {
            let session = Session::connect(&name, &config)
                .await
                .map_err(|e| AgentError::new(format!("agent {name}: {e}")))?;
            let session = Rc::new(session);
            let (told, reported) = tokio::sync::watch::channel(false);
            *state.reported.borrow_mut() = Some(reported);
            *state.session.borrow_mut() = Some(session.clone());
            let mut ended = session.ended.clone();
            let watcher_state = state.clone();
            // The instance learns first that the session is gone, so the attempts it holds
            // end `agent_gone` and its supervisor starts a new session.
            tokio::task::spawn_local(async move {
                let why = match ended.wait_for(|v| v.is_some()).await {
                    Ok(v) => v.clone().unwrap_or_default(),
                    Err(_) => "the session ended".into(),
                };
                if !watcher_state.stopping.get() {
                    tracing::warn!(agent = %name, %why, "MCP session ended");
                    link.exited(Err(why));
                }
                let _ = told.send(true);
            });
            Ok(())
        })
    }

    fn handle(
        &self,
        input: Value,
        ctx: TaskContext,
    ) -> LocalBoxFuture<'static, Result<Value, AgentError>> {
        let state = self.state.clone();
        let tool = self.config.tool_for(&ctx.capability).to_string();
        Box::pin(async move {
            let session = state
                .session
                .borrow()
                .clone()
                .ok_or_else(|| AgentError::exited("the MCP session is not open"))?;
            if let Some(why) = session.ended_why() {
                return Err(gone(&state, why).await);
            }
            let arguments = match input {
                Value::Object(m) => m,
                Value::Null => Map::new(),
                other => {
                    return Err(AgentError::new(format!(
                        "tool `{tool}` takes an object of arguments; the task's input is {}",
                        kind_of(&other)
                    )));
                }
            };
            let request = ClientRequest::CallToolRequest(CallToolRequest::new(
                CallToolRequestParams::new(tool.clone()).with_arguments(arguments),
            ));
            let handle = match session
                .peer
                .send_request_with_option(request, PeerRequestOptions::no_options())
                .await
            {
                Ok(h) => h,
                Err(e) => return Err(ended(&state, &session, e).await),
            };
            let beat = ctx.clone();
            session.progress.insert(
                handle.progress_token.clone(),
                Arc::new(move || beat.heartbeat()),
            );
            let (cancel_tx, cancel_rx) = oneshot::channel();
            let key = (ctx.task_id, ctx.epoch);
            state.inflight.borrow_mut().insert(key, cancel_tx);
            let mut guard = CallGuard {
                peer: handle.peer.clone(),
                id: Some(handle.id.clone()),
                token: handle.progress_token.clone(),
                progress: session.progress.clone(),
                state: state.clone(),
                key,
            };
            let mut rx = handle.rx;
            let mut ending = session.ended.clone();
            tokio::select! {
                answer = &mut rx => {
                    guard.disarm();
                    match answer {
                        Ok(Ok(ServerResult::CallToolResult(result))) => {
                            let content: Vec<Value> = result
                                .content
                                .iter()
                                .filter_map(|b| serde_json::to_value(b).ok())
                                .collect();
                            if result.is_error == Some(true) {
                                let text = text_of(&content);
                                Err(AgentError::new(format!(
                                    "tool `{tool}` failed: {}",
                                    clip(if text.is_empty() { "(no text)" } else { &text })
                                )))
                            } else {
                                Ok(output_of(result.structured_content, content))
                            }
                        }
                        Ok(Ok(other)) => Err(AgentError::protocol(format!(
                            "tool `{tool}`: the server answered tools/call with {}, which muster does not support",
                            result_kind(&other)
                        ))),
                        Ok(Err(ServiceError::McpError(e))) => Err(AgentError::new(format!(
                            "tool `{tool}` failed: {}",
                            clip(&e.message)
                        ))),
                        Ok(Err(e)) => Err(ended(&state, &session, e).await),
                        Err(_) => Err(ended(&state, &session, ServiceError::TransportClosed).await),
                    }
                }
                _ = cancel_rx => Err(AgentError::new(format!("tool `{tool}`: cancelled"))),
                _ = ending.wait_for(|v| v.is_some()) => {
                    guard.disarm();
                    let why = session.ended_why().unwrap_or_default();
                    Err(gone(&state, why).await)
                }
            }
        })
    }

    fn stop(&self) -> LocalBoxFuture<'static, ()> {
        self.state.stopping.set(true);
        if let Some(s) = self.state.session.borrow_mut().take() {
            s.close();
        }
        Box::pin(async {})
    }

    fn cancel(&self, task_id: Uuid, epoch: u64) {
        if let Some(tx) = self.state.inflight.borrow_mut().remove(&(task_id, epoch)) {
            let _ = tx.send(());
        }
    }
}

/// Ends a call whose request failed: a transport failure means the session is gone.
async fn ended(state: &State, session: &Session, e: ServiceError) -> AgentError {
    match e {
        ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
            let why = match session.ended_why() {
                Some(w) => w,
                None => {
                    // The transport failed before the watcher saw the end: wait for it.
                    let mut ending = session.ended.clone();
                    let _ =
                        tokio::time::timeout(GONE_REPORT_WAIT, ending.wait_for(|v| v.is_some()))
                            .await;
                    session
                        .ended_why()
                        .unwrap_or_else(|| format!("the MCP session failed: {e}"))
                }
            };
            gone(state, why).await
        }
        other => AgentError::protocol(format!("MCP: {other}")),
    }
}

/// The error of a call whose session ended, once the instance has been told (so the
/// attempt is failed `agent_gone` by the instance rather than `exited` by this call).
async fn gone(state: &State, why: String) -> AgentError {
    let reported = state.reported.borrow().clone();
    if let Some(mut r) = reported {
        let _ = tokio::time::timeout(GONE_REPORT_WAIT, r.wait_for(|v| *v)).await;
    }
    AgentError::exited(why)
}

/// Removes a call's progress route and cancel switch however it ends, and sends MCP's
/// cancellation notification when it ends without an answer (cancelled, timed out,
/// abandoned).
struct CallGuard {
    peer: Peer<RoleClient>,
    id: Option<RequestId>,
    token: ProgressToken,
    progress: Progress,
    state: Rc<State>,
    key: (Uuid, u64),
}

impl CallGuard {
    fn disarm(&mut self) {
        self.id = None;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.progress.remove(&self.token);
        self.state.inflight.borrow_mut().remove(&self.key);
        if let Some(id) = self.id.take() {
            let peer = self.peer.clone();
            let notification = CancelledNotification::new(CancelledNotificationParam::new(
                Some(id),
                Some("cancelled by muster (the attempt was cancelled or timed out)".into()),
            ));
            tokio::spawn(async move {
                let _ = peer.send_notification(notification.into()).await;
            });
        }
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() <= ERROR_CHARS {
        s.to_string()
    } else {
        let cut: String = s.chars().take(ERROR_CHARS).collect();
        format!("{cut}…")
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn result_kind(r: &ServerResult) -> &'static str {
    match r {
        ServerResult::CreateTaskResult(_) => "a task (the tasks extension)",
        ServerResult::InputRequiredResult(_) => "a request for input",
        _ => "an unexpected result",
    }
}
