#![doc = include_str!("../../../README.md")]
#![warn(missing_docs)]

// This crate is muster-core plus its integrations. The core's modules are re-exported
// under their own names, so `muster::X` and `muster_core::X` are one item. The
// integrations' modules are layers above the core's (bottom to top: workflow, cast,
// cluster, telemetry, scenario, bench, serve); docs/architecture.md says what each owns,
// and the layer check in tests/it/architecture_layers.rs checks that no module imports one
// above it.
pub(crate) use muster_core::util;
pub use muster_core::{
    clock, conditions, delegation, discovery, ids, messaging, routing, runtime, shards, supervision,
};

pub mod agents;
pub mod cast;
pub mod cluster;
pub mod journal;
pub mod scenario;
pub mod serve;
pub mod telemetry;
pub mod workflow;
// Front end: the benchmark harness, linked by the `muster` binary and the benches; not a
// stable library API.
#[doc(hidden)]
pub mod bench;

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
