//! Workflows: steps with contracts and mechanical transitions, on top of delegation.
//!
//! Owns the workflow file model ([`Workflow`], parsed and compiled from TOML), the static
//! checks behind `muster check` ([`check`](mod@check)), the run engine ([`engine`], reached
//! through [`WorkflowExt`] on a [`Muster`](muster_core::Muster)), human [`gates`], what a run
//! produces ([`outcome`]), its graph as data ([`shape`]) and crash recovery ([`recovery`]:
//! a run rebuilt from the journal; [`resume`]: every unfinished run of a journal
//! finished; [`retry`]: a failed run retried from its failed step as a new run). A run is a state machine driven by delegation outcomes. Every task step is
//! a delegated task (so G1-G4 hold per step); transitions are CEL conditions, evaluated
//! mechanically; every back-edge has a bound; gates wait for a human decision. It must
//! not talk to agents directly, and uses the runtime only through its public handle.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod check;
pub mod definition;
pub mod engine;
pub mod gates;
pub mod inspect;
pub mod outcome;
pub mod recovery;
pub mod resume;
pub mod retry;
pub mod shape;

pub use check::{Finding, check};
pub use definition::{Next, Rule, ScopeMappingError, Step, Workflow, WorkflowError};
pub use engine::{RunError, RunOptions, WorkflowExt};
pub use gates::{ApproveError, Decision, Gates};
pub use outcome::{
    AttemptFailure, RunOutcome, RunStatus, StepError, StepEvent, StepRecord, StepSummary,
    verdict_of,
};
pub use recovery::{RecoveredRun, StepProgress};
pub use resume::Unfinished;
pub use retry::{NotRetryable, RetryPlan};
