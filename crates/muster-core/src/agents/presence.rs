//! Presence: what an instance tells the directory of agents (the registry) about itself
//! (up with its handle, alive, a state change, down; its type gone), and the [`Directory`] handle it
//! tells it through, so an instance never names the registry.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::handle::InstanceHandle;
use super::protocol::AgentState;

/// What an instance tells the directory of agents (the registry) about itself.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Presence {
    /// It is up and takes work: its handle joins the capability index.
    Up {
        /// Its handle.
        handle: Arc<InstanceHandle>,
        /// When set, it must report [`Presence::Alive`] at least this often.
        liveness: Option<Duration>,
    },
    /// A liveness heartbeat.
    Alive(Arc<str>),
    /// Its lifecycle state changed (the handle's state is already set; this publishes it).
    State {
        /// Instance id.
        id: Arc<str>,
        /// New state.
        state: AgentState,
        /// Why, for failures.
        reason: Option<String>,
    },
    /// It left for good (shut down, or not restarted): only the registration of this
    /// generation is removed, so a late message about an old generation cannot remove its
    /// restarted successor.
    Down {
        /// Instance id.
        id: Arc<str>,
        /// The generation that left.
        generation: u64,
        /// Why.
        reason: String,
    },
    /// An agent type's supervisor gave up (past its restart intensity): none of its
    /// instances will come back unless the type is registered again. A restart in
    /// progress is not this (OTP: only a supervisor that gave up means gone).
    Gone {
        /// The agent type.
        agent_type: Arc<str>,
        /// The supervisor's report (its last child's exit).
        reason: String,
    },
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").finish_non_exhaustive()
    }
}

/// Where an instance sends its [`Presence`]: the directory of agents, whichever
/// incarnation of it runs now. The runtime makes one per runtime and hands it to every
/// instance at start.
///
/// # Example
/// ```
/// use muster_core::agents::presence::{Directory, Presence};
/// use std::sync::{Arc, Mutex};
///
/// let seen = Arc::new(Mutex::new(0));
/// let count = seen.clone();
/// let dir = Directory::new(move |_p: Presence| *count.lock().unwrap() += 1);
/// dir.tell(Presence::Alive("tester#0".into()));
/// assert_eq!(*seen.lock().unwrap(), 1);
/// ```
#[derive(Clone)]
pub struct Directory(Arc<dyn Fn(Presence) + Send + Sync>);

impl Directory {
    /// A directory that hands every presence report to `f`.
    pub fn new(f: impl Fn(Presence) + Send + Sync + 'static) -> Self {
        Directory(Arc::new(f))
    }

    /// Reports `p`.
    pub fn tell(&self, p: Presence) {
        (self.0)(p)
    }
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Directory")
    }
}
