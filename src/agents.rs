//! Agents: the workers, and the kinds of backend they run on.
//!
//! Owns the [`Agent`] trait (one trait for every kind), the [`AgentInstance`] actor that runs
//! one instance's work so that a panic, an error or an overrun becomes a structured
//! [`Failure`] (never a silently dead actor), and the shipped backends: [`function`] (Rust
//! closures) and [`command`] (external programs). It does not choose who gets work
//! (discovery and delegation do) and does not restart anything (supervision does).

pub mod agent;
pub mod command;
pub mod function;
pub mod instance;
pub mod typed;

pub use agent::{Agent, AgentError, AgentFactory, AgentLink, Failure, TaskContext};
pub use function::FnAgent;
pub use instance::{AgentInstance, AgentState, Assign, AttemptReport, ReplyTo};
