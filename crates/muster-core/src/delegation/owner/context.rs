//! What an owner asks of its surroundings ([`Cx`]): the time, its timers, an agent for its
//! task, handing a lease to that agent, and the waits that end outside the shard (for its
//! scope, in the capability's line, for an agent to register, for its outcome's record to
//! be written).
//!
//! The owner decides (G1, G2); its surroundings only carry its decisions out. The
//! [`OwnerShard`](super::super::shard::OwnerShard) implements this with its timer queue,
//! the router and spawned futures; a unit test implements it with a plain queue and a
//! hand-moved clock, and steps the owner without actors. The journal and the counters are
//! not part of it: they are plain data the owner writes through its `Shared` handles.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::super::reuse::{Found, ReuseKey};
use super::super::timers::{Due, TimerKey};
use super::super::written::Pending;
use crate::agents::{InstanceHandle, Ledger};
use crate::discovery::{Abandoned, LinePlace};
use crate::journal::Watermark;
use crate::messaging::{Capability, Envelope, Scope};

/// Why no agent was found for a lease now.
pub(in crate::delegation) enum Unavailable {
    /// Every capable agent is at its bound: the owner has a place in the capability's line.
    Full(LinePlace),
    /// Nobody serves the capability (outside the agents the task excludes).
    Nobody,
    /// Nobody will: every agent type serving it dropped out (its supervisor gave up).
    Abandoned(Abandoned),
}

/// What a task owner asks of its surroundings. Every answer to the owner comes back
/// through its entry points (`on_timer`, `on_woken`, `on_report`, `on_reused`), naming
/// the task.
pub(in crate::delegation) trait Cx {
    /// Now, on the runtime's clock (virtual in simulations).
    fn now(&self) -> Instant;

    /// Sets a timer: `due` comes back to `task`'s owner at `at`, unless disarmed.
    fn arm(&mut self, at: Instant, task: Uuid, due: Due) -> TimerKey;

    /// Cancels a timer (nothing if it fired already).
    fn disarm(&mut self, key: TimerKey);

    /// Finds and reserves the best agent for `capability` outside `exclude`, preferring
    /// `shard`'s; `woken`: the hop count of the freed slot that woke the owner from the
    /// line, if one did. When all are full, the owner's place in line comes back.
    fn find_agent(
        &mut self,
        capability: &Arc<str>,
        exclude: &[Arc<str>],
        shard: usize,
        woken: Option<u32>,
    ) -> Result<(Arc<Capability>, Arc<InstanceHandle>), Unavailable>;

    /// Hands the lease's envelope to `agent`, to be answered by `deadline`; with
    /// `heartbeat`, the agent's heartbeats reach the owner. The attempt shares the task's
    /// effect ledger `effects`.
    fn assign(
        &mut self,
        agent: &Arc<InstanceHandle>,
        envelope: Arc<Envelope>,
        deadline: Instant,
        heartbeat: bool,
        effects: Arc<Ledger>,
    );

    /// Tells `agent` that lease `epoch` of `task` is cancelled.
    fn cancel_attempt(&mut self, agent: &InstanceHandle, task: Uuid, epoch: u64);

    /// Finds identical idempotent work done or in flight, or makes `task` the one that runs
    /// it (its end then reaches the followers).
    fn find_or_run(&mut self, key: &ReuseKey, input: &Arc<Value>, task: Uuid) -> Found;

    /// Asks for `task`'s scope; the answer (or the deadline) wakes it with `Wake::Scope`.
    fn ask_scope(&mut self, task: Uuid, scope: Arc<Scope>, fail: bool, deadline: Instant);

    /// Waits in line: a freed slot (or the backstop) wakes `task` with `Wake::Line`.
    fn wait_in_line(
        &mut self,
        task: Uuid,
        generation: u32,
        line: LinePlace,
        backstop: std::time::Duration,
    );

    /// Hands `outcome` to its caller once the journal whose watermark is `watermark` has
    /// written the task's terminal record.
    fn when_written(&mut self, outcome: Pending, watermark: &watch::Receiver<Watermark>);

    /// Waits for an agent serving `capability` to register (or until `deadline`, which the
    /// owner sets to a backstop before its own deadline); wakes `task` with `Wake::Agent`.
    fn wait_for_agent(&mut self, task: Uuid, capability: Arc<str>, deadline: Instant);
}
