//! The task owner's and the scope table's messages (besides the [`AttemptReport`](crate::agents::AttemptReport)
//! every attempt ends in, from the agents' protocol).

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::messaging::{Overlap, Scope};

/// A task heartbeat from the agent holding lease `epoch`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaseHeartbeat {
    /// The lease's epoch.
    pub epoch: u64,
}

/// Cancels the task: the running attempt is told (its tokio task aborted, its process told
/// or killed) and the task ends `cancelled`.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CancelTask {
    /// Why (journaled with `task_cancelled`).
    pub reason: String,
}

/// Asks the scope table for a task's scope. The answer comes on `granted` once every
/// pattern is free (all at once, never a part), or at once when `fail` is set and the
/// scope overlaps one held or waited for.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AcquireScope {
    /// The task.
    pub task: Uuid,
    /// Its scope (not empty).
    pub scope: Arc<Scope>,
    /// Fail at once instead of waiting.
    pub fail: bool,
    /// Where the answer goes.
    pub granted: oneshot::Sender<Result<(), ScopeRefused>>,
}

/// Frees a task's scope, or takes it out of the queue if it was still waiting.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseScope {
    /// The task.
    pub task: Uuid,
}

/// Why a task that fails on conflict did not get its scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "scope conflict: task {holder} holds (or waits first for) a scope this task needs: {overlap}"
)]
pub struct ScopeRefused {
    /// The task holding (or first in line for) the overlapping scope.
    pub holder: Uuid,
    /// Which patterns overlap, with an example path.
    pub overlap: Overlap,
}
