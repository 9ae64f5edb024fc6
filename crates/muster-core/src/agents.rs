//! Agents: the workers, and the kinds of backend they run on.
//!
//! Owns the [`Agent`] trait (one trait for every kind), the [`AgentDef`] of an agent type,
//! the [`AgentInstance`](instance::AgentInstance) actor that runs one instance's work so
//! that a panic, an error or an overrun becomes a structured [`Failure`] (never a silently
//! dead actor), its [`protocol`] (the messages other layers send it and the report every
//! attempt ends in), the [`InstanceHandle`] the rest of the runtime holds of an instance,
//! the supervisor of one agent type's instances ([`group`]), and the in-process backends
//! [`function`] and [`typed`] (Rust closures). The other backends are crates of their own
//! that implement the same trait: `muster-command` (external programs), `muster-sim`
//! (simulated agents acting out a fault model) and `muster-llm` (a model behind an
//! OpenAI-compatible chat-completions endpoint, its output held to the capability's
//! schema). What the runtime lends an agent type at registration (shared services,
//! delegation of sub-tasks) is an [`AgentHost`]. It does not choose who gets work
//! (discovery and delegation do) and does not decide on restarts (supervision does): an
//! instance reports its presence to a [`Directory`] it is given, and knows no registry.

pub mod agent;
pub mod def;
pub mod effects;
pub mod function;
pub mod group;
pub mod handle;
pub mod host;
pub mod instance;
pub mod presence;
pub mod protocol;
pub mod typed;
pub mod workspace;

pub use agent::{Agent, AgentError, AgentFactory, AgentLink, Failure, TaskContext};
pub use def::AgentDef;
pub use effects::{EffectEntry, EffectError, EffectState, Ledger};
pub use function::FnAgent;
pub(crate) use handle::LoadWatch;
pub use handle::{InstanceHandle, Mailbox, MailboxLayer};
pub use host::{AgentHost, DelegateError, SubTask};
pub use presence::{Directory, Presence};
pub use protocol::{AgentState, Assign, AttemptReport, Cancel, Kill, ReplyTo, Shutdown};
