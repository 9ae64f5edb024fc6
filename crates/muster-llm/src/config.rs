//! What an LLM agent calls and how: the `[backend]` of a manifest with `kind = "llm"`,
//! kept apart so that the provider, the wire format and the agent all read one plain
//! description of it. It checks sizes and names; templates are checked by
//! [`prompt`](super::prompt).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::record::{RecordMode, Redactor};

/// The most repair turns an attempt may take (`repair`).
pub const MAX_REPAIR: u32 = 10;
/// The most tool rounds an attempt may take (`max_tool_rounds`).
pub const MAX_TOOL_ROUNDS: u32 = 32;
/// The most tokens one answer may ask for (`max_tokens`).
pub const MAX_TOKENS: u64 = 1 << 20;
/// The longest `timeout` or `stream_idle`: a day.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// How the capability's output schema is sent to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Structured {
    /// `response_format: {type: "json_schema", json_schema: {strict: true, schema}}`
    /// (OpenAI, vLLM).
    #[default]
    JsonSchema,
    /// `response_format: {type: "json_object", schema}` plus the schema in the system
    /// prompt (llama.cpp's servers, Ollama, LM Studio).
    JsonObject,
    /// A forced call of one tool, `answer`, whose parameters are the schema.
    Tool,
}

/// The budgets shared by every instance (of every agent type) that calls one endpoint and
/// model. Absent limits are unlimited.
///
/// # Example
/// ```
/// use muster_llm::LlmLimits;
///
/// let l: LlmLimits = toml::from_str("concurrency = 4\nrequests_per_minute = 600").unwrap();
/// assert_eq!((l.concurrency, l.requests_per_minute, l.tokens_per_minute), (Some(4), Some(600), None));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmLimits {
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Requests started per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute (charged at `max_tokens` plus an estimate of the prompt when a
    /// request starts, settled with the reported usage when it ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

/// Prices per million tokens, for the cost journaled with each attempt's usage.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmPrice {
    /// Per million prompt tokens.
    pub prompt: f64,
    /// Per million completion tokens.
    pub completion: f64,
}

/// The `[backend]` of an LLM agent: an OpenAI-compatible chat-completions endpoint, the
/// model, the prompt templates and how the output schema is enforced.
///
/// # Example
/// ```
/// use muster_llm::{LlmConfig, Structured};
///
/// let c: LlmConfig = toml::from_str(r#"
///     base_url = "http://127.0.0.1:8080/v1"
///     model = "smollm2-135m"
///     prompt = "Title: {{ input.title }}"
///     structured = "json_object"
/// "#).unwrap();
/// assert_eq!((c.structured, c.repair), (Structured::JsonObject, 1));
/// assert_eq!(c.endpoint(), "http://127.0.0.1:8080/v1/chat/completions");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// The API root, e.g. `https://api.openai.com/v1`; requests go to
    /// `{base_url}/chat/completions`.
    pub base_url: String,
    /// The model name sent with each request.
    pub model: String,
    /// The NAME of the environment variable holding the API key (read when the agent
    /// starts); absent: no `Authorization` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// The system prompt (a template), or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// A file holding the system prompt (a template), relative to the working directory;
    /// read at load. Exclusive with `system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_file: Option<PathBuf>,
    /// The user prompt: a template over `input`, `capability`, `task`, `attempt` and
    /// `feedback` (the schema errors of the previous turn; empty on the first).
    pub prompt: String,
    /// How the output schema is sent.
    #[serde(default)]
    pub structured: Structured,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The most tokens an answer may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Extra turns that show the model its schema errors before the attempt fails.
    #[serde(default = "one")]
    pub repair: u32,
    /// The bound of one HTTP request (the task's deadline still bounds the attempt).
    #[serde(default = "sixty_seconds", with = "muster_core::util::duration")]
    pub timeout: Duration,
    /// Ask for a streamed answer: each chunk renews the attempt's heartbeat.
    #[serde(default)]
    pub stream: bool,
    /// With `stream`: the longest gap between two chunks before the attempt fails.
    #[serde(default = "thirty_seconds", with = "muster_core::util::duration")]
    pub stream_idle: Duration,
    /// Capabilities the model may call as tools (each call is a delegated task).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// The most tool rounds in one attempt.
    #[serde(default = "four")]
    pub max_tool_rounds: u32,
    /// Send `metadata` (task id and epoch) in the request body as well as the
    /// `Idempotency-Key` header; some servers refuse unknown body fields.
    #[serde(default = "yes")]
    pub metadata: bool,
    /// The budgets of this endpoint and model, shared by every instance using them.
    #[serde(default, skip_serializing_if = "is_default_limits")]
    pub limits: LlmLimits,
    /// Prices per million tokens, for the journaled cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<LlmPrice>,
    /// What is journaled of each model call: nothing by default; `prompts` journals every
    /// call's messages and raw answer (`model_call` records), redacted and bounded.
    #[serde(default, skip_serializing_if = "RecordMode::is_none")]
    pub record: RecordMode,
    /// Fields whose values are never recorded: every string or number value of a field of
    /// one of these names, in the task's input or in any JSON of a call, is replaced
    /// wherever it occurs in what is recorded, as it is or JSON-escaped; the value of such
    /// a field in any recorded JSON is replaced whatever it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<String>,
    /// Regular expressions whose matches are never recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact_patterns: Vec<String>,
}

fn one() -> u32 {
    1
}
fn four() -> u32 {
    4
}
fn yes() -> bool {
    true
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn is_default_limits(l: &LlmLimits) -> bool {
    *l == LlmLimits::default()
}

impl LlmConfig {
    /// A config with defaults: `json_schema`, one repair turn, a 60 s request bound.
    ///
    /// # Example
    /// ```
    /// use muster_llm::LlmConfig;
    ///
    /// let c = LlmConfig::new("http://127.0.0.1:8080/v1", "m", "{{ input }}");
    /// assert_eq!(c.repair, 1);
    /// ```
    pub fn new(base_url: &str, model: &str, prompt: &str) -> Self {
        LlmConfig {
            base_url: base_url.to_string(),
            model: model.to_string(),
            api_key_env: None,
            system: None,
            system_file: None,
            prompt: prompt.to_string(),
            structured: Structured::default(),
            temperature: None,
            max_tokens: None,
            repair: 1,
            timeout: sixty_seconds(),
            stream: false,
            stream_idle: thirty_seconds(),
            tools: Vec::new(),
            max_tool_rounds: 4,
            metadata: true,
            limits: LlmLimits::default(),
            price: None,
            record: RecordMode::None,
            redact: Vec::new(),
            redact_patterns: Vec::new(),
        }
    }

    /// The chat-completions URL.
    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }

    /// The key of the provider this config shares: endpoint and model.
    pub fn provider_key(&self) -> String {
        format!("{}#{}", self.endpoint(), self.model)
    }

    /// Every problem with the config, as `(field, message)` with the field a JSON pointer
    /// under the backend (`/base_url`).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut p = |f: &str, m: String| out.push((f.to_string(), m));
        match reqwest::Url::parse(&self.base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => p(
                "/base_url",
                format!("scheme `{}` is not http or https", u.scheme()),
            ),
            Err(e) => p(
                "/base_url",
                format!("`{}` is not a URL: {e}", self.base_url),
            ),
        }
        if self.model.trim().is_empty() {
            p("/model", "must not be empty".into());
        }
        if let Some(v) = &self.api_key_env
            && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            p(
                "/api_key_env",
                format!("`{v}` is not an environment variable name (the NAME, not the key)"),
            );
        }
        if self.system.is_some() && self.system_file.is_some() {
            p(
                "/system_file",
                "give `system` or `system_file`, not both".into(),
            );
        }
        if self.repair > MAX_REPAIR {
            p(
                "/repair",
                format!("{} is above the limit of {MAX_REPAIR}", self.repair),
            );
        }
        if self.max_tool_rounds > MAX_TOOL_ROUNDS {
            p(
                "/max_tool_rounds",
                format!(
                    "{} is above the limit of {MAX_TOOL_ROUNDS}",
                    self.max_tool_rounds
                ),
            );
        }
        if let Some(t) = self.max_tokens
            && (t == 0 || t > MAX_TOKENS)
        {
            p("/max_tokens", format!("{t} is outside 1..={MAX_TOKENS}"));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            p("/temperature", format!("{t} is outside 0..=2"));
        }
        for (field, d) in [
            ("/timeout", self.timeout),
            ("/stream_idle", self.stream_idle),
        ] {
            if d.is_zero() {
                p(field, "must be above 0".into());
            } else if d > MAX_WAIT {
                p(
                    field,
                    format!(
                        "{} is above the limit of {}",
                        humantime::format_duration(d),
                        humantime::format_duration(MAX_WAIT)
                    ),
                );
            }
        }
        if self.limits.concurrency == Some(0) {
            p("/limits/concurrency", "must be at least 1".into());
        }
        if self.limits.requests_per_minute == Some(0) {
            p("/limits/requests_per_minute", "must be at least 1".into());
        }
        if self.limits.tokens_per_minute == Some(0) {
            p("/limits/tokens_per_minute", "must be at least 1".into());
        }
        if let Some(price) = self.price {
            let fine = |x: f64| x.is_finite() && x >= 0.0;
            if !(fine(price.prompt) && fine(price.completion)) {
                p("/price", "prices must be finite numbers >= 0".into());
            }
        }
        if let Err(problems) = Redactor::new(&self.redact, &self.redact_patterns) {
            out.extend(problems);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_every_documented_field_and_refuses_unknown_ones() {
        let c: LlmConfig = toml::from_str(
            r#"
            base_url = "http://127.0.0.1:8080/v1/"
            model = "smollm2-135m"
            api_key_env = "OPENAI_API_KEY"
            system = "You triage bug reports."
            prompt = "Title: {{ input.title }}"
            structured = "tool"
            temperature = 0.0
            max_tokens = 512
            repair = 2
            timeout = "5s"
            stream = true
            stream_idle = "2s"
            tools = ["code.test"]
            max_tool_rounds = 3
            record = "prompts"
            redact = ["api_key"]
            redact_patterns = ["sk-[A-Za-z0-9]{16,}"]
            [limits]
            concurrency = 4
            requests_per_minute = 600
            tokens_per_minute = 200000
            [price]
            prompt = 0.15
            completion = 0.6
            "#,
        )
        .unwrap();
        assert_eq!(c.structured, Structured::Tool);
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.limits.tokens_per_minute, Some(200_000));
        assert_eq!((c.record, c.redact.len()), (RecordMode::Prompts, 1));
        assert_eq!(c.endpoint(), "http://127.0.0.1:8080/v1/chat/completions");
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert!(
            toml::from_str::<LlmConfig>(
                "base_url = \"x\"\nmodel = \"m\"\nprompt = \"p\"\nnope = 1"
            )
            .is_err()
        );
    }

    #[test]
    fn nothing_is_recorded_unless_asked_and_a_bad_record_value_is_refused() {
        let c: LlmConfig =
            toml::from_str("base_url = \"x\"\nmodel = \"m\"\nprompt = \"p\"").unwrap();
        assert_eq!(c.record, RecordMode::None);
        let e = toml::from_str::<LlmConfig>(
            "base_url = \"x\"\nmodel = \"m\"\nprompt = \"p\"\nrecord = \"everything\"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("record"), "{e}");
        let mut c = LlmConfig::new("http://x/v1", "m", "p");
        c.redact_patterns = vec!["(".into()];
        let fields: Vec<String> = c.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["/redact_patterns/0"]);
    }

    #[test]
    fn out_of_range_fields_are_named() {
        let mut c = LlmConfig::new("ftp://x", "", "p");
        c.repair = 99;
        c.api_key_env = Some("sk-123-abc".into());
        c.limits.concurrency = Some(0);
        let fields: Vec<String> = c.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "/base_url",
                "/model",
                "/api_key_env",
                "/repair",
                "/limits/concurrency"
            ]
        );
    }
}
