//! Agent definitions: an agent type as the runtime registers it (its capabilities,
//! replicas, restart type, supervision and the factory that makes its instances), whether
//! it comes from Rust code or from a manifest.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::agent::{AgentError, AgentFactory, TaskContext};
use super::function::FnAgent;
use super::handle::MailboxLayer;
use crate::messaging::CapabilitySpec;
use crate::supervision::{Restart, Supervision};

/// An agent type to register: its capabilities, replicas, restart type and backend.
///
/// # Example
/// ```
/// use muster_core::{AgentDef, CapabilitySpec};
/// use serde_json::json;
///
/// let def = AgentDef::function("echo", |input, _ctx| async move { Ok(json!({"echo": input})) })
///     .capability(CapabilitySpec::new("echo", "any", "any"))
///     .replicas(2);
/// assert_eq!(def.replicas, 2);
/// ```
#[derive(Clone)]
pub struct AgentDef {
    /// Agent type name; instances are `name#0`, `name#1`, ...
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Supervised instances.
    pub replicas: usize,
    /// Tasks at once per instance.
    pub concurrency: usize,
    /// Tasks queued per instance beyond `concurrency`.
    pub mailbox: usize,
    /// Restart type of each instance.
    pub restart: Restart,
    /// Capabilities it declares.
    pub capabilities: Vec<CapabilitySpec>,
    /// The supervisor of its instances.
    pub supervision: Supervision,
    /// When set, instances must report liveness this often or drop out.
    pub liveness: Option<Duration>,
    /// Makes each instance's agent.
    pub factory: Arc<dyn AgentFactory>,
    /// Schemas this agent type brings (derived from Rust types by [`AgentDef::typed`]),
    /// added to the schema store before its capabilities are compiled.
    pub schemas: Vec<(String, Value)>,
    /// What wraps each instance's mailbox (a simulated network); none: the runtime
    /// reaches its instances directly.
    pub layer: Option<Arc<dyn MailboxLayer>>,
}

impl std::fmt::Debug for AgentDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentDef")
            .field("name", &self.name)
            .field("replicas", &self.replicas)
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

impl AgentDef {
    /// An agent type made by `factory`.
    pub fn new(name: impl Into<String>, factory: impl AgentFactory) -> Self {
        AgentDef {
            name: name.into(),
            description: String::new(),
            replicas: 1,
            concurrency: 1,
            mailbox: 64,
            restart: Restart::Permanent,
            capabilities: Vec::new(),
            supervision: Supervision::default(),
            liveness: None,
            factory: Arc::new(factory),
            schemas: Vec::new(),
            layer: None,
        }
    }

    /// An agent type whose instances run an async closure.
    pub fn function<F, Fut>(name: impl Into<String>, f: F) -> Self
    where
        F: Fn(Value, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, AgentError>> + 'static,
    {
        AgentDef::new(name, FnAgent::new(f))
    }

    /// Declares a capability.
    pub fn capability(mut self, c: CapabilitySpec) -> Self {
        self.capabilities.push(c);
        self
    }

    /// Sets the number of instances.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Sets tasks at once per instance.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the queue bound per instance.
    pub fn mailbox(mut self, n: usize) -> Self {
        self.mailbox = n;
        self
    }

    /// Sets the restart type.
    pub fn restart(mut self, r: Restart) -> Self {
        self.restart = r;
        self
    }

    /// Sets the supervision of its instances.
    pub fn supervision(mut self, s: Supervision) -> Self {
        self.supervision = s;
        self
    }

    /// Puts `layer` between the runtime and each instance's mailbox.
    ///
    /// # Example
    /// ```
    /// use std::sync::{Arc, Weak};
    /// use muster_core::agents::{InstanceHandle, Mailbox, MailboxLayer};
    /// use muster_core::AgentDef;
    /// use serde_json::json;
    ///
    /// struct Direct;
    /// impl MailboxLayer for Direct {
    ///     fn wrap(&self, _: Weak<InstanceHandle>, inner: Box<dyn Mailbox>) -> Box<dyn Mailbox> {
    ///         inner
    ///     }
    /// }
    /// let def = AgentDef::function("echo", |input, _ctx| async move { Ok(json!(input)) })
    ///     .layer(Arc::new(Direct));
    /// assert!(def.layer.is_some());
    /// ```
    pub fn layer(mut self, layer: Arc<dyn MailboxLayer>) -> Self {
        self.layer = Some(layer);
        self
    }

    /// Instance ids.
    pub fn instance_ids(&self) -> Vec<String> {
        (0..self.replicas)
            .map(|i| format!("{}#{i}", self.name))
            .collect()
    }
}
