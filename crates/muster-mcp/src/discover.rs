//! The tools a server offers, listed before any agent starts: the cast reads them to take
//! capabilities' omitted schemas from the tools' and to check that every mapped tool
//! exists, and `muster agents --json` shows them. It connects once, lists, and closes; it
//! must not keep a session or a process.

use serde::Serialize;
use serde_json::Value;

use super::config::McpConfig;
use super::session::Session;

/// One tool a server offers, as `tools/list` described it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolInfo {
    /// The tool's name.
    pub name: String,
    /// What it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its `inputSchema`.
    pub input_schema: Value,
    /// Its `outputSchema`, when it declares one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
}

/// Starts (or reaches) the server of `config`, initialises a session, lists every tool
/// (following pagination) and closes the session, killing the process it started. Blocks
/// the calling thread (the work runs on a thread and runtime of its own), for at most
/// twice `config.connect_timeout()`. `agent` names the process (`MUSTER_AGENT=<agent>#tools`).
///
/// # Example
/// ```no_run
/// use muster_mcp::{list_tools, McpConfig};
///
/// let tools = list_tools("time", &McpConfig::stdio("mcp-server-time", Vec::<String>::new()))?;
/// assert!(tools.iter().any(|t| t.name == "get_current_time"));
/// # Ok::<(), String>(())
/// ```
pub fn list_tools(agent: &str, config: &McpConfig) -> Result<Vec<ToolInfo>, String> {
    let config = config.clone();
    let instance = format!("{agent}#tools");
    let worker = std::thread::Builder::new()
        .name("muster-mcp-tools".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime to list tools: {e}"))?;
            runtime.block_on(async move {
                let session = Session::connect(&instance, &config).await?;
                let listed =
                    tokio::time::timeout(config.connect_timeout(), session.peer.list_all_tools())
                        .await;
                session.close();
                let tools = match listed {
                    Ok(Ok(tools)) => tools,
                    Ok(Err(e)) => {
                        return Err(format!(
                            "MCP server {}: tools/list failed: {e}",
                            config.target()
                        ));
                    }
                    Err(_) => {
                        return Err(format!(
                            "MCP server {}: no answer to tools/list",
                            config.target()
                        ));
                    }
                };
                Ok(tools
                    .into_iter()
                    .map(|t| ToolInfo {
                        name: t.name.to_string(),
                        description: t.description.map(|d| d.to_string()),
                        input_schema: Value::Object((*t.input_schema).clone()),
                        output_schema: t.output_schema.map(|s| Value::Object((*s).clone())),
                    })
                    .collect())
            })
        })
        .map_err(|e| format!("cannot start a thread to list tools: {e}"))?;
    worker
        .join()
        .map_err(|_| "listing the tools panicked".to_string())?
}
