//! A2A (the Agent2Agent protocol, version 1.0 as `a2a-sdk` 1.x speaks it) for muster.
//!
//! Owns two things:
//!
//! - **the protocol's JSON types** ([`AgentCard`], [`Message`], [`Part`], [`Task`],
//!   [`TaskState`], the JSON-RPC method names and error codes): `muster serve` answers A2A
//!   with them (its `a2a` module), and the client below speaks them;
//! - **remote A2A agents as agents**: the [`A2aAgent`] backend and its [`A2aConfig`]
//!   (`[backend] kind = "a2a"` in a manifest). Each instance fetches the remote's card at
//!   start; each attempt is one remote task (`SendMessage`, then `GetTask` until it ends,
//!   each read renewing the heartbeat); a completed task's artifact is the output (see
//!   [`output_of`]); failed or rejected is an attempt `error` with the remote's message; an
//!   unreachable remote ends the instance (`agent_gone`, restarted by its supervisor); a
//!   cancelled or timed-out attempt sends `CancelTask`.
//!
//! docs/a2a.md is the user's guide. It must not judge outputs (the owner checks
//! contracts), retry or restart: the layers above do. Nothing of it is linked into
//! `muster-core`.
//!
//! Layout: `types` (the protocol) ← `config` (what to reach) ← `client` (the card, the
//! calls) ← `agent` (the [`Agent`] impl).
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod agent;
mod client;
mod config;
pub mod types;

use std::sync::Arc;

pub use agent::{A2aAgent, output_of};
pub use client::{A2aClient, ClientError};
pub use config::{A2aConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POLL};
pub use types::{
    AgentCard, AgentSkill, Artifact, Message, Part, Role, SendMessageRequest, SendMessageResponse,
    Task, TaskState, TaskStatus,
};

use muster_core::agents::agent::{Agent, AgentFactory};

/// Makes one [`A2aAgent`] per instance (and per restart, so a restarted instance fetches
/// the card again).
///
/// # Example
/// ```
/// use muster_core::agents::AgentFactory;
/// use muster_a2a::{A2aConfig, A2aFactory};
///
/// let factory = A2aFactory::new(A2aConfig::new("http://127.0.0.1:9999/.well-known/agent-card.json"));
/// let _agent = factory.create("remote#0");
/// ```
#[derive(Debug, Clone)]
pub struct A2aFactory(Arc<A2aConfig>);

impl A2aFactory {
    /// A factory for agents reaching the remote of `config`.
    pub fn new(config: A2aConfig) -> Self {
        A2aFactory(Arc::new(config))
    }
}

impl AgentFactory for A2aFactory {
    fn create(&self, instance: &str) -> Box<dyn Agent> {
        Box::new(A2aAgent::new(instance, (*self.0).clone()))
    }
}
