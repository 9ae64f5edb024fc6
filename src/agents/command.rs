//! Command agents: an external program is an agent (placeholder; replaced by the backend).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Command mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandMode {
    /// One process per task.
    #[default]
    Oneshot,
    /// One long-lived process per instance.
    Stdio,
}

/// Command config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Program.
    pub program: String,
    /// Args.
    #[serde(default)]
    pub args: Vec<String>,
    /// Mode.
    #[serde(default)]
    pub mode: CommandMode,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<std::path::PathBuf>,
    /// Env.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Factory.
pub struct CommandFactory(pub CommandConfig);

impl crate::agents::AgentFactory for CommandFactory {
    fn create(&self, _instance: &str) -> Box<dyn crate::agents::Agent> {
        Box::new(crate::agents::FnAgent::new(|_input, _ctx| async move {
            Err(crate::agents::AgentError::new("command backend pending"))
        }))
    }
}
