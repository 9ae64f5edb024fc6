//! The messages the HTTP handlers send to the node (which lives on the runtime's thread),
//! and the node's answers.
//!
//! Handlers run in `Send` tasks; a workflow run's future does not (the engine runs on the
//! runtime's single thread), so everything that starts, decides or stops work goes through
//! these commands. They carry data only: no handler logic, no runtime handles.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::admission::Slot;
use muster_core::delegation::{SubmitError, Task};
use muster_workflow::Workflow;

/// A command for the node.
#[derive(Debug)]
pub enum Command {
    /// Runs won from a control node that left the cluster, to rebuild and resume.
    TakeOver(Box<muster_cluster::failover::Takeover>),
    /// Start a run of `workflow` (its input already checked against the workflow's
    /// schema) unless the node drives its bound of runs already; answers the run id.
    StartRun {
        /// The workflow.
        workflow: Arc<Workflow>,
        /// The run input.
        input: Value,
        /// The token that asked ([`Caller::id`](crate::Caller::id)): a `submitter` may
        /// cancel the runs it started.
        by: Option<usize>,
        /// Where the run id goes, or the bound that refused it.
        reply: oneshot::Sender<Result<Uuid, RunsFull>>,
    },
    /// Start a new run that retries a failed one from its failed step
    /// ([`RetryPlan`](muster_workflow::RetryPlan)), unless the node drives its bound of
    /// runs already or the failed run was retried already; answers the new run's id.
    RetryRun {
        /// The workflow (the failed run's).
        workflow: Arc<Workflow>,
        /// Where the retry starts and what it carries over.
        plan: Box<muster_workflow::RetryPlan>,
        /// The token that asked (it may cancel the retry, as a run it started).
        by: Option<usize>,
        /// [`Live::retries_ended`](crate::Live::retries_ended) before the plan was read.
        read_at: u64,
        /// Where the new run's id goes, or why it was refused.
        reply: oneshot::Sender<Result<Uuid, RetryRefused>>,
    },
    /// Submit a bare task; answers its id, or why it was refused.
    SubmitTask {
        /// The task.
        task: Box<Task>,
        /// The admission slot the task holds until it ends (given back at once if it is
        /// refused).
        slot: Option<Slot>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Uuid, SubmitError>>,
    },
    /// Resume an unfinished run of the journal (read after the node started to serve),
    /// giving its tasks back the scopes in `held` first.
    Resume {
        /// Its workflow.
        workflow: Arc<Workflow>,
        /// The run, rebuilt from its records.
        run: Box<muster_workflow::RecoveredRun>,
        /// The scopes its tasks held.
        held: Vec<(Uuid, muster_core::messaging::Scope)>,
    },
    /// Decide a gate where a run waits, exactly once.
    Decide {
        /// The run.
        run: Uuid,
        /// The gate.
        gate: String,
        /// Approve (true) or reject.
        approved: bool,
        /// Why (journaled with the decision).
        note: String,
        /// The name of the token that decides, journaled with the note (`by NAME: note`).
        by: Option<String>,
        /// How many more times to look again, 10 ms apart, for a run that has journaled
        /// `gate_waiting` but is not parked at the gate yet.
        retries: u32,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), DecideRefused>>,
    },
    /// Cancel a bare task (A2A `CancelTask`); answers whether it was live.
    CancelTask {
        /// The task.
        task: Uuid,
        /// Where the answer goes.
        reply: oneshot::Sender<bool>,
    },
    /// Cancel a run this node drives: stop it, cancel its tasks in flight, journal its end.
    CancelRun {
        /// The run.
        run: Uuid,
        /// Why.
        reason: String,
        /// The name of the token that cancels, journaled in the run's end reason.
        by: Option<String>,
        /// Cancel only if this token ([`Caller::id`](crate::Caller::id)) started the run
        /// (a `submitter`'s cancel); `None` cancels any run (an `operator`'s).
        only_if_started_by: Option<usize>,
        /// Where the answer goes.
        reply: oneshot::Sender<Cancelled>,
    },
}

/// A run refused because the node drives its bound of runs already.
///
/// # Example
/// ```
/// use muster_serve::protocol::RunsFull;
///
/// let full = RunsFull { in_flight: 2, max: 2 };
/// assert_eq!(full.in_flight, full.max);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunsFull {
    /// Runs in flight when it was refused.
    pub in_flight: usize,
    /// The bound (`--max-runs`).
    pub max: usize,
}

/// What a cancel came to.
///
/// # Example
/// ```
/// use muster_serve::protocol::Cancelled;
///
/// // A submitter's cancel of another token's run does nothing.
/// assert_ne!(Cancelled::NotStarter, Cancelled::Done);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The run was driven here and is cancelled.
    Done,
    /// This node does not drive the run (ended, unknown, or another node's).
    NotDriven,
    /// The run is driven here but was not started by the token that asked (a
    /// `submitter` cancels only its own runs); nothing was done.
    NotStarter,
}

/// Why a gate decision was refused by the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecideRefused {
    /// Decided already (by this node, since the run started here): the decision standing.
    AlreadyDecided {
        /// Whether it was approved.
        approved: bool,
    },
    /// No run waits at that gate in this node.
    NotWaiting,
}

/// Why the node refused a retry.
///
/// # Example
/// ```
/// use muster_serve::protocol::{RetryRefused, RunsFull};
///
/// let r = RetryRefused::Full(RunsFull { in_flight: 2, max: 2 });
/// assert_ne!(r, RetryRefused::Retried(uuid::Uuid::nil()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryRefused {
    /// The node drives its bound of runs already.
    Full(RunsFull),
    /// The run was retried already (by this process), as this run.
    Retried(Uuid),
    /// A retry ended since the plan was read: read the journal again (it may say the
    /// run was retried).
    ReadAgain,
}
