//! The agent instance's protocol: the messages other layers send an instance (an
//! assignment, a cancellation, a kill, a shutdown), the report every attempt ends in and
//! the lifecycle states. (What an instance tells the directory of agents is in
//! [`presence`](super::presence).)
//! Discovery, routing and delegation import this, never the instance actor itself.

use std::sync::Arc;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::agent::Failure;
use super::effects::Ledger;
use crate::journal::Usage;
use crate::messaging::Envelope;

/// An instance's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum AgentState {
    /// Started, not yet taking work.
    Starting = 0,
    /// Taking work.
    Ready = 1,
    /// Every concurrency slot taken (still queues up to its mailbox bound).
    Busy = 2,
    /// Crashed; its supervisor decides what happens next.
    Failed = 3,
    /// Shut down.
    Stopped = 4,
}

impl AgentState {
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => AgentState::Starting,
            1 => AgentState::Ready,
            2 => AgentState::Busy,
            3 => AgentState::Failed,
            _ => AgentState::Stopped,
        }
    }

    /// The snake_case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            AgentState::Starting => "starting",
            AgentState::Ready => "ready",
            AgentState::Busy => "busy",
            AgentState::Failed => "failed",
            AgentState::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an attempt ended, sent to whoever holds the task.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AttemptReport {
    /// The task (or the envelope id of a plain message).
    pub task_id: Uuid,
    /// The lease epoch the agent worked under.
    pub epoch: u64,
    /// The instance.
    pub agent: Arc<str>,
    /// The output, or how it failed.
    pub result: Result<Value, Failure>,
    /// What the attempt spent on models (LLM agents), journaled by the task's owner.
    pub usage: Option<Usage>,
}

impl AttemptReport {
    /// The report of attempt `epoch` of `task_id` on `agent`.
    pub fn new(task_id: Uuid, epoch: u64, agent: Arc<str>, result: Result<Value, Failure>) -> Self {
        AttemptReport {
            task_id,
            epoch,
            agent,
            result,
            usage: None,
        }
    }

    /// The report of an attempt that ended without running to its end, for `why`.
    pub fn gone(task_id: Uuid, epoch: u64, agent: Arc<str>, why: String) -> Self {
        AttemptReport::new(task_id, epoch, agent, Err(Failure::AgentGone(why)))
    }
}

/// Where an attempt's report goes.
pub enum ReplyTo {
    /// A task's owner (the actor driving it). Shared: cloning an actix address allocates,
    /// and every attempt of a shard's owners answers to the same one.
    Owner(Arc<Recipient<AttemptReport>>),
    /// A one-off waiter (plain messages routed by the router).
    Once(oneshot::Sender<AttemptReport>),
    /// Already answered: the reply was taken out of its [`Assign`].
    Answered,
}

impl std::fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReplyTo::Owner(_) => "ReplyTo::Owner",
            ReplyTo::Once(_) => "ReplyTo::Once",
            ReplyTo::Answered => "ReplyTo::Answered",
        })
    }
}

impl ReplyTo {
    /// Delivers the attempt's report to whoever waits for it (nothing when already
    /// answered): for a host that runs an assignment somewhere else and answers it when
    /// the remote attempt ends.
    pub fn send(self, report: AttemptReport) {
        match self {
            ReplyTo::Owner(r) => r.do_send(report),
            ReplyTo::Once(tx) => {
                let _ = tx.send(report);
            }
            ReplyTo::Answered => {}
        }
    }
}

/// A task handed to an instance. A slot was reserved on its handle by whoever sent it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Assign {
    /// The envelope carrying the input (its payload is the input).
    pub envelope: Arc<Envelope>,
    /// When the owner stops waiting.
    pub deadline: tokio::time::Instant,
    /// Where the report goes.
    pub reply: ReplyTo,
    /// Called on every task heartbeat.
    pub heartbeat: Option<Arc<dyn Fn() + Send + Sync>>,
    /// The task's effect ledger, shared by its attempts (`None`: a plain message; the
    /// attempt gets a ledger that journals nothing). A cluster worker hands an attempt a
    /// [`Ledger::remote`] whose records go to the task's owner on its control node.
    pub effects: Option<Arc<Ledger>>,
}

impl std::fmt::Debug for Assign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assign")
            .field("task", &self.envelope.task_id.unwrap_or(self.envelope.id))
            .field("epoch", &self.envelope.epoch)
            .field("recipient", &self.envelope.recipient)
            .field("deadline", &self.deadline)
            .field("reply", &self.reply)
            .finish_non_exhaustive()
    }
}

impl Assign {
    /// Takes the reply out, so the assignment no longer answers when dropped: a host
    /// that forwards the assignment elsewhere keeps the reply and [`ReplyTo::send`]s the
    /// remote attempt's report itself. (An assignment dropped with its reply still in it
    /// answers `agent_gone`.)
    pub fn take_reply(&mut self) -> ReplyTo {
        std::mem::replace(&mut self.reply, ReplyTo::Answered)
    }
}

impl Assign {
    /// Answers this assignment with `agent_gone` without running it.
    pub(crate) fn refuse(mut self, agent: &Arc<str>, why: String) {
        let reply = self.take_reply();
        let env = &self.envelope;
        reply.send(AttemptReport::gone(
            env.task_id.unwrap_or(env.id),
            env.epoch,
            agent.clone(),
            why,
        ));
    }
}

impl Drop for Assign {
    fn drop(&mut self) {
        // An assignment dropped unanswered was still in the mailbox of an instance that
        // crashed or stopped (actix drops a stopped actor's mailbox), or was sent to a
        // mailbox already closed. Its attempt fails now, so the owner reassigns at once
        // instead of at its time bound (G4).
        let reply = self.take_reply();
        if matches!(reply, ReplyTo::Answered) {
            return;
        }
        let env = &self.envelope;
        let agent = match &env.recipient {
            crate::messaging::Recipient::Agent(a) => a.clone(),
            crate::messaging::Recipient::Capability(c) => c.clone(),
        };
        let why = format!("agent {agent} went away before it took the task");
        reply.send(AttemptReport::gone(
            env.task_id.unwrap_or(env.id),
            env.epoch,
            agent,
            why,
        ));
    }
}

/// Cancels a running or queued task.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Cancel {
    /// Task id.
    pub task_id: Uuid,
    /// Epoch of the lease being cancelled.
    pub epoch: u64,
}

/// Stops the instance abruptly: its tasks fail, its supervisor sees an abnormal exit.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Kill(pub String);

/// Stops the instance gracefully: no new work; running tasks may finish.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;
