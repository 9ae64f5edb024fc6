//! Submission: where a task is accepted and its owner started, in one call
//! ([`Owners::submit`]).
//!
//! A task is checked (its bounds, its input against the capability's contract, its size
//! against the journal's payload bound) and journaled `task_submitted` before its owner
//! exists, so nothing is leased for a task the journal does not know (G1). A task that
//! is accepted while its shard's owners have stopped ends `cancelled` at once and is
//! refused as [`SubmitError::Stopped`]; one accepted as the shutdown begins is cancelled
//! by it, or, if its owner's start is lost behind it, ends `cancelled` as that start is
//! dropped (see `StartOwner`): no submission is left without an end.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::handle::TaskHandle;
use super::owners::Owners;
use super::protocol::Accepted;
use super::record::TaskRecord;
use super::task::{MAX_DURATION, Task};
use crate::journal::{Event, check_payload};
use crate::messaging::ContractError;

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

impl Owners {
    /// Accepts a task and starts its owner on the shard of the calling thread (a thread
    /// that is no shard's: the shards in turn); returns at once with its handle. Nothing
    /// is journaled for a task that is refused for its input or its bounds.
    pub fn submit(&self, task: Task) -> Result<TaskHandle, SubmitError> {
        let (handle, accepted) = self.accept(task)?;
        if !self.start(accepted) {
            return Err(SubmitError::Stopped(
                "the runtime is shutting down: its task owners have stopped".into(),
            ));
        }
        Ok(handle)
    }

    /// Checks and journals a task; returns its handle and the accepted task, whose owner
    /// [`Owners::start`] starts on the shard claimed for it.
    fn accept(&self, mut task: Task) -> Result<(TaskHandle, Accepted), SubmitError> {
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
        if let Some((field, d)) = task.out_of_bounds() {
            return Err(SubmitError::InvalidTask {
                capability: task.capability,
                message: format!(
                    "{field} of {} is beyond the limit of {}",
                    humantime::format_duration(d),
                    humantime::format_duration(MAX_DURATION)
                ),
            });
        }
        let router = self.router();
        let recorder = router.recorder();
        // Looked up once: the owner starts with the contract the input was checked against.
        let contract = router.index().contract(&task.capability);
        if let Some(c) = &contract {
            c.input
                .validate(&task.input)
                .map_err(|source| SubmitError::InvalidInput {
                    capability: task.capability.clone(),
                    source,
                })?;
        }
        if task.scope.is_none() {
            // The capability's default scope, for a task that declares none.
            task.scope = contract
                .as_ref()
                .and_then(|c| c.spec.scope.clone())
                .filter(|s| !s.is_empty())
                .map(Arc::new);
        }
        let now = recorder.now_ms();
        let id = task.id.unwrap_or_else(|| router.ids().next(now));
        // The journal's payload bound, checked where inputs enter (see `journal::check_payload`).
        let limit = recorder.journal().max_payload_bytes();
        if let Err(e) = check_payload(id, &task.input, limit) {
            return Err(SubmitError::InvalidTask {
                capability: task.capability,
                message: e.to_string(),
            });
        }
        // Taken atomically with the check: of two submissions of one id, one is refused.
        let Some(shard) = self.claim(id) else {
            return Err(SubmitError::InvalidTask {
                capability: task.capability,
                message: format!("task {id} is live already: a task has one owner at a time"),
            });
        };
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
        self.stats().submitted();
        let (tx, rx) = oneshot::channel();
        let fallback = TaskRecord::new(id, task.capability.clone(), correlation, now);
        let handle = TaskHandle { id, rx, fallback };
        Ok((
            handle,
            Accepted {
                task,
                id,
                contract,
                waiter: tx,
                shard,
            },
        ))
    }
}
