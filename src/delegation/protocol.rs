//! The task owner's messages (besides the [`AttemptReport`](crate::agents::AttemptReport)
//! every attempt ends in, from the agents' protocol).

use actix::prelude::*;

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
