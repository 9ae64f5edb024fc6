//! # muster-core
//!
//! The in-process core of muster, a runtime in which every AI agent is a supervised actor:
//! **discovery** (a registry of agent instances and their capabilities), **messaging**
//! (typed envelopes checked against JSON Schema at every boundary, delivered or failed
//! with a reason) and **delegation** (one owner per task, fenced leases, reassignment and
//! escalation), on Erlang/OTP-style supervision, with an in-memory journal of every
//! handoff.
//!
//! This crate is what a Rust program embedding an agent swarm depends on. It has no HTTP
//! server or client, no NATS, no SQLite, no template engine, no CLI and no global
//! allocator. The `cel` feature adds CEL acceptance rules on capabilities. The `muster`
//! crate adds the integrations (SQLite journal, command, LLM and simulated agents,
//! workflows, manifests, the cluster, telemetry, the simulator and `muster serve`).
//!
//! # Example
//! ```no_run
//! use muster_core::{AgentDef, CapabilitySpec, Muster, Task};
//! use serde_json::json;
//!
//! #[actix::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let muster = Muster::builder()
//!         .schema("text", json!({"type": "object", "required": ["text"],
//!                                "properties": {"text": {"type": "string"}}}))
//!         .agent(AgentDef::function("shouter", |input, _ctx| async move {
//!                    Ok(json!({"text": input["text"].as_str().unwrap_or_default().to_uppercase()}))
//!                })
//!                .capability(CapabilitySpec::new("text.shout", "text", "text"))
//!                .replicas(2))
//!         .start()
//!         .await?;
//!     let outcome = muster.delegate(Task::new("text.shout", json!({"text": "hi"}))).await?;
//!     println!("{:?} by {:?}", outcome.output, outcome.owner());
//!     Ok(())
//! }
//! ```
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

// The modules are layers (bottom to top: util, clock, ids, conditions, shards, messaging,
// journal, supervision, agents, discovery, routing, delegation, runtime); docs/architecture.md
// says what each owns, and the layer check in tests/it/architecture_layers.rs checks that no
// module imports one above it.
pub mod agents;
pub mod clock;
#[cfg(feature = "cel")]
pub mod conditions;
pub mod delegation;
pub mod discovery;
pub mod ids;
pub mod journal;
pub mod messaging;
pub mod prelude;
pub mod routing;
pub mod runtime;
pub mod shards;
pub mod supervision;
pub mod util;

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
pub use journal::{Event, Journal, JournalConfig, JournalError, MemoryJournal, Record, Recorder};
pub use messaging::{
    CapabilitySpec, DeadLetter, DeliveryFailure, Envelope, FailureReason, Overlap, Pattern,
    Recipient, SchemaStore, Scope, ScopeError,
};
pub use runtime::{Muster, MusterBuilder, RuntimeConfig, StartError};
pub use supervision::{Exit, Restart, Strategy, Supervision};
