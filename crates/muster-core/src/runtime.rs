//! The runtime: the [`Muster`] handle users hold, its [`MusterBuilder`], and the
//! supervision tree that wires the layers below together.
//!
//! ```text
//! root (one_for_one) ── registry          discovery
//!                    ├─ router            routing
//!                    ├─ agents (one_for_one) ── <agent type> (its manifest's strategy) ── <agent>#<i>
//!                    └─ owners            one owner (state machine in the owner shard) per live task
//! ```
//!
//! Owns start-up, registration of agent types, submission of tasks and shutdown; each of
//! those is handed to the layer that owns it. The runtime runs on
//! [`RuntimeConfig::shards`] arbiters (threads; one by default when embedded): shard 0
//! holds the supervisors, the registry and the router; instance `i` of an agent type runs
//! on shard `i % n`, and a task's owner runs in the owner shard of the thread that
//! submitted it, so a task whose instance is on that shard stays on one thread from
//! submission to completion (docs/architecture.md, "Threads: shards"). From a plain
//! `#[tokio::main]` program the runtime starts its own threads and the handle talks to
//! them. Layers above (workflows, the cast, front ends) use the runtime only through the
//! public [`Muster`] handle.

pub mod builder;
pub mod config;
pub mod extensions;
pub mod muster;
mod tree;

pub use crate::agents::AgentDef;
pub use crate::delegation::{Stats, StatsSnapshot, SubmitError};
pub use builder::MusterBuilder;
pub use config::{RuntimeConfig, StartError};
pub use extensions::Extensions;
pub use muster::Muster;
