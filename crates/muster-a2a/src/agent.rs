//! The A2A agent: one remote A2A agent per instance, one remote task per attempt.
//!
//! An attempt sends `SendMessage` (the task's input as a data part, the skill in the
//! message's `metadata.skill`, `returnImmediately`), then reads the task (`GetTask`) every
//! poll interval, renewing the attempt's heartbeat each time, until the remote task ends:
//!
//! ```text
//!  completed ─▶ output (first data part of the artifacts, else their text as {"text": ...})
//!  failed, rejected, canceled ─▶ error with the remote's status message
//!  input-required, auth-required ─▶ error (a muster attempt cannot answer), CancelTask
//!  unreachable ─▶ the instance is told it is gone (agent_gone; its supervisor restarts it)
//!  cancelled or timed out here ─▶ CancelTask
//! ```
//!
//! It does not judge outputs against contracts (the owner does) and does not retry.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::client::{A2aClient, CANCEL_WAIT, ClientError};
use super::config::A2aConfig;
use super::types::{
    Artifact, Message, Part, Role, SendMessageConfiguration, SendMessageRequest,
    SendMessageResponse, Task, TaskState,
};
use muster_core::agents::agent::{Agent, AgentError, AgentLink, TaskContext};

/// How long an attempt that found its remote unreachable waits for its instance to end it
/// (`agent_gone`) before it ends on its own as `exited`.
const GONE_REPORT_WAIT: Duration = Duration::from_secs(5);

/// An agent whose work is done by a remote A2A agent (see the [crate docs](crate)).
///
/// Must run inside a tokio `LocalSet` (the actix runtime is one).
///
/// # Example
/// ```no_run
/// use std::time::Duration;
/// use muster_core::agents::{Agent, AgentError, AgentLink, TaskContext};
/// use muster_a2a::{A2aAgent, A2aConfig};
/// use serde_json::json;
///
/// # async fn demo() -> Result<(), AgentError> {
/// let config = A2aConfig::new("http://127.0.0.1:9999/.well-known/agent-card.json")
///     .with_skill("text.upper", "upper");
/// let agent = A2aAgent::new("remote#0", config);
/// agent.start(AgentLink::detached()).await?;
/// let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
/// let ctx = TaskContext::standalone(uuid::Uuid::now_v7(), 1, "text.upper", "remote#0", deadline);
/// let output = agent.handle(json!({"text": "hi"}), ctx).await?;
/// println!("{output}");
/// # Ok(())
/// # }
/// ```
pub struct A2aAgent {
    name: Arc<str>,
    config: Arc<A2aConfig>,
    state: Rc<State>,
}

#[derive(Default)]
struct State {
    client: RefCell<Option<A2aClient>>,
    link: RefCell<Option<AgentLink>>,
    /// (task, epoch) → fired to cancel that attempt.
    inflight: RefCell<HashMap<(Uuid, u64), oneshot::Sender<()>>>,
}

impl std::fmt::Debug for A2aAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("A2aAgent")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish()
    }
}

impl A2aAgent {
    /// An A2A agent for the instance `instance_name` (e.g. `remote#0`). Nothing is fetched
    /// until [`Agent::start`].
    pub fn new(instance_name: &str, config: A2aConfig) -> Self {
        A2aAgent {
            name: Arc::from(instance_name),
            config: Arc::new(config),
            state: Rc::default(),
        }
    }
}

impl Agent for A2aAgent {
    fn start(&self, link: AgentLink) -> LocalBoxFuture<'static, Result<(), AgentError>> {
        let name = self.name.clone();
        let config = self.config.clone();
        let state = self.state.clone();
        Box::pin(async move {
            let client = A2aClient::connect(&config)
                .await
                .map_err(|e| AgentError::new(format!("agent {name}: {e}")))?;
            // A card that lists skills must list every skill the capabilities ask for.
            let listed: Vec<&str> = client.card().skills.iter().map(|s| s.id.as_str()).collect();
            if !listed.is_empty() {
                let missing: Vec<&str> = config
                    .skills
                    .values()
                    .map(String::as_str)
                    .filter(|s| !listed.contains(s))
                    .collect();
                if !missing.is_empty() {
                    return Err(AgentError::new(format!(
                        "agent {name}: the A2A agent at {} has no skill {}; its card lists: {}",
                        config.card,
                        missing.join(", "),
                        listed.join(", ")
                    )));
                }
            }
            *state.client.borrow_mut() = Some(client);
            *state.link.borrow_mut() = Some(link);
            Ok(())
        })
    }

    fn handle(
        &self,
        input: Value,
        ctx: TaskContext,
    ) -> LocalBoxFuture<'static, Result<Value, AgentError>> {
        let state = self.state.clone();
        let skill = self.config.skill_for(&ctx.capability).to_string();
        let poll = self.config.poll();
        Box::pin(async move {
            let client = state
                .client
                .borrow()
                .clone()
                .ok_or_else(|| AgentError::exited("the A2A agent is not started"))?;
            let (cancel_tx, mut cancel_rx) = oneshot::channel();
            let key = (ctx.task_id, ctx.epoch);
            state.inflight.borrow_mut().insert(key, cancel_tx);
            let mut guard = RemoteGuard {
                client: client.clone(),
                remote: None,
                state: state.clone(),
                key,
            };
            let request = message_for(&skill, input, &ctx);
            let first = tokio::select! {
                r = client.send_message(&request) => r,
                _ = &mut cancel_rx => return Err(AgentError::new(format!("skill `{skill}`: cancelled"))),
            };
            let mut task = match first {
                Ok(SendMessageResponse::Task(t)) => t,
                Ok(SendMessageResponse::Message(m)) => {
                    return output_of(&[], Some(&m)).ok_or_else(|| {
                        AgentError::new(format!(
                            "skill `{skill}`: the remote answered with a message that holds no data or text"
                        ))
                    });
                }
                Err(e) => return Err(failed(&state, &skill, e).await),
            };
            guard.remote = Some(task.id.clone());
            loop {
                ctx.heartbeat();
                let state_now = task.status.state;
                if state_now.is_terminal() {
                    guard.remote = None;
                    return outcome(&skill, &task);
                }
                if state_now.is_interrupted() {
                    // Left armed: the remote task is cancelled on the way out.
                    return Err(AgentError::new(format!(
                        "skill `{skill}`: the remote task {} asks for {} ({}), which a muster attempt cannot give",
                        task.id,
                        if state_now == TaskState::InputRequired {
                            "input"
                        } else {
                            "authentication"
                        },
                        status_text(&task).unwrap_or_else(|| "no message".into())
                    )));
                }
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = &mut cancel_rx => {
                        return Err(AgentError::new(format!("skill `{skill}`: cancelled")));
                    }
                }
                task = match client.get_task(&task.id).await {
                    Ok(t) => t,
                    Err(e) => return Err(failed(&state, &skill, e).await),
                };
            }
        })
    }

    fn stop(&self) -> LocalBoxFuture<'static, ()> {
        self.state.client.borrow_mut().take();
        self.state.link.borrow_mut().take();
        Box::pin(async {})
    }

    fn cancel(&self, task_id: Uuid, epoch: u64) {
        if let Some(tx) = self.state.inflight.borrow_mut().remove(&(task_id, epoch)) {
            let _ = tx.send(());
        }
    }
}

/// The message of one attempt: the input as a data part, the skill in `metadata.skill`,
/// the muster task and epoch in `metadata.muster` (for the remote's logs), answered at
/// once with the task.
fn message_for(skill: &str, input: Value, ctx: &TaskContext) -> SendMessageRequest {
    let mut metadata = Map::new();
    metadata.insert("skill".into(), Value::String(skill.to_string()));
    metadata.insert(
        "muster".into(),
        json!({"task": ctx.task_id, "epoch": ctx.epoch, "attempt": ctx.attempt}),
    );
    SendMessageRequest {
        message: Message {
            message_id: format!("{}-{}", ctx.task_id, ctx.epoch),
            role: Role::User,
            parts: vec![Part::data(input)],
            metadata: Some(metadata),
            ..Message::default()
        },
        configuration: Some(SendMessageConfiguration {
            return_immediately: true,
            accepted_output_modes: vec!["application/json".into(), "text/plain".into()],
        }),
        metadata: None,
    }
}

/// A remote task that ended: its output, or its failure.
fn outcome(skill: &str, task: &Task) -> Result<Value, AgentError> {
    let why = || status_text(task).unwrap_or_else(|| "no reason given".into());
    match task.status.state {
        TaskState::Completed => output_of(&task.artifacts, task.status.message.as_ref())
            .ok_or_else(|| {
                AgentError::new(format!(
                    "skill `{skill}`: the remote task {} completed with no data or text artifact",
                    task.id
                ))
            }),
        TaskState::Rejected => Err(AgentError::new(format!(
            "skill `{skill}`: the remote rejected task {}: {}",
            task.id,
            why()
        ))),
        TaskState::Canceled => Err(AgentError::new(format!(
            "skill `{skill}`: the remote task {} was canceled: {}",
            task.id,
            why()
        ))),
        _ => Err(AgentError::new(format!(
            "skill `{skill}`: the remote task {} failed: {}",
            task.id,
            why()
        ))),
    }
}

/// The result payload of a completed remote task: the first data part of its artifacts,
/// else their text parts joined as `{"text": "..."}`; without artifacts, the same read
/// from the status message. `None` when there is neither.
///
/// # Example
/// ```
/// use muster_a2a::{Artifact, Part, output_of};
/// use serde_json::json;
///
/// let a = Artifact { parts: vec![Part::text("hello")], ..Artifact::default() };
/// assert_eq!(output_of(&[a], None), Some(json!({"text": "hello"})));
/// let d = Artifact { parts: vec![Part::data(json!({"n": 2}))], ..Artifact::default() };
/// assert_eq!(output_of(&[d], None), Some(json!({"n": 2})));
/// ```
pub fn output_of(artifacts: &[Artifact], message: Option<&Message>) -> Option<Value> {
    let from_parts = |parts: &mut dyn Iterator<Item = &Part>| -> Option<Value> {
        let parts: Vec<&Part> = parts.collect();
        if let Some(d) = parts.iter().find_map(|p| p.data.clone()) {
            return Some(d);
        }
        let texts: Vec<&str> = parts.iter().filter_map(|p| p.text.as_deref()).collect();
        (!texts.is_empty()).then(|| json!({"text": texts.join("\n")}))
    };
    from_parts(&mut artifacts.iter().flat_map(|a| a.parts.iter()))
        .or_else(|| message.and_then(|m| from_parts(&mut m.parts.iter())))
}

/// The text of a task's status message, if it has one.
fn status_text(task: &Task) -> Option<String> {
    let m = task.status.message.as_ref()?;
    let t: Vec<&str> = m.parts.iter().filter_map(|p| p.text.as_deref()).collect();
    if !t.is_empty() {
        return Some(muster_core::util::bounded_text(&t.join(" ")).into_owned());
    }
    m.parts
        .iter()
        .find_map(|p| p.data.as_ref())
        .map(|d| muster_core::util::bounded_text(&d.to_string()).into_owned())
}

/// The attempt's error for a failed call. An unreachable remote ends the instance (its
/// supervisor restarts it, fetching the card again): the attempt is failed `agent_gone`
/// by the instance.
async fn failed(state: &State, skill: &str, e: ClientError) -> AgentError {
    match e {
        ClientError::Unreachable(why) => {
            let link = state.link.borrow().clone();
            if let Some(link) = link {
                tracing::warn!(%why, "A2A agent unreachable");
                link.exited(Err(why.clone()));
                // The instance ends this attempt `agent_gone` as it stops; this is the
                // bound in case it does not.
                tokio::time::sleep(GONE_REPORT_WAIT).await;
            }
            AgentError::exited(why)
        }
        ClientError::Rpc { code, message } => AgentError::new(format!(
            "skill `{skill}`: the remote refused the request (JSON-RPC error {code}): {message}"
        )),
        ClientError::Protocol(m) => AgentError::protocol(format!("skill `{skill}`: {m}")),
    }
}

/// Removes an attempt's cancel switch however it ends, and cancels its remote task
/// (`CancelTask`) when it ends before the task did (cancelled, timed out, abandoned).
struct RemoteGuard {
    client: A2aClient,
    remote: Option<String>,
    state: Rc<State>,
    key: (Uuid, u64),
}

impl Drop for RemoteGuard {
    fn drop(&mut self) {
        self.state.inflight.borrow_mut().remove(&self.key);
        if let Some(id) = self.remote.take() {
            let client = self.client.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(CANCEL_WAIT, client.cancel_task(&id)).await;
            });
        }
    }
}
