//! What a command agent runs and how: the `command` section of an agent manifest, kept apart
//! so that the process, oneshot and stdio code all read one plain description of it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The variables an agent process gets from muster's own environment when its config names
/// no others (see [`CommandConfig::env_pass`]): enough to find programs, a home, a locale
/// and a temporary directory, and nothing that tends to hold a secret. Muster sets the
/// `MUSTER_*` task variables itself; it does not pass on its own `MUSTER_*` variables.
pub const DEFAULT_ENV_PASS: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER"];

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
/// The program gets a least-privilege environment: the variables in [`DEFAULT_ENV_PASS`]
/// and [`env_pass`](Self::env_pass) (those set in muster's environment), then
/// [`env`](Self::env), then the `MUSTER_*` task variables. Nothing else of muster's
/// environment reaches it.
///
/// # Example
/// ```
/// use muster_command::{CommandConfig, CommandMode};
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
    /// Variables set for it, by name (they override passed-through ones; the `MUSTER_*`
    /// task variables override them).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of variables passed through from muster's environment (when set there), on
    /// top of [`DEFAULT_ENV_PASS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_pass: Vec<String>,
    /// Resource limits for its process (none by default).
    #[serde(default, skip_serializing_if = "CommandLimits::is_none")]
    pub limits: CommandLimits,
}

/// Resource limits for an agent process, applied with `setrlimit` in the child before the
/// program starts (Unix; ignored elsewhere). Each limit is per process and is inherited by
/// what the program starts. A limit above muster's own hard limit is lowered to it.
///
/// # Example
/// ```
/// use muster_command::CommandLimits;
///
/// # fn main() -> Result<(), toml::de::Error> {
/// let limits: CommandLimits = toml::from_str("cpu_seconds = 60\nmemory_bytes = 2147483648")?;
/// assert_eq!(limits, CommandLimits {
///     cpu_seconds: Some(60),
///     memory_bytes: Some(2 << 30),
///     open_files: None,
/// });
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandLimits {
    /// CPU time, in seconds (`RLIMIT_CPU`). Past it the process gets SIGXCPU, and SIGKILL
    /// a second later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<u64>,
    /// Address space, in bytes (`RLIMIT_AS`): virtual memory, not resident memory, so give
    /// runtimes that reserve a lot up front (the JVM, Go, Node) room for that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
}

impl CommandLimits {
    /// Whether no limit is set.
    pub fn is_none(&self) -> bool {
        *self == CommandLimits::default()
    }
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
            env_pass: Vec::new(),
            limits: CommandLimits::default(),
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
    ///
    /// # Example
    /// ```
    /// use muster_command::CommandConfig;
    ///
    /// let config = CommandConfig::new("./agent").with_cwd("agents/reviewer");
    /// assert_eq!(config.cwd.as_deref(), Some(std::path::Path::new("agents/reviewer")));
    /// ```
    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Sets an environment variable for the program.
    ///
    /// # Example
    /// ```
    /// use muster_command::CommandConfig;
    ///
    /// let config = CommandConfig::new("python3").with_env("LOG_LEVEL", "debug");
    /// assert_eq!(config.env["LOG_LEVEL"], "debug");
    /// ```
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Passes the named variables through from muster's environment (when set there), on
    /// top of [`DEFAULT_ENV_PASS`].
    ///
    /// # Example
    /// ```
    /// use muster_command::CommandConfig;
    ///
    /// let config = CommandConfig::new("python3").with_env_pass(["OPENAI_API_KEY"]);
    /// assert_eq!(config.env_pass, ["OPENAI_API_KEY"]);
    /// ```
    pub fn with_env_pass<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.env_pass.extend(names.into_iter().map(Into::into));
        self
    }

    /// Sets the resource limits of its process.
    ///
    /// # Example
    /// ```
    /// use muster_command::{CommandConfig, CommandLimits};
    ///
    /// let config = CommandConfig::new("python3").with_limits(CommandLimits {
    ///     cpu_seconds: Some(60),
    ///     memory_bytes: Some(2 << 30),
    ///     open_files: Some(256),
    /// });
    /// assert_eq!(config.limits.open_files, Some(256));
    /// ```
    pub fn with_limits(mut self, limits: CommandLimits) -> Self {
        self.limits = limits;
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

    #[test]
    fn config_reads_env_pass_and_limits() {
        let c: CommandConfig = toml::from_str(
            "program = \"a\"\nenv_pass = [\"TOKEN\"]\n[limits]\ncpu_seconds = 5\nopen_files = 64",
        )
        .unwrap();
        assert_eq!(
            c,
            CommandConfig::new("a")
                .with_env_pass(["TOKEN"])
                .with_limits(CommandLimits {
                    cpu_seconds: Some(5),
                    memory_bytes: None,
                    open_files: Some(64),
                })
        );
        assert!(toml::from_str::<CommandConfig>("program = \"a\"\n[limits]\nnice = 1").is_err());
        // A config without the new fields writes none of them.
        let json = serde_json::to_value(CommandConfig::new("a")).unwrap();
        assert!(
            json.get("env_pass").is_none() && json.get("limits").is_none(),
            "{json}"
        );
        assert!(CommandLimits::default().is_none());
    }
}
