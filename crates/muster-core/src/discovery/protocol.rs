//! The registry's messages: what the runtime and task owners ask of the directory of
//! agents, and the events it publishes. (Instances report to it with
//! [`Presence`](crate::agents::Presence), from the agents' own protocol.)

use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::{broadcast, oneshot};

use crate::agents::AgentState;
use crate::messaging::capability::{Capability, CapabilityError};

/// A change in the registry, as published to subscribers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RegistryEvent {
    /// An instance joined (or re-joined after a restart).
    Registered {
        /// Instance id.
        agent: Arc<str>,
        /// Its capabilities.
        capabilities: Vec<Arc<str>>,
    },
    /// An instance changed state.
    StateChanged {
        /// Instance id.
        agent: Arc<str>,
        /// New state.
        state: AgentState,
    },
    /// An instance left.
    DroppedOut {
        /// Instance id.
        agent: Arc<str>,
        /// Why.
        reason: String,
    },
    /// An agent type dropped out: its supervisor gave up, and no instance of it will start
    /// again (see [`CapabilityIndex::dropped_out`](super::CapabilityIndex::dropped_out)).
    TypeDroppedOut {
        /// The agent type.
        agent_type: Arc<str>,
        /// Its supervisor's report.
        reason: String,
    },
}

/// Declares capabilities for an agent type, checking every contract against the ones
/// already declared. Nothing is declared unless all are consistent.
#[derive(Message)]
#[rtype(result = "Result<(), CapabilityError>")]
pub struct Declare {
    /// The agent type declaring them.
    pub agent: Arc<str>,
    /// The compiled contracts.
    pub contracts: Vec<Arc<Capability>>,
}

impl std::fmt::Debug for Declare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.contracts.iter().map(|c| &*c.name).collect();
        f.debug_struct("Declare")
            .field("agent", &self.agent)
            .field("capabilities", &names)
            .finish()
    }
}

/// Resolves when an instance of the capability registers, or when an agent type serving
/// it drops out (its supervisor gave up): the waiter looks again either way.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WaitFor {
    /// The capability.
    pub capability: Arc<str>,
    /// Fired on the next registration (or drop-out of a type serving it).
    pub tx: oneshot::Sender<()>,
}

impl std::fmt::Debug for WaitFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitFor")
            .field("capability", &self.capability)
            .finish_non_exhaustive()
    }
}

/// Subscribe to registry events.
#[derive(Debug, Message)]
#[rtype(result = "broadcast::Receiver<RegistryEvent>")]
pub struct Subscribe;

/// Resolves once every message sent to the registry before it has been handled.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Sync;
