//! The envelope: every message between agents, with its provenance.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::scope::Scope;

/// Who an envelope is for: a named agent instance, or whoever can serve a capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Recipient {
    /// One instance, e.g. `tester#0`.
    Agent(Arc<str>),
    /// Any instance that declares this capability; the router picks one.
    Capability(Arc<str>),
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipient::Agent(a) => write!(f, "agent {a}"),
            Recipient::Capability(c) => write!(f, "capability {c}"),
        }
    }
}

/// A typed message: topic, payload, sender, recipient, correlation and causation ids and the
/// schema its payload must satisfy. Described by `schemas/envelope.schema.json`.
///
/// # Example
/// ```
/// use muster_core::{Envelope, Recipient};
/// use serde_json::json;
///
/// let env = Envelope::new("code.test", Recipient::Capability("code.test".into()), "test-request", json!({"files": []}))
///     .from("orchestrator");
/// assert_eq!(env.topic.as_ref(), "code.test");
/// assert_eq!(env.causation_id, None);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique, time-ordered (UUID v7).
    pub id: Uuid,
    /// The conversation this envelope belongs to (a workflow run, or a task).
    pub correlation_id: Uuid,
    /// The envelope that caused this one, if any.
    pub causation_id: Option<Uuid>,
    /// What the message is about (for tasks: the capability name).
    pub topic: Arc<str>,
    /// Who sent it (an agent instance, a task owner, or a user-chosen name).
    pub sender: Arc<str>,
    /// Who it is for.
    pub recipient: Recipient,
    /// The name of the schema the payload must satisfy (`schemas/NAME.schema.json`).
    pub schema: Arc<str>,
    /// The payload (shared with the journal's records of the same task, not copied).
    pub payload: Arc<Value>,
    /// The task this envelope carries, if it is a task handoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Uuid>,
    /// The delivery attempt, from 1.
    pub attempt: u32,
    /// The lease epoch (fencing token) of the task, 0 for plain messages.
    pub epoch: u64,
    /// When it was created, Unix milliseconds (virtual time in simulations).
    pub created_at: u64,
    /// When it stops being worth delivering, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// The scope the task may touch, if it declares one (tasks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Arc<Scope>>,
}

impl Envelope {
    /// A new envelope with a fresh v7 id, its own correlation id, attempt 1, epoch 0.
    pub fn new(
        topic: impl Into<Arc<str>>,
        recipient: Recipient,
        schema: impl Into<Arc<str>>,
        payload: Value,
    ) -> Self {
        let id = Uuid::now_v7();
        Envelope {
            id,
            correlation_id: id,
            causation_id: None,
            topic: topic.into(),
            sender: Arc::from("anonymous"),
            recipient,
            schema: schema.into(),
            payload: Arc::new(payload),
            task_id: None,
            attempt: 1,
            epoch: 0,
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            deadline: None,
            scope: None,
        }
    }

    /// Sets the sender.
    pub fn from(mut self, sender: impl Into<Arc<str>>) -> Self {
        self.sender = sender.into();
        self
    }

    /// Sets the correlation id.
    pub fn correlated(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    /// Sets the causation id.
    pub fn caused_by(mut self, causation_id: Uuid) -> Self {
        self.causation_id = Some(causation_id);
        self
    }

    /// Sets the deadline (Unix milliseconds).
    pub fn deadline_at(mut self, unix_ms: u64) -> Self {
        self.deadline = Some(unix_ms);
        self
    }
}
