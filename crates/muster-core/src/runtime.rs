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
//! those is handed to the layer that owns it. All actors live on one arbiter (thread): a
//! task stays on it from submission to completion. From a plain `#[tokio::main]` program
//! the runtime starts its own thread and the handle talks to it. Layers above (workflows,
//! the cast, front ends) use the runtime only through the public [`Muster`] handle.

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
