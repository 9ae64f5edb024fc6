//! The delegator: where tasks are accepted, and the handles every task owner works with.
//!
//! A task is checked (its bounds, its input against the capability's contract, its size
//! against the journal's payload bound) and journaled `task_submitted` before its owner
//! exists, so nothing is leased for a task the journal does not know. The delegator keeps
//! the owner table (live task id → owner), the task counters and the few handles an owner
//! needs: the router (and through it the capability index, the journal and the ids), the
//! registry's name (to wait for an agent) and the grace an attempt gets past its deadline.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::handle::TaskHandle;
use super::owner::TaskOwner;
use super::protocol::CancelTask;
use super::record::TaskRecord;
use super::stats::{Stats, StatsSnapshot};
use super::task::Task;
use crate::agents::AttemptReport;
use crate::discovery::Registry;
use crate::journal::{check_payload, Event};
use crate::messaging::ContractError;
use crate::routing::Router;
use crate::supervision::Named;

/// Why a task was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The input breaks the capability's input schema (nothing was leased).
    #[error("task for `{capability}` refused: {source}")]
    InvalidInput {
        /// The capability.
        capability: String,
        /// The validator's errors.
        source: ContractError,
    },
    /// The task's bounds are invalid.
    #[error("task for `{capability}` refused: {message}")]
    InvalidTask {
        /// The capability.
        capability: String,
        /// What is wrong.
        message: String,
    },
    /// The runtime is stopped.
    #[error("the runtime has stopped: {0}")]
    Stopped(String),
}

/// Accepts tasks and holds what their owners share.
pub struct Delegator {
    pub(super) router: Router,
    pub(super) registry: Named<Registry>,
    pub(super) owners: DashMap<Uuid, Addr<TaskOwner>>,
    pub(super) stats: Stats,
    pub(super) grace: Duration,
}

impl std::fmt::Debug for Delegator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delegator")
            .field("live_tasks", &self.owners.len())
            .finish()
    }
}

/// An accepted task whose owner is still to be started, on the runtime's thread.
pub struct PendingOwner {
    delegator: Arc<Delegator>,
    task: Task,
    id: Uuid,
    waiter: oneshot::Sender<TaskRecord>,
}

impl PendingOwner {
    /// Starts the task's owner on the current arbiter and enters it in the owner table.
    pub fn start(self) {
        let contract = self
            .delegator
            .router
            .index()
            .contract(&self.task.capability);
        let owners = self.delegator.clone();
        let addr =
            TaskOwner::new(self.delegator, self.task, self.id, contract, self.waiter).start();
        owners.owners.insert(self.id, addr);
    }
}

impl Delegator {
    /// A delegator routing through `router`, waiting for agents on `registry`; an attempt
    /// may run `grace` past its deadline before it is aborted.
    pub fn new(router: Router, registry: Named<Registry>, grace: Duration) -> Self {
        Delegator {
            router,
            registry,
            owners: DashMap::new(),
            stats: Stats::default(),
            grace,
        }
    }

    /// Checks and journals a task; returns its handle and its owner, to be started on the
    /// runtime's thread. Nothing is journaled for a task that is refused.
    pub fn accept(self: &Arc<Self>, task: Task) -> Result<(TaskHandle, PendingOwner), SubmitError> {
        if task.attempts == 0 {
            return Err(SubmitError::InvalidTask {
                capability: task.capability,
                message: "attempts must be at least 1".into(),
            });
        }
        if task.timeout.is_zero() {
            return Err(SubmitError::InvalidTask {
                capability: task.capability,
                message: "timeout must be more than zero".into(),
            });
        }
        let recorder = self.router.recorder();
        if let Some(c) = self.router.index().contract(&task.capability) {
            c.input
                .validate(&task.input)
                .map_err(|source| SubmitError::InvalidInput {
                    capability: task.capability.clone(),
                    source,
                })?;
        }
        let now = recorder.now_ms();
        let id = task.id.unwrap_or_else(|| self.router.ids().next(now));
        // The journal's payload bound, checked where inputs enter (see `journal::check_payload`).
        let limit = recorder.journal().max_payload_bytes();
        if let Err(e) = check_payload(id, &task.input, limit) {
            return Err(SubmitError::InvalidTask {
                capability: task.capability,
                message: e.to_string(),
            });
        }
        let correlation = task.correlation.unwrap_or(id);
        recorder.record_at(
            now,
            Event::TaskSubmitted {
                task: id,
                capability: Arc::from(task.capability.as_str()),
                correlation,
                input: task.input.clone(),
                attempts: task.attempts,
                timeout_ms: task.timeout.as_millis() as u64,
                sender: task.sender.clone(),
            },
        );
        self.stats.submitted();
        let (tx, rx) = oneshot::channel();
        let fallback = TaskRecord::new(id, task.capability.clone(), correlation, now);
        let handle = TaskHandle { id, rx, fallback };
        let pending = PendingOwner {
            delegator: self.clone(),
            task,
            id,
            waiter: tx,
        };
        Ok((handle, pending))
    }

    /// Cancels a live task; false if it had already ended (or is unknown).
    pub async fn cancel(&self, task: Uuid, reason: &str) -> bool {
        let addr = self.owners.get(&task).map(|a| a.clone());
        match addr {
            Some(a) => a
                .send(CancelTask {
                    reason: reason.into(),
                })
                .await
                .unwrap_or(false),
            None => false,
        }
    }

    /// Cancels every live task (a shutdown); returns when each owner has answered.
    pub async fn cancel_all(&self, reason: &str) {
        let owners: Vec<Addr<TaskOwner>> = self.owners.iter().map(|a| a.value().clone()).collect();
        for o in owners {
            let _ = o
                .send(CancelTask {
                    reason: reason.into(),
                })
                .await;
        }
    }

    /// Hands a result from outside this runtime's instances to the owner of a live task,
    /// fenced like any other answer (G2). False when no live task has this id.
    pub fn deliver_result(&self, task: Uuid, agent: &str, epoch: u64, output: Value) -> bool {
        match self.owners.get(&task).map(|a| a.clone()) {
            Some(addr) => {
                addr.do_send(AttemptReport::new(
                    task,
                    epoch,
                    Arc::from(agent),
                    Ok(output),
                ));
                true
            }
            None => false,
        }
    }

    /// The task counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Live tasks (owners not yet ended).
    pub fn live_tasks(&self) -> usize {
        self.owners.len()
    }
}
