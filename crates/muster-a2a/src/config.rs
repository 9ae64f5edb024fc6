//! What an A2A agent reaches: the `[backend]` of a `kind = "a2a"` manifest. It checks the
//! description's shape (an http(s) card URL, valid headers, a readable token variable);
//! it does not connect.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long fetching the card (and each JSON-RPC request) may take when
/// [`A2aConfig::connect_timeout`] is not set.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a running remote task is read (`GetTask`) when [`A2aConfig::poll`] is not
/// set.
pub const DEFAULT_POLL: Duration = Duration::from_millis(200);

/// How an A2A agent reaches its remote: the URL of the remote's agent card, HTTP headers,
/// and a bearer token read from the environment variable `token_env`.
///
/// `skills` maps each capability to the remote skill it asks for; the cast fills it from
/// each `[[capabilities]]` entry's `skill` (the capability's own name when it has none).
///
/// # Example
/// ```
/// use muster_a2a::A2aConfig;
///
/// let c: A2aConfig = serde_json::from_value(serde_json::json!({
///     "card": "http://127.0.0.1:9999/.well-known/agent-card.json"
/// })).unwrap();
/// assert!(c.problems().is_empty());
/// let bad = A2aConfig::new("ftp://x");
/// assert_eq!(bad.problems()[0].0, "/card");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct A2aConfig {
    /// The remote's agent card, e.g. `http://127.0.0.1:9999/.well-known/agent-card.json`.
    pub card: String,
    /// HTTP headers sent with every request (card and JSON-RPC).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The environment variable holding a bearer token, sent as `Authorization: Bearer
    /// <token>`. The token itself never appears in a manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// How long fetching the card, and each request, may take (default 30 s).
    #[serde(
        default,
        with = "muster_core::util::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_timeout: Option<Duration>,
    /// How often a running remote task is read (default 200 ms).
    #[serde(
        default,
        with = "muster_core::util::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub poll: Option<Duration>,
    /// Capability → the remote skill it asks for (filled by the cast from
    /// `[[capabilities]]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skills: BTreeMap<String, String>,
}

impl A2aConfig {
    /// A remote whose card is at `card`.
    pub fn new(card: impl Into<String>) -> Self {
        A2aConfig {
            card: card.into(),
            ..A2aConfig::default()
        }
    }

    /// Maps `capability` to the remote's `skill`.
    pub fn with_skill(mut self, capability: &str, skill: &str) -> Self {
        self.skills.insert(capability.into(), skill.into());
        self
    }

    /// What is wrong with this description, as `(field under /backend, message)` pairs: a
    /// card URL that is not http(s), a header that is not valid HTTP, a `token_env` that is
    /// not set.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(self.card.starts_with("http://") || self.card.starts_with("https://")) {
            out.push((
                "/card".to_string(),
                format!(
                    "expected the http:// or https:// URL of the remote's agent card, got \"{}\"",
                    muster_core::util::bounded_text(&self.card)
                ),
            ));
        } else if reqwest::Url::parse(&self.card).is_err() {
            out.push((
                "/card".to_string(),
                format!(
                    "\"{}\" is not a valid URL",
                    muster_core::util::bounded_text(&self.card)
                ),
            ));
        }
        for (k, v) in &self.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                out.push((
                    format!("/headers/{k}"),
                    "not a valid HTTP header name".into(),
                ));
            } else if http::HeaderValue::from_str(v).is_err() {
                out.push((
                    format!("/headers/{k}"),
                    "not a valid HTTP header value".into(),
                ));
            }
        }
        if let Some(var) = &self.token_env
            && std::env::var_os(var).is_none()
        {
            out.push((
                "/token_env".to_string(),
                format!("the environment variable `{var}` (the bearer token) is not set"),
            ));
        }
        out
    }

    /// The connect timeout in effect.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    /// The poll interval in effect.
    pub fn poll(&self) -> Duration {
        self.poll.unwrap_or(DEFAULT_POLL)
    }

    /// The skill a capability asks for: its mapping, else the capability's own name.
    pub fn skill_for<'a>(&'a self, capability: &'a str) -> &'a str {
        self.skills
            .get(capability)
            .map(String::as_str)
            .unwrap_or(capability)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_the_token_variable_are_checked() {
        let mut c = A2aConfig::new("http://127.0.0.1:1/.well-known/agent-card.json");
        c.token_env = Some("MUSTER_A2A_TEST_SURELY_UNSET".into());
        c.headers.insert("bad header".into(), "v".into());
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.0).collect();
        assert_eq!(fields, ["/headers/bad header", "/token_env"]);
    }

    #[test]
    fn a_capability_asks_for_its_mapped_skill_or_its_own_name() {
        let c = A2aConfig::new("http://h/c").with_skill("sum", "adder");
        assert_eq!(c.skill_for("sum"), "adder");
        assert_eq!(c.skill_for("echo"), "echo");
    }
}
