#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

// The modules are layers (bottom to top: util, clock, ids, conditions, shards, messaging, journal,
// supervision, agents, discovery, routing, delegation, runtime, workflow, cast, telemetry, scenario,
// then the front ends bench, serve and cli); docs/architecture.md says what each owns, and
// `tests/architecture_layers.rs` checks that no module imports one above it.
pub mod agents;
pub mod cast;
pub mod clock;
pub mod cluster;
pub mod conditions;
pub mod delegation;
pub mod discovery;
pub mod ids;
pub mod journal;
pub mod messaging;
pub mod routing;
pub mod runtime;
pub mod scenario;
pub mod serve;
pub mod shards;
pub mod supervision;
pub mod telemetry;
mod util;
pub mod workflow;
// Front ends: linked by the `muster` binary, the benches and the CLI tests; not a stable
// library API.
#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub mod cli;

pub use agents::{
    Agent, AgentDef, AgentError, AgentFactory, AgentLink, AgentState, Failure, FnAgent, TaskContext,
};
pub use conditions::{Condition, ConditionError};
pub use delegation::{
    Backoff, Escalation, Exhausted, Lease, LeaseOutcome, Outcome, StatsSnapshot, SubmitError, Task,
    TaskHandle, TaskRecord, TaskStatus,
};
pub use discovery::{AgentInfo, RegistryEvent};
pub use journal::{
    Durability, Event, Journal, JournalConfig, JournalError, MemoryJournal, Record, Recorder,
    SqliteJournal,
};
pub use messaging::{
    CapabilitySpec, DeadLetter, DeliveryFailure, Envelope, FailureReason, Overlap, Pattern,
    Recipient, SchemaStore, Scope, ScopeError,
};
pub use runtime::{Muster, MusterBuilder, RuntimeConfig, StartError};
pub use supervision::{Exit, Restart, Strategy, Supervision};
pub use workflow::WorkflowExt;
