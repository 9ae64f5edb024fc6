//! Agents: the core's agent kinds ([`muster_core::agents`]: the `Agent` trait, function and
//! typed agents, instances and their supervisors) and the backends this crate adds:
//! [`command`] (external programs), [`llm`] (a model behind an OpenAI-compatible
//! endpoint, its output held to the capability's schema) and [`sim`] (simulated agents
//! acting out a fault model).

pub use muster_core::agents::*;

pub mod command;
pub mod llm;
pub mod sim;
