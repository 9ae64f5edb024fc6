//! What an MCP agent connects to: the `[backend]` of a `kind = "mcp"` manifest, kept apart
//! so that the session, the discovery and the agent all read one plain description of it.
//! It checks the description's shape (one transport, a readable token variable); it does
//! not connect.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use muster_command::{CommandConfig, CommandLimits};

/// How long connecting to a server (starting it, `initialize`, listing its tools) may take
/// when [`McpConfig::connect_timeout`] is not set.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How an MCP agent reaches its server: a program speaking MCP over stdio (`program`,
/// `args`, `cwd`, `env`, `env_pass`, `limits`, under the same least-privilege rules as a
/// command agent), or a streamable-HTTP endpoint (`url`, `headers`, and a bearer token read
/// from the environment variable `token_env`). Exactly one of `program` and `url`.
///
/// `tools` maps each capability to the tool it calls; the cast fills it from each
/// `[[capabilities]]` entry's `tool` (the capability's own name when it has none).
///
/// # Example
/// ```
/// use muster_mcp::McpConfig;
///
/// let c: McpConfig = serde_json::from_value(serde_json::json!({
///     "program": "mcp-server-time", "args": ["--local-timezone", "UTC"]
/// })).unwrap();
/// assert!(c.problems().is_empty());
/// let h: McpConfig = serde_json::from_value(serde_json::json!({
///     "url": "http://127.0.0.1:3001/mcp", "token_env": "SURELY_UNSET_TOOLS_TOKEN"
/// })).unwrap();
/// // The token's variable must be set where muster runs.
/// assert_eq!(h.problems()[0].0, "/token_env");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// The server program (stdio transport): a path, or a name looked up in `PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Its working directory (muster's own if unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Variables set for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables passed through from muster's environment, on top of
    /// [`muster_command::DEFAULT_ENV_PASS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_pass: Vec<String>,
    /// Resource limits for its process.
    #[serde(default, skip_serializing_if = "CommandLimits::is_none")]
    pub limits: CommandLimits,
    /// The server's streamable-HTTP endpoint, e.g. `http://127.0.0.1:3001/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// HTTP headers sent with every request (`url` only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The environment variable holding a bearer token, sent as `Authorization: Bearer
    /// <token>` (`url` only). The token itself never appears in a manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// How long starting the server and initialising the session may take (default 30 s).
    #[serde(
        default,
        with = "muster_core::util::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_timeout: Option<Duration>,
    /// Capability → the tool it calls (filled by the cast from `[[capabilities]]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, String>,
}

impl McpConfig {
    /// A stdio server run as `program args...`.
    pub fn stdio<I, S>(program: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        McpConfig {
            program: Some(program.into()),
            args: args.into_iter().map(Into::into).collect(),
            ..McpConfig::default()
        }
    }

    /// A streamable-HTTP server at `url`.
    pub fn http(url: impl Into<String>) -> Self {
        McpConfig {
            url: Some(url.into()),
            ..McpConfig::default()
        }
    }

    /// Maps `capability` to `tool`.
    pub fn with_tool(mut self, capability: &str, tool: &str) -> Self {
        self.tools.insert(capability.into(), tool.into());
        self
    }

    /// What is wrong with this description, as `(field under /backend, message)` pairs:
    /// both or neither of `program` and `url`, HTTP-only fields on a stdio server and the
    /// other way round, a `token_env` that is not set, a header that is not valid HTTP.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut p = |f: &str, m: String| out.push((f.to_string(), m));
        match (&self.program, &self.url) {
            (Some(_), Some(_)) => p(
                "/url",
                "give either `program` (a stdio server) or `url` (a streamable-HTTP server), not both".into(),
            ),
            (None, None) => p(
                "/program",
                "give `program` (a stdio server) or `url` (a streamable-HTTP server)".into(),
            ),
            (Some(prog), None) => {
                if prog.trim().is_empty() {
                    p("/program", "must not be empty".into());
                }
                for f in ["headers", "token_env"] {
                    let set = match f {
                        "headers" => !self.headers.is_empty(),
                        _ => self.token_env.is_some(),
                    };
                    if set {
                        p(&format!("/{f}"), "only for a `url` (streamable-HTTP) server".into());
                    }
                }
            }
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    p("/url", format!("expected an http:// or https:// URL, got \"{url}\""));
                }
                let stdio_only = [
                    ("args", !self.args.is_empty()),
                    ("cwd", self.cwd.is_some()),
                    ("env", !self.env.is_empty()),
                    ("env_pass", !self.env_pass.is_empty()),
                    ("limits", !self.limits.is_none()),
                ];
                for (f, set) in stdio_only {
                    if set {
                        p(&format!("/{f}"), "only for a `program` (stdio) server".into());
                    }
                }
                for (k, v) in &self.headers {
                    if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                        p(&format!("/headers/{k}"), "not a valid HTTP header name".into());
                    } else if http::HeaderValue::from_str(v).is_err() {
                        p(&format!("/headers/{k}"), "not a valid HTTP header value".into());
                    }
                }
                if let Some(var) = &self.token_env
                    && std::env::var_os(var).is_none()
                {
                    p(
                        "/token_env",
                        format!("the environment variable `{var}` (the bearer token) is not set"),
                    );
                }
            }
        }
        out
    }

    /// The program's description as a command agent's, for the process it runs in.
    pub(crate) fn command(&self) -> Option<CommandConfig> {
        let program = self.program.as_ref()?;
        let mut c = CommandConfig::new(program.clone())
            .with_args(self.args.iter().cloned())
            .with_env_pass(self.env_pass.iter().cloned())
            .with_limits(self.limits);
        c.env = self.env.clone();
        c.cwd = self.cwd.clone();
        Some(c)
    }

    /// Where the server is, for messages: the program or the URL.
    pub fn target(&self) -> String {
        match (&self.program, &self.url) {
            (Some(p), _) => format!("`{p}`"),
            (None, Some(u)) => u.clone(),
            (None, None) => "no server".into(),
        }
    }

    /// The connect timeout in effect.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    /// The tool a capability calls: its mapping, else the capability's own name.
    pub fn tool_for<'a>(&'a self, capability: &'a str) -> &'a str {
        self.tools
            .get(capability)
            .map(String::as_str)
            .unwrap_or(capability)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_transport_exactly() {
        let both = McpConfig {
            url: Some("http://x/mcp".into()),
            ..McpConfig::stdio("srv", ["a"])
        };
        assert_eq!(both.problems()[0].0, "/url");
        assert_eq!(McpConfig::default().problems()[0].0, "/program");
        let http = McpConfig {
            args: vec!["x".into()],
            ..McpConfig::http("ftp://x")
        };
        let fields: Vec<_> = http.problems().into_iter().map(|p| p.0).collect();
        assert_eq!(fields, ["/url", "/args"]);
    }

    #[test]
    fn a_token_variable_must_be_set_and_headers_valid() {
        let mut c = McpConfig::http("http://127.0.0.1:1/mcp");
        c.token_env = Some("MUSTER_MCP_TEST_SURELY_UNSET".into());
        c.headers.insert("bad header".into(), "v".into());
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.0).collect();
        assert_eq!(fields, ["/headers/bad header", "/token_env"]);
    }

    #[test]
    fn a_capability_calls_its_mapped_tool_or_its_own_name() {
        let c =
            McpConfig::stdio("srv", Vec::<String>::new()).with_tool("time.now", "get_current_time");
        assert_eq!(c.tool_for("time.now"), "get_current_time");
        assert_eq!(c.tool_for("git_log"), "git_log");
    }
}
