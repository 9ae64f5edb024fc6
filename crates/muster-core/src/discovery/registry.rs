//! The registry actor: agents register on start-up, failed agents drop out, and every
//! change is published (to subscribers and to the journal). An agent type whose
//! supervisor gave up is marked dropped out in the index, and the owners waiting for its
//! capabilities are woken.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{broadcast, oneshot};

use super::index::CapabilityIndex;
use super::protocol::{Declare, RegistryEvent, Subscribe, Sync, WaitFor};
use crate::agents::{AgentState, InstanceHandle, Presence};
use crate::journal::{Event, Recorder};
use crate::messaging::CapabilityError;
use crate::supervision::{ChildLink, Exit, StopActor};

/// The registry actor. Sole writer of the [`CapabilityIndex`].
pub(crate) struct Registry {
    index: Arc<CapabilityIndex>,
    recorder: Recorder,
    next_ordinal: u64,
    ordinals: HashMap<Arc<str>, u64>,
    waiters: HashMap<Arc<str>, Vec<oneshot::Sender<()>>>,
    liveness: HashMap<Arc<str>, (Duration, tokio::time::Instant)>,
    events: broadcast::Sender<RegistryEvent>,
    link: Option<ChildLink>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("agents", &self.ordinals.len())
            .field("waiting_capabilities", &self.waiters.len())
            .field("watched", &self.liveness.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The registry of `index` (its sole writer), journaling through `recorder` and
    /// reporting its exit through `link`.
    pub(crate) fn new(index: Arc<CapabilityIndex>, recorder: Recorder, link: ChildLink) -> Self {
        let (events, _) = broadcast::channel(1024);
        Registry {
            index,
            recorder,
            next_ordinal: 0,
            ordinals: HashMap::new(),
            waiters: HashMap::new(),
            liveness: HashMap::new(),
            events,
            link: Some(link),
        }
    }

    fn publish(&self, e: RegistryEvent) {
        let _ = self.events.send(e);
    }

    fn register(&mut self, h: Arc<InstanceHandle>, liveness: Option<Duration>) {
        let ordinal = *self.ordinals.entry(h.id.clone()).or_insert_with(|| {
            self.next_ordinal += 1;
            self.next_ordinal
        });
        h.set_ordinal(ordinal);
        if h.state() == AgentState::Starting {
            h.set_state(AgentState::Ready);
        }
        if let Some(every) = liveness {
            self.liveness
                .insert(h.id.clone(), (every, tokio::time::Instant::now()));
        }
        self.recorder.record(Event::AgentRegistered {
            agent: h.id.clone(),
            capabilities: h.capabilities.clone(),
            generation: h.generation,
        });
        let event = RegistryEvent::Registered {
            agent: h.id.clone(),
            capabilities: h.capabilities.clone(),
        };
        let caps = h.capabilities.clone();
        self.index.insert(h);
        // Published once the index lists it: a subscriber woken by it finds it there.
        self.publish(event);
        for c in caps {
            if let Some(ws) = self.waiters.remove(&c) {
                for w in ws {
                    let _ = w.send(());
                }
            }
        }
    }

    fn drop_out(&mut self, id: &Arc<str>, reason: String) {
        if self.index.remove(id).is_some() {
            self.liveness.remove(id);
            self.recorder.record(Event::AgentDroppedOut {
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

impl Registry {
    /// An agent type's supervisor gave up: owners waiting for one of its capabilities
    /// are woken to look again, and those nobody serves any more stop waiting.
    fn type_gone(&mut self, agent_type: &Arc<str>, reason: &str) {
        tracing::warn!(%agent_type, %reason, "agent type dropped out");
        let caps = self.index.type_gone(agent_type, reason);
        self.publish(RegistryEvent::TypeDroppedOut {
            agent_type: agent_type.clone(),
            reason: reason.to_string(),
        });
        for c in caps {
            if let Some(ws) = self.waiters.remove(&c) {
                for w in ws {
                    let _ = w.send(());
                }
            }
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(l) = self.link.take() {
            l.exit(Exit::Shutdown);
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
                if let Some(h) = act.index.agent(&id) {
                    h.kill("missed liveness heartbeats");
                }
                act.drop_out(&id, "missed liveness heartbeats".into());
            }
        });
    }
}

impl Handler<Declare> for Registry {
    type Result = Result<(), CapabilityError>;

    fn handle(&mut self, msg: Declare, _: &mut Self::Context) -> Self::Result {
        // All or nothing: check every contract before declaring any.
        for c in &msg.contracts {
            self.index.check_contract(c)?;
        }
        for c in msg.contracts {
            self.index.declare(c, &msg.agent)?;
        }
        Ok(())
    }
}

impl Handler<WaitFor> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WaitFor, _: &mut Self::Context) {
        // Its agents dropped out before the wait reached here: nothing will wake it, so
        // it looks again now (and finds nobody will come).
        if self.index.abandoned(&msg.capability).is_some() {
            let _ = msg.tx.send(());
            return;
        }
        let ws = self.waiters.entry(msg.capability).or_default();
        ws.retain(|w| !w.is_closed());
        ws.push(msg.tx);
    }
}

impl Handler<Subscribe> for Registry {
    type Result = MessageResult<Subscribe>;

    fn handle(&mut self, _: Subscribe, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.events.subscribe())
    }
}

impl Handler<Sync> for Registry {
    type Result = ();

    fn handle(&mut self, _: Sync, _: &mut Self::Context) {}
}

impl Handler<StopActor> for Registry {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Presence> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Presence, _: &mut Self::Context) {
        match msg {
            Presence::Up { handle, liveness } => self.register(handle, liveness),
            Presence::Alive(id) => {
                if let Some((_, last)) = self.liveness.get_mut(&id) {
                    *last = tokio::time::Instant::now();
                }
            }
            Presence::State { id, state, reason } => {
                self.recorder.record(Event::AgentStateChanged {
                    agent: id.clone(),
                    state: state.as_str().into(),
                    reason,
                });
                self.publish(RegistryEvent::StateChanged { agent: id, state });
            }
            Presence::Down {
                id,
                generation,
                reason,
            } => {
                let current = self.index.agent(&id).map(|h| h.generation);
                if current == Some(generation) {
                    self.drop_out(&id, reason);
                }
            }
            Presence::Gone { agent_type, reason } => self.type_gone(&agent_type, &reason),
        }
    }
}
