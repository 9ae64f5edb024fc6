#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod agents;
pub mod bench;
pub mod cast;
pub mod cli;
pub mod clock;
pub mod conditions;
pub mod delegation;
pub mod discovery;
pub mod ids;
pub mod journal;
pub mod messaging;
pub mod runtime;
pub mod sim;
pub mod supervision;
mod util;
pub mod workflow;

pub use agents::{
    Agent, AgentError, AgentFactory, AgentLink, AgentState, Failure, FnAgent, TaskContext,
};
pub use conditions::{Condition, ConditionError};
pub use delegation::{
    Backoff, Escalation, Exhausted, Lease, LeaseOutcome, Outcome, Task, TaskHandle, TaskRecord,
    TaskStatus,
};
pub use discovery::{AgentInfo, CapabilitySpec, RegistryEvent};
pub use journal::{
    Durability, Event, Journal, JournalConfig, JournalError, MemoryJournal, Record, SqliteJournal,
};
pub use messaging::{DeadLetter, DeliveryFailure, Envelope, FailureReason, Recipient, SchemaStore};
pub use runtime::{
    AgentDef, Muster, MusterBuilder, RuntimeConfig, StartError, StatsSnapshot, SubmitError,
};
pub use supervision::{Exit, Restart, Strategy, Supervision};
