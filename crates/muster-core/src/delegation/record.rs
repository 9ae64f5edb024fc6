//! The delegation record: a task's state and its full ownership history.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::agents::Failure;
use crate::journal::UsageTotals;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for a lease (at submission, after a failed attempt, or for an agent).
    Pending,
    /// Leased to one agent under the current epoch.
    Leased,
    /// Terminal: an output met the contract.
    Completed,
    /// Terminal: policy exhausted; a gate or the dead-letter record holds it.
    Escalated,
    /// Terminal: cancelled.
    Cancelled,
}

impl TaskStatus {
    /// Whether the status is terminal.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Escalated | TaskStatus::Cancelled
        )
    }
}

/// How a lease ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum LeaseOutcome {
    /// Still running.
    Running,
    /// Its result was accepted.
    Completed,
    /// It failed.
    Failed {
        /// How.
        failure: Failure,
    },
    /// The task was cancelled while it ran.
    Cancelled,
}

/// One lease: one agent, one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// The agent instance.
    pub agent: Arc<str>,
    /// The fencing token.
    pub epoch: u64,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Unix ms.
    pub started_ms: u64,
    /// Unix ms.
    pub ended_ms: Option<u64>,
    /// How it ended.
    pub outcome: LeaseOutcome,
    /// The envelope that carried the task to the agent (the causation of whatever the
    /// task's output causes next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<Uuid>,
}

/// Why and where a task was escalated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// A gate name, or `dead_letter`.
    pub to: String,
    /// Why.
    pub reason: String,
}

/// A task's delegation record. When the task ends it is its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Task id.
    pub id: Uuid,
    /// Capability.
    pub capability: String,
    /// Correlation id.
    pub correlation: Uuid,
    /// State.
    pub status: TaskStatus,
    /// Every lease, in order.
    pub leases: Vec<Lease>,
    /// The accepted output (completed tasks): one value shared, not copied, by this
    /// record, the journal's `result_accepted` (or `task_reused`) and a workflow's
    /// `step_completed`.
    pub output: Option<Arc<Value>>,
    /// Where it went (escalated tasks).
    pub escalation: Option<Escalation>,
    /// Results rejected because their epoch was superseded.
    pub stale_rejected: u32,
    /// Unix ms.
    pub submitted_ms: u64,
    /// Unix ms.
    pub ended_ms: Option<u64>,
    /// The model tokens its attempts reported, summed as they ended (what a run's
    /// `[budget] tokens` counts; attempts a server reported nothing for are counted as
    /// unknown).
    #[serde(default, skip_serializing_if = "UsageTotals::is_empty")]
    pub usage: UsageTotals,
}

/// A task that ended without an accepted output (escalated or cancelled), as an error:
/// its record says how (the source of a sub-task's
/// [`DelegateError::Ended`](crate::agents::host::DelegateError::Ended)).
///
/// # Example
/// ```
/// use muster_core::delegation::{NoOutput, TaskRecord, TaskStatus};
///
/// let mut record = TaskRecord::new(uuid::Uuid::nil(), "code.test".into(), uuid::Uuid::nil(), 0);
/// record.status = TaskStatus::Cancelled;
/// assert!(NoOutput(record).to_string().ends_with("ended Cancelled"));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "task {} ended {:?}{}",
    .0.id,
    .0.status,
    .0.escalation.as_ref().map(|e| format!(": {}", e.reason)).unwrap_or_default()
)]
pub struct NoOutput(pub TaskRecord);

impl TaskRecord {
    /// The record of a task just submitted: pending, with no lease yet.
    pub fn new(id: Uuid, capability: String, correlation: Uuid, submitted_ms: u64) -> Self {
        TaskRecord {
            id,
            capability,
            correlation,
            status: TaskStatus::Pending,
            leases: Vec::new(),
            output: None,
            escalation: None,
            stale_rejected: 0,
            submitted_ms,
            ended_ms: None,
            usage: UsageTotals::default(),
        }
    }

    /// Whether it completed.
    pub fn is_completed(&self) -> bool {
        self.status == TaskStatus::Completed
    }

    /// The agent whose result was accepted.
    pub fn owner(&self) -> Option<&str> {
        self.leases
            .iter()
            .rev()
            .find(|l| l.outcome == LeaseOutcome::Completed)
            .map(|l| l.agent.as_ref())
    }

    /// A copy of the record without its payloads or history (cheap).
    pub(crate) fn clone_header(&self) -> TaskRecord {
        TaskRecord {
            id: self.id,
            capability: String::new(),
            correlation: self.correlation,
            status: self.status,
            leases: Vec::new(),
            output: None,
            escalation: None,
            stale_rejected: self.stale_rejected,
            submitted_ms: self.submitted_ms,
            ended_ms: self.ended_ms,
            usage: self.usage.clone(),
        }
    }

    /// The envelope of the lease whose result was accepted.
    pub fn accepted_envelope(&self) -> Option<Uuid> {
        self.leases
            .iter()
            .rev()
            .find(|l| l.outcome == LeaseOutcome::Completed)
            .and_then(|l| l.envelope)
    }

    /// The accepted output as a Rust value (`None` when the task did not complete).
    pub fn output_as<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Option<Result<T, serde_json::Error>> {
        self.output.as_deref().map(T::deserialize)
    }

    /// Leases granted.
    pub fn attempts(&self) -> u32 {
        self.leases.len() as u32
    }

    /// Leases that were taken over by another agent (attempts after the first).
    pub fn reassignments(&self) -> u32 {
        self.attempts().saturating_sub(1)
    }

    /// How many results were accepted: 1 for a completed task, 0 otherwise, by the record.
    pub fn accepted_results(&self) -> usize {
        self.leases
            .iter()
            .filter(|l| l.outcome == LeaseOutcome::Completed)
            .count()
    }

    /// Time from submission to the end, ms.
    pub fn duration_ms(&self) -> Option<u64> {
        self.ended_ms.map(|e| e.saturating_sub(self.submitted_ms))
    }
}
