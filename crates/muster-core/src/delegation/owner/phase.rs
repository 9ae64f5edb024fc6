//! The owner's phases: the one place an owner's state is kept (see the diagram in
//! [`owner`](super)), each holding what that phase waits on.

use std::sync::Arc;

use uuid::Uuid;

use super::super::timers::TimerKey;
use crate::agents::InstanceHandle;

/// The lease in force: its agent, its epoch and the timers watching it.
pub(super) struct ActiveLease {
    pub(super) handle: Arc<InstanceHandle>,
    pub(super) epoch: u64,
    pub(super) timer: TimerKey,
    pub(super) heartbeat_check: Option<TimerKey>,
    pub(super) last_heartbeat: tokio::time::Instant,
}

/// Where an owner is in its task's life: the one place its state is kept. Each variant
/// holds what that phase waits on; see the module's diagram.
pub(super) enum Phase {
    /// Between two steps of one call (and before `begin`): nothing is awaited.
    Pending,
    /// Waits for the identical idempotent task `leader` in flight to end, bounded by the
    /// task's deadline (`timer`).
    Following { leader: Uuid, timer: TimerKey },
    /// Asked the scope table for the task's scope; waits for its answer.
    AwaitingScope,
    /// Every capable agent is at its bound: waits in the capability's line, this owner's
    /// `gen`-th wait there (the wake of an older one is passed on to the next in line).
    InLine { generation: u32 },
    /// Nobody serves the capability (or everybody failed it): waits for an agent to
    /// register, bounded by the deadline.
    AwaitingAgent,
    /// A failed attempt's back-off runs; the owner looks for an agent when `timer` fires.
    Backoff { timer: TimerKey },
    /// Leased to one agent under one epoch.
    Leased(ActiveLease),
    /// The task ended; waits for the leases it granted to answer, at most until `timer`.
    Lingering { timer: TimerKey },
    /// The task ended and nothing is left to wait for: the shard drops this owner.
    Done,
}

impl Phase {
    /// Cancels the timers this phase set (`cancel`: how).
    pub(super) fn cancel_timers(&self, cancel: &mut dyn FnMut(TimerKey)) {
        match self {
            Phase::Following { timer, .. }
            | Phase::Backoff { timer }
            | Phase::Lingering { timer } => cancel(*timer),
            Phase::Leased(l) => {
                cancel(l.timer);
                if let Some(h) = l.heartbeat_check {
                    cancel(h);
                }
            }
            Phase::Pending
            | Phase::AwaitingScope
            | Phase::InLine { .. }
            | Phase::AwaitingAgent
            | Phase::Done => {}
        }
    }
}
