//! The request side of the chat-completions wire format: the JSON body of one request
//! (messages, model, sampling, the output schema in the form the config chose, tools,
//! metadata) and the name an output schema is sent under. Pure functions of their
//! arguments; the HTTP exchange is in [`call`](super::call).

use serde_json::{Map, Value, json};

use super::config::{LlmConfig, Structured};

/// The function name of the forced tool call that carries the answer
/// (`structured = "tool"`).
pub const ANSWER_TOOL: &str = "answer";

/// A name the chat-completions API accepts (`^[a-zA-Z0-9_-]{1,64}$`) for a schema or a
/// capability: other characters become `_`.
///
/// # Example
/// ```
/// use muster_llm::wire_name;
/// assert_eq!(wire_name("code.test"), "code_test");
/// ```
pub fn wire_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() { "output".into() } else { s }
}

/// The instruction added to the system prompt with `structured = "json_object"`, where
/// the schema is not otherwise sent as a contract.
pub fn schema_instruction(schema: &Value) -> String {
    format!(
        "Answer with one JSON object, and nothing else, that satisfies this JSON Schema:\n{schema}"
    )
}

/// A tool the model may call: its wire name, what it does and its input schema.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The name the model calls it by.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Its input schema.
    pub parameters: Value,
}

/// What identifies the attempt a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptId<'a> {
    /// The task id.
    pub task: &'a str,
    /// The lease epoch.
    pub epoch: u64,
    /// The turn within the attempt (0 first; repair and tool turns after).
    pub turn: u32,
}

impl AttemptId<'_> {
    /// The `Idempotency-Key`: `<task>-<epoch>` for the first turn of an attempt, with
    /// `-<turn>` after it, so that a proxy deduplicating a retried request never answers
    /// a repair turn with the answer it is repairing.
    pub fn idempotency_key(&self) -> String {
        match self.turn {
            0 => format!("{}-{}", self.task, self.epoch),
            t => format!("{}-{}-{t}", self.task, self.epoch),
        }
    }
}

/// The JSON body of one request.
///
/// # Example
/// ```
/// use muster_llm::{request_body, AttemptId, LlmConfig, Structured};
/// use serde_json::json;
///
/// let mut c = LlmConfig::new("http://x/v1", "m", "p");
/// c.structured = Structured::JsonObject;
/// let messages = vec![json!({"role": "user", "content": "hi"})];
/// let id = AttemptId { task: "t", epoch: 2, turn: 0 };
/// let body = request_body(&c, &messages, "out", &json!({"type": "object"}), &[], id);
/// assert_eq!(body["response_format"]["type"], "json_object");
/// assert_eq!(body["metadata"]["muster_epoch"], "2");
/// ```
pub fn request_body(
    config: &LlmConfig,
    messages: &[Value],
    schema_name: &str,
    schema: &Value,
    tools: &[ToolSpec],
    id: AttemptId<'_>,
) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(config.model));
    body.insert("messages".into(), Value::Array(messages.to_vec()));
    if let Some(t) = config.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(n) = config.max_tokens {
        body.insert("max_tokens".into(), json!(n));
    }
    let mut tool_list: Vec<Value> = tools
        .iter()
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}})
        })
        .collect();
    match config.structured {
        Structured::JsonSchema => {
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {
                    "name": wire_name(schema_name), "strict": true, "schema": schema}}),
            );
        }
        Structured::JsonObject => {
            body.insert(
                "response_format".into(),
                json!({"type": "json_object", "schema": schema}),
            );
        }
        Structured::Tool => {
            tool_list.push(json!({"type": "function", "function": {
                "name": ANSWER_TOOL,
                "description": "Give the answer.",
                "parameters": schema}}));
            if tools.is_empty() {
                body.insert(
                    "tool_choice".into(),
                    json!({"type": "function", "function": {"name": ANSWER_TOOL}}),
                );
            } else {
                body.insert("tool_choice".into(), json!("required"));
            }
        }
    }
    if !tool_list.is_empty() {
        body.insert("tools".into(), Value::Array(tool_list));
    }
    if config.stream {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if config.metadata {
        body.insert(
            "metadata".into(),
            json!({"muster_task": id.task, "muster_epoch": id.epoch.to_string(),
                   "muster_turn": id.turn.to_string()}),
        );
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> AttemptId<'static> {
        AttemptId {
            task: "t",
            epoch: 3,
            turn: 0,
        }
    }

    #[test]
    fn each_structured_mode_sends_the_schema_its_own_way() {
        let schema = json!({"type": "object", "required": ["a"]});
        let msgs = [json!({"role": "user", "content": "x"})];
        let mut c = LlmConfig::new("http://x/v1", "m", "p");
        let b = request_body(&c, &msgs, "triage.result", &schema, &[], id());
        assert_eq!(b["response_format"]["json_schema"]["strict"], true);
        assert_eq!(b["response_format"]["json_schema"]["name"], "triage_result");
        assert_eq!(b["response_format"]["json_schema"]["schema"], schema);
        c.structured = Structured::Tool;
        let b = request_body(&c, &msgs, "s", &schema, &[], id());
        assert_eq!(b["tools"][0]["function"]["parameters"], schema);
        assert_eq!(b["tool_choice"]["function"]["name"], ANSWER_TOOL);
        assert!(b.get("response_format").is_none());
        c.metadata = false;
        c.stream = true;
        let b = request_body(&c, &msgs, "s", &schema, &[], id());
        assert!(b.get("metadata").is_none());
        assert_eq!(b["stream_options"]["include_usage"], true);
    }

    #[test]
    fn a_repair_turn_has_its_own_idempotency_key() {
        assert_eq!(id().idempotency_key(), "t-3");
        assert_eq!(AttemptId { turn: 1, ..id() }.idempotency_key(), "t-3-1");
    }
}
