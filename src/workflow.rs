//! Workflows: steps with contracts and mechanical transitions, on top of delegation.
//!
//! Owns the workflow file model ([`Workflow`], parsed and compiled from TOML), the static
//! checks behind `muster check` ([`check`](mod@check)), the run engine ([`engine`]) and crash
//! recovery ([`recovery`]: a run rebuilt from the journal and finished): a run is a
//! state machine driven by delegation outcomes. Every task step is a delegated task (so
//! G1-G4 hold per step); transitions are CEL conditions, evaluated mechanically; every
//! back-edge has a bound; gates wait for a human decision. It must not talk to agents
//! directly: everything goes through delegation.

pub mod check;
pub mod definition;
pub mod engine;
pub mod recovery;

pub use check::{check, Finding};
pub use definition::{Next, Rule, Step, Workflow, WorkflowError};
pub use engine::{Decision, RunOutcome, RunStatus, StepEvent, StepSummary};
pub use recovery::{RecoveredRun, StepProgress};
