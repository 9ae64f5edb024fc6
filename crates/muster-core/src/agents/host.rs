//! What the runtime lends an agent type when it registers it ([`AgentHost`]): a supervisor
//! for services that several agent types share (an LLM endpoint's provider actor), started
//! once per key, and the delegation of sub-tasks (an LLM agent's tool calls). Agent
//! backends use it through [`AgentFactory::attach`](super::AgentFactory::attach); it
//! knows nothing of the runtime that implements it.

use std::any::Any;
use std::sync::Arc;

use dashmap::DashMap;
use futures::future::LocalBoxFuture;
use serde_json::Value;
use uuid::Uuid;

use crate::supervision::{ChildSpec, Named, StartChild, Supervisor};

/// A sub-task an agent delegates while working on its own task (an LLM agent's tool call):
/// a task of its own, with its own owner, lease and journal records.
#[derive(Debug, Clone, PartialEq)]
pub struct SubTask {
    /// The capability asked for.
    pub capability: String,
    /// Its input.
    pub input: Value,
    /// The run (correlation id) of the parent task.
    pub correlation: Uuid,
    /// The parent task.
    pub parent: Uuid,
    /// Who asks (the instance).
    pub sender: String,
    /// The sub-task's per-attempt time bound (the parent's remaining time).
    pub timeout: std::time::Duration,
    /// The prefix of the sub-task's effect keys; `None`: derived from the sub-task's own
    /// id. An LLM agent's tool call sets it from its parent's prefix and the call itself,
    /// so a retried parent that makes the same call hands its tool the same keys.
    pub effect_prefix: Option<String>,
}

/// Why a delegated [`SubTask`] has no output. The runtime's own error is the source, boxed
/// because it is a layer above agents: a `delegation::SubmitError` for a refusal, a
/// `delegation::NoOutput` (holding the sub-task's record) for a task that ended without
/// an output; reach it with `std::error::Error::source` and `downcast_ref`.
///
/// # Example
/// ```
/// use muster_core::agents::host::DelegateError;
///
/// // What an LLM agent's tool call hands back to the model when it has no output:
/// let err = DelegateError::Detached;
/// assert_eq!(err.to_string(), "no runtime to delegate to");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    /// The host has no runtime behind it ([`AgentHost::detached`]).
    #[error("no runtime to delegate to")]
    Detached,
    /// The runtime refused the sub-task (its input, its bounds, or a shutdown); the source
    /// is its `delegation::SubmitError`.
    #[error("{0}")]
    Refused(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The sub-task ended without an accepted output (escalated or cancelled); the source
    /// is a `delegation::NoOutput` holding its record.
    #[error("{0}")]
    Ended(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// How a runtime delegates a [`SubTask`]: the accepted output, or why there is none.
pub type Delegate =
    Arc<dyn Fn(SubTask) -> LocalBoxFuture<'static, Result<Value, DelegateError>> + Send + Sync>;

/// How a runtime finds a declared capability's input schema (document).
pub type InputSchemas = Arc<dyn Fn(&str) -> Option<Value> + Send + Sync>;

/// What the runtime lends an agent type at registration. Cheap to clone.
///
/// # Example
/// ```
/// use muster_core::agents::AgentHost;
///
/// let host = AgentHost::detached();
/// assert!(host.capability_input("code.test").is_none());
/// ```
#[derive(Clone)]
pub struct AgentHost {
    services: Option<Named<Supervisor>>,
    started: Arc<DashMap<String, Arc<dyn Any + Send + Sync>>>,
    delegate: Option<Delegate>,
    inputs: Option<InputSchemas>,
}

impl std::fmt::Debug for AgentHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHost")
            .field("services", &self.started.len())
            .finish()
    }
}

impl AgentHost {
    /// A host whose shared services run under `services` (a supervisor), delegating
    /// sub-tasks with `delegate`; `inputs` gives a declared capability's input schema.
    pub fn new(services: Named<Supervisor>, delegate: Delegate, inputs: InputSchemas) -> Self {
        AgentHost {
            services: Some(services),
            started: Arc::default(),
            delegate: Some(delegate),
            inputs: Some(inputs),
        }
    }

    /// A host with no runtime behind it: services are not started (the caller starts
    /// them), and sub-tasks cannot be delegated.
    pub fn detached() -> Self {
        AgentHost {
            services: None,
            started: Arc::default(),
            delegate: None,
            inputs: None,
        }
    }

    /// The shared service called `key`: the value made by the first agent type that asked
    /// for it, whose child spec was then started under the runtime's supervisor. Later
    /// callers get that first value (their `make` is not called).
    pub async fn service<T: Clone + Send + Sync + 'static>(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<(T, ChildSpec), String>,
    ) -> Result<T, String> {
        if let Some(v) = self.started.get(key) {
            return v
                .clone()
                .downcast::<T>()
                .map(|t| (*t).clone())
                .map_err(|_| format!("service `{key}` is of another kind"));
        }
        let (value, spec) = make()?;
        if let Some(sup) = &self.services {
            sup.get()
                .send(StartChild(spec))
                .await
                .map_err(|e| format!("the supervisor of services is gone: {e}"))??;
        }
        self.started.insert(
            key.to_string(),
            Arc::new(value.clone()) as Arc<dyn Any + Send + Sync>,
        );
        Ok(value)
    }

    /// Delegates a sub-task and waits for its accepted output.
    pub fn delegate(&self, task: SubTask) -> LocalBoxFuture<'static, Result<Value, DelegateError>> {
        match &self.delegate {
            Some(d) => d(task),
            None => Box::pin(async { Err(DelegateError::Detached) }),
        }
    }

    /// The input schema (document) of a declared capability.
    pub fn capability_input(&self, capability: &str) -> Option<Value> {
        self.inputs.as_ref().and_then(|f| f(capability))
    }
}
