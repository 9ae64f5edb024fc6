//! MCP servers as agents: every tool of a Model Context Protocol server can serve a
//! capability, with the capability's contract, a fenced lease, supervision and a journal
//! record, like any other agent.
//!
//! Owns the [`McpAgent`] backend and its [`McpConfig`] (`[backend] kind = "mcp"` in a
//! manifest), built on `rmcp`, the official Rust SDK:
//!
//! - each instance holds **one session** to its server, opened by [`Agent::start`]: a
//!   program speaking MCP over stdio (started as a command agent's program is: the same
//!   least-privilege environment, limits, process group and agent shim), or a
//!   streamable-HTTP endpoint (`url`, `headers`, a bearer token from an environment
//!   variable);
//! - each attempt is **one `tools/call`** of the tool its capability maps to
//!   ([`McpConfig::tools`]), with the task's input as the arguments;
//! - the output is the result's `structuredContent`, or (for a tool that declares no output
//!   schema) the generic document of [`content_schema`]; `isError` and JSON-RPC errors are
//!   attempt failures with the tool's text;
//! - progress notifications renew the attempt's heartbeat; a cancelled or abandoned
//!   attempt sends `notifications/cancelled`;
//! - a server that exits or a session that drops ends the attempts in flight `agent_gone`
//!   and the instance, which its supervisor restarts with a new session.
//!
//! [`list_tools`] lists a server's tools ahead of any agent, so that the cast can take a
//! capability's omitted schemas from its tool's (registered under [`input_schema_name`]
//! and [`output_schema_name`]). docs/mcp.md is the user's guide.
//!
//! It must not judge outputs (the owner checks contracts), retry or restart: the layers
//! above do. Nothing of it is linked into `muster-core`.
//!
//! Layout: `config` (what to reach) ← `session` (one initialised session, progress
//! routing, its end) ← `discover` (tools ahead of time) and `agent` (the [`Agent`] impl);
//! `schema` (contract names and outputs) stands alone.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod agent;
mod config;
mod discover;
mod schema;
mod session;

use std::sync::Arc;

pub use agent::McpAgent;
pub use config::{DEFAULT_CONNECT_TIMEOUT, McpConfig};
pub use discover::{ToolInfo, list_tools};
pub use schema::{CONTENT_SCHEMA, content_schema, input_schema_name, output_schema_name};

use muster_core::agents::agent::{Agent, AgentFactory};

/// Makes one [`McpAgent`] per instance (and per restart, so a restarted instance opens a
/// new session).
///
/// # Example
/// ```
/// use muster_core::agents::AgentFactory;
/// use muster_mcp::{McpConfig, McpFactory};
///
/// let factory = McpFactory::new(McpConfig::stdio("mcp-server-time", Vec::<String>::new()));
/// let _agent = factory.create("time#0");
/// ```
#[derive(Debug, Clone)]
pub struct McpFactory(Arc<McpConfig>);

impl McpFactory {
    /// A factory for agents reaching the server of `config`.
    pub fn new(config: McpConfig) -> Self {
        McpFactory(Arc::new(config))
    }
}

impl AgentFactory for McpFactory {
    fn create(&self, instance: &str) -> Box<dyn Agent> {
        Box::new(McpAgent::new(instance, (*self.0).clone()))
    }
}
