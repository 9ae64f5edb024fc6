#![doc = include_str!("../../../README.md")]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

// A facade: muster-core's modules under their own names, and each integration crate,
// behind the feature of its name, at the path it has always had (`muster::workflow`,
// `muster::journal::SqliteJournal`, `muster::agents::command` ...). It holds no logic.
#[cfg(feature = "cel")]
pub use muster_core::conditions;
pub use muster_core::{
    clock, delegation, discovery, ids, messaging, routing, runtime, shards, supervision,
};

pub mod agents;
pub mod journal;
pub mod prelude;

/// The coordination benchmark behind `muster bench` (workloads W1–W5 and the peers).
#[cfg(feature = "bench")]
pub use muster_bench as bench;
#[cfg(feature = "cast")]
pub use muster_cast as cast;
#[cfg(feature = "cluster")]
pub use muster_cluster as cluster;
#[cfg(feature = "scenario")]
pub use muster_scenario as scenario;
#[cfg(feature = "serve")]
pub use muster_serve as serve;
#[cfg(feature = "telemetry")]
pub use muster_telemetry as telemetry;
#[cfg(feature = "workflow")]
pub use muster_workflow as workflow;

pub use agents::{
    Agent, AgentDef, AgentError, AgentFactory, AgentLink, AgentState, Failure, FnAgent, TaskContext,
};
#[cfg(feature = "cel")]
pub use conditions::{Condition, ConditionError};
pub use delegation::{
    Backoff, Escalation, Exhausted, Lease, LeaseOutcome, StatsSnapshot, SubmitError, Task,
    TaskHandle, TaskRecord, TaskStatus,
};
pub use discovery::{AgentInfo, RegistryEvent};
#[cfg(feature = "sqlite")]
pub use journal::{Durability, SqliteJournal};
pub use journal::{Event, Journal, JournalConfig, JournalError, MemoryJournal, Record, Recorder};
pub use messaging::{
    CapabilitySpec, DeadLetter, DeliveryFailure, Envelope, FailureReason, Overlap, Pattern,
    Recipient, SchemaStore, Scope, ScopeError,
};
pub use runtime::{Muster, MusterBuilder, RuntimeConfig, StartError};
pub use supervision::{Exit, Restart, Strategy, Supervision};
#[cfg(feature = "workflow")]
pub use workflow::WorkflowExt;
