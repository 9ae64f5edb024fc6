//! The owner shard's and the scope table's messages (besides the
//! [`AttemptReport`](crate::agents::AttemptReport) every attempt ends in, from the agents'
//! protocol, and the [`Reused`](super::reuse::Reused) an identical task's end sends).

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::record::TaskRecord;
use super::task::Task;
use crate::discovery::LinePlace;
use crate::messaging::{Capability, Overlap, Scope};

/// A task heartbeat from the agent holding lease `epoch` of `task`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct LeaseHeartbeat {
    /// The task.
    pub task: Uuid,
    /// The lease's epoch.
    pub epoch: u64,
}

/// Cancels a task: the running attempt is told (its tokio task aborted, its process told
/// or killed) and the task ends `cancelled`. Answers false when the task had already
/// ended (or is not on this shard).
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct CancelTask {
    /// The task.
    pub task: Uuid,
    /// Why (journaled with `task_cancelled`).
    pub reason: String,
}

/// Cancels every live task of the shard (a shutdown), then stops the shard.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CancelAll {
    /// Why (journaled with each `task_cancelled`).
    pub reason: String,
}

/// A task accepted (checked and journaled) whose owner is still to be started, on the
/// shard claimed for it, by [`Owners::submit`](super::Owners::submit).
pub struct Accepted {
    pub(super) task: Task,
    pub(super) id: Uuid,
    /// The contract the input was checked against at acceptance (none yet declared).
    pub(super) contract: Option<Arc<Capability>>,
    pub(super) waiter: oneshot::Sender<TaskRecord>,
    /// The shard its owner runs on (its submitter's), claimed with the id.
    pub(super) shard: usize,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("id", &self.id)
            .field("capability", &self.task.capability)
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

/// An accepted task, whose owner the shard starts. It ends its task itself if it is
/// dropped before the shard took the task: a send to a shard that has stopped, a message
/// left in the mailbox of a shard that stopped behind a [`CancelAll`], or one the shard
/// refuses because it is stopping. The task then leaves the table of live tasks, is
/// journaled `task_cancelled` and its handle gets a cancelled record: no accepted task is
/// left without an end, whichever way the message is lost.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct StartOwner {
    accepted: Option<Accepted>,
    ender: Arc<dyn EndUnstarted>,
}

impl StartOwner {
    /// The message starting `accepted`'s owner; `ender` ends the task if it never starts.
    pub(super) fn new(accepted: Accepted, ender: Arc<dyn EndUnstarted>) -> Self {
        StartOwner {
            accepted: Some(accepted),
            ender,
        }
    }

    /// Takes the task out, for its owner to start (the message no longer ends it).
    pub(super) fn take(&mut self) -> Option<Accepted> {
        self.accepted.take()
    }
}

impl Drop for StartOwner {
    fn drop(&mut self) {
        if let Some(a) = self.accepted.take() {
            self.ender.end_unstarted(a);
        }
    }
}

/// Ends a task whose owner never started (see [`StartOwner`]); the owners' shared state
/// implements it (handed in from above, so that this protocol need not know it).
pub(super) trait EndUnstarted: Send + Sync {
    /// Ends `accepted` `cancelled`: out of the live table, journaled, its handle told.
    fn end_unstarted(&self, accepted: Accepted);
}

/// Something an owner waited for outside the shard has happened (a spawned wait ended).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Woken {
    /// The waiting task.
    pub(super) task: Uuid,
    /// What it waited for.
    pub(super) wake: Wake,
}

/// What an owner waited for outside the shard (a future the shard spawned), now here.
pub(super) enum Wake {
    /// The scope table answered (or the deadline passed): `Err` is why the task escalates.
    Scope(Result<(), String>),
    /// A freed slot of the capability, or the backstop of the `gen`-th wait in line.
    Line {
        /// Which wait in line it ends (an older one's wake is passed on).
        generation: u32,
        /// Its place in line, with the slot offered if one was (passed on unless taken).
        slot: LinePlace,
    },
    /// An agent serving the capability registered (or the deadline passed).
    Agent,
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

impl std::fmt::Debug for AcquireScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcquireScope")
            .field("task", &self.task)
            .field("scope", &self.scope)
            .field("fail", &self.fail)
            .finish_non_exhaustive()
    }
}

/// Frees a task's scope, or takes it out of the queue if it was still waiting.
#[derive(Debug, Message)]
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
