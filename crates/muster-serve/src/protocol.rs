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

use muster_core::delegation::{SubmitError, Task};
use muster_workflow::Workflow;

/// A command for the node.
#[derive(Debug)]
pub enum Command {
    /// Runs won from a control node that left the cluster, to rebuild and resume.
    TakeOver(Box<muster_cluster::failover::Takeover>),
    /// Start a run of `workflow` (its input already checked against the workflow's
    /// schema); answers the run id.
    StartRun {
        /// The workflow.
        workflow: Arc<Workflow>,
        /// The run input.
        input: Value,
        /// Where the run id goes.
        reply: oneshot::Sender<Uuid>,
    },
    /// Submit a bare task; answers its id, or why it was refused.
    SubmitTask {
        /// The task.
        task: Box<Task>,
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
        /// How many more times to look again, 10 ms apart, for a run that has journaled
        /// `gate_waiting` but is not parked at the gate yet.
        retries: u32,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), DecideRefused>>,
    },
    /// Cancel a run this node drives: stop it, cancel its tasks in flight, journal its end.
    CancelRun {
        /// The run.
        run: Uuid,
        /// Why.
        reason: String,
        /// Where the answer goes: whether the node was driving the run.
        reply: oneshot::Sender<bool>,
    },
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
