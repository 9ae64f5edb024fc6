//! The registry actor: agents register on start-up, failed agents drop out, and every
//! change is published (to subscribers and to the journal).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::{broadcast, oneshot};

use super::capability::{Capability, CapabilityError};
use super::index::InstanceHandle;
use crate::agents::AgentState;
use crate::journal::Event;
use crate::runtime::Shared;

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
}

/// The registry actor. Sole writer of the [`CapabilityIndex`](super::CapabilityIndex).
pub struct Registry {
    shared: Arc<Shared>,
    next_ordinal: u64,
    ordinals: HashMap<Arc<str>, u64>,
    waiters: HashMap<Arc<str>, Vec<oneshot::Sender<()>>>,
    liveness: HashMap<Arc<str>, (Duration, tokio::time::Instant)>,
    events: broadcast::Sender<RegistryEvent>,
    link: Option<crate::supervision::ChildLink>,
}

impl Registry {
    pub(crate) fn with_link(mut self, link: crate::supervision::ChildLink) -> Self {
        self.link = Some(link);
        self
    }

    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let (events, _) = broadcast::channel(1024);
        Registry {
            shared,
            next_ordinal: 0,
            ordinals: HashMap::new(),
            waiters: HashMap::new(),
            liveness: HashMap::new(),
            events,
            link: None,
        }
    }

    fn publish(&self, e: RegistryEvent) {
        let _ = self.events.send(e);
    }

    fn drop_out(&mut self, id: &Arc<str>, reason: String) {
        if self.shared.index.remove(id).is_some() {
            self.liveness.remove(id);
            self.shared.journal(Event::AgentDroppedOut {
                agent: id.clone(),
                reason: reason.clone(),
            });
            tracing::info!(agent = %id, %reason, "agent dropped out");
            self.publish(RegistryEvent::DroppedOut {
                agent: id.clone(),
                reason,
            });
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(l) = self.link.take() {
            l.exit(crate::supervision::Exit::Shutdown);
        }
    }

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1 << 20);
        // Liveness sweep: instances that declared a liveness interval and went quiet for
        // three intervals drop out and are stopped, so their supervisor restarts them.
        ctx.run_interval(Duration::from_millis(500), |act, _| {
            let now = tokio::time::Instant::now();
            let dead: Vec<Arc<str>> = act
                .liveness
                .iter()
                .filter(|(_, (every, last))| now.saturating_duration_since(*last) > *every * 3)
                .map(|(id, _)| id.clone())
                .collect();
            for id in dead {
                if let Some(h) = act.shared.index.agent(&id) {
                    h.addr.do_send(crate::agents::instance::Kill(
                        "missed liveness heartbeats".into(),
                    ));
                }
                act.drop_out(&id, "missed liveness heartbeats".into());
            }
        });
    }
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

impl Handler<Declare> for Registry {
    type Result = Result<(), CapabilityError>;

    fn handle(&mut self, msg: Declare, _: &mut Self::Context) -> Self::Result {
        // All or nothing: check every contract before declaring any.
        for c in &msg.contracts {
            self.shared.index.check_contract(c)?;
        }
        for c in msg.contracts {
            self.shared.index.declare(c, &msg.agent)?;
        }
        Ok(())
    }
}

/// An instance is up and takes work.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    /// Its handle.
    pub handle: Arc<InstanceHandle>,
    /// When set, the instance must call `AgentLink::alive` at least this often.
    pub liveness: Option<Duration>,
}

impl Handler<Register> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut Self::Context) {
        let h = msg.handle;
        let ordinal = *self.ordinals.entry(h.id.clone()).or_insert_with(|| {
            self.next_ordinal += 1;
            self.next_ordinal
        });
        h.set_ordinal(ordinal);
        if h.state() == AgentState::Starting {
            h.set_state(AgentState::Ready);
        }
        if let Some(every) = msg.liveness {
            self.liveness
                .insert(h.id.clone(), (every, tokio::time::Instant::now()));
        }
        self.shared.journal(Event::AgentRegistered {
            agent: h.id.clone(),
            capabilities: h.capabilities.clone(),
            generation: h.generation,
        });
        self.publish(RegistryEvent::Registered {
            agent: h.id.clone(),
            capabilities: h.capabilities.clone(),
        });
        let caps = h.capabilities.clone();
        self.shared.index.insert(h);
        for c in caps {
            if let Some(ws) = self.waiters.remove(&c) {
                for w in ws {
                    let _ = w.send(());
                }
            }
        }
    }
}

/// An instance left (stopped, crashed past its budget, or shut down).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deregister {
    /// Instance id.
    pub id: Arc<str>,
    /// Only the registration of this generation is removed (a late message about an old
    /// generation must not remove its restarted successor).
    pub generation: u64,
    /// Why.
    pub reason: String,
}

impl Handler<Deregister> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Deregister, _: &mut Self::Context) {
        let current = self.shared.index.agent(&msg.id).map(|h| h.generation);
        if current == Some(msg.generation) {
            self.drop_out(&msg.id, msg.reason);
        }
    }
}

/// An instance changed state (the handle's atomic is already set; this publishes it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StateChanged {
    /// Instance id.
    pub id: Arc<str>,
    /// New state.
    pub state: AgentState,
    /// Why, for failures.
    pub reason: Option<String>,
}

impl Handler<StateChanged> for Registry {
    type Result = ();

    fn handle(&mut self, msg: StateChanged, _: &mut Self::Context) {
        self.shared.journal(Event::AgentStateChanged {
            agent: msg.id.clone(),
            state: msg.state.as_str().into(),
            reason: msg.reason,
        });
        self.publish(RegistryEvent::StateChanged {
            agent: msg.id,
            state: msg.state,
        });
    }
}

/// Liveness heartbeat from an instance.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Alive(pub Arc<str>);

impl Handler<Alive> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Alive, _: &mut Self::Context) {
        if let Some((_, last)) = self.liveness.get_mut(&msg.0) {
            *last = tokio::time::Instant::now();
        }
    }
}

/// Resolves when an instance of the capability registers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WaitFor {
    /// The capability.
    pub capability: Arc<str>,
    /// Fired on the next registration.
    pub tx: oneshot::Sender<()>,
}

impl Handler<WaitFor> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WaitFor, _: &mut Self::Context) {
        let ws = self.waiters.entry(msg.capability).or_default();
        ws.retain(|w| !w.is_closed());
        ws.push(msg.tx);
    }
}

/// Subscribe to registry events.
#[derive(Message)]
#[rtype(result = "broadcast::Receiver<RegistryEvent>")]
pub struct Subscribe;

impl Handler<Subscribe> for Registry {
    type Result = MessageResult<Subscribe>;

    fn handle(&mut self, _: Subscribe, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.events.subscribe())
    }
}

/// Resolves once every message sent to the registry before it has been handled.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Sync;

impl Handler<Sync> for Registry {
    type Result = ();

    fn handle(&mut self, _: Sync, _: &mut Self::Context) {}
}

impl Handler<crate::supervision::supervisor::StopActor> for Registry {
    type Result = ();

    fn handle(&mut self, _: crate::supervision::supervisor::StopActor, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
