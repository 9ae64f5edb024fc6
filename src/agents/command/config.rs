//! What a command agent runs and how: the `command` section of an agent manifest, kept apart
//! so that the process, oneshot and stdio code all read one plain description of it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a command agent runs its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandMode {
    /// One process per task: input JSON on stdin, output JSON on stdout, exit 0.
    #[default]
    Oneshot,
    /// One long-lived process per instance, speaking JSON lines on stdin/stdout.
    Stdio,
}

/// How to run a command agent's program (the `command` section of an agent manifest).
///
/// # Example
/// ```
/// use muster::agents::command::{CommandConfig, CommandMode};
///
/// # fn main() -> Result<(), serde_json::Error> {
/// let config: CommandConfig = serde_json::from_str(
///     r#"{"program": "python3", "args": ["agent.py"], "mode": "stdio", "env": {"LOG": "1"}}"#,
/// )?;
/// assert_eq!(config, CommandConfig::new("python3")
///     .with_args(["agent.py"])
///     .with_mode(CommandMode::Stdio)
///     .with_env("LOG", "1"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The program to run: a path, or a name looked up in `PATH`.
    pub program: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// One process per task, or one per instance.
    #[serde(default)]
    pub mode: CommandMode,
    /// Its working directory (the runtime's own if unset).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables (on top of the runtime's environment and `MUSTER_*`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl CommandConfig {
    /// A oneshot config running `program` with no arguments.
    pub fn new(program: impl Into<String>) -> Self {
        CommandConfig {
            program: program.into(),
            args: Vec::new(),
            mode: CommandMode::Oneshot,
            cwd: None,
            env: BTreeMap::new(),
        }
    }

    /// Appends arguments.
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the mode.
    pub fn with_mode(mut self, mode: CommandMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the working directory.
    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn config_deserializes_with_defaults_and_rejects_unknown_fields() {
        let c: CommandConfig = toml::from_str("program = \"python3\"").unwrap();
        assert_eq!(c, CommandConfig::new("python3"));
        assert_eq!(c.mode, CommandMode::Oneshot);
        let c: CommandConfig = toml::from_str(
            "program = \"a\"\nargs = [\"b\"]\nmode = \"stdio\"\ncwd = \"/tmp\"\n[env]\nK = \"v\"",
        )
        .unwrap();
        assert_eq!(
            c,
            CommandConfig::new("a")
                .with_args(["b"])
                .with_mode(CommandMode::Stdio)
                .with_cwd("/tmp")
                .with_env("K", "v")
        );
        assert!(
            serde_json::from_value::<CommandConfig>(json!({"program": "a", "nope": 1})).is_err()
        );
        assert!(
            serde_json::from_value::<CommandConfig>(json!({"program": "a", "mode": "http"}))
                .is_err()
        );
    }
}
