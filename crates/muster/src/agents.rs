//! Agents: the core's agent kinds ([`muster_core::agents`]: the `Agent` trait, function and
//! typed agents, instances and their supervisors) and, behind their features, the backends
//! of their own crates: `command` (external programs, `muster-command`), `llm` (a model
//! behind an OpenAI-compatible endpoint, `muster-llm`), `mcp` (an MCP server's tools,
//! `muster-mcp`), `a2a` (a remote A2A agent's skills, `muster-a2a`) and `sim` (simulated agents acting out a fault model, `muster-sim`).

pub use muster_core::agents::*;

#[cfg(feature = "a2a")]
pub use muster_a2a as a2a;
#[cfg(feature = "command")]
pub use muster_command as command;
#[cfg(feature = "llm")]
pub use muster_llm as llm;
#[cfg(feature = "mcp")]
pub use muster_mcp as mcp;
#[cfg(feature = "sim")]
pub use muster_sim as sim;
