//! Contracts from tools: the stable names a tool's schemas are registered under, the
//! generic output schema of a tool that declares none, and the output a tool result
//! becomes. Pure functions over JSON; it must not talk to a server.

use serde_json::{Map, Value, json};

/// The name of the generic output schema (`mcp.content`): the output of a capability whose
/// tool declares no `outputSchema` (and whose manifest names no `output`).
///
/// Such an output is an object with
/// - `content`: the tool result's content blocks, as MCP sends them (`{"type": "text",
///   "text": ...}`, `{"type": "image", ...}`, ...);
/// - `text`: the text of its text blocks, joined with newlines;
/// - `json` (only when `text` is one JSON document): that document, parsed.
pub const CONTENT_SCHEMA: &str = "mcp.content";

/// The generic output schema (see [`CONTENT_SCHEMA`]).
///
/// # Example
/// ```
/// let schema = muster_mcp::content_schema();
/// assert_eq!(schema["required"], serde_json::json!(["content", "text"]));
/// ```
pub fn content_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": CONTENT_SCHEMA,
        "description": "The result of an MCP tool that declares no output schema: its content blocks, their text, and that text parsed when it is one JSON document.",
        "type": "object",
        "required": ["content", "text"],
        "additionalProperties": false,
        "properties": {
            "content": {
                "type": "array",
                "items": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}}
            },
            "text": {"type": "string"},
            "json": {}
        }
    })
}

/// The stable name a tool's input schema is registered under:
/// `mcp.<agent>.<tool>.input` (the tool name lower-cased, each character outside
/// `a-z 0-9 _ -` written as `-`).
///
/// # Example
/// ```
/// assert_eq!(muster_mcp::input_schema_name("time", "get_current_time"), "mcp.time.get_current_time.input");
/// ```
pub fn input_schema_name(agent: &str, tool: &str) -> String {
    format!("mcp.{agent}.{}.input", schema_part(tool))
}

/// The stable name a tool's output schema is registered under: `mcp.<agent>.<tool>.output`.
///
/// # Example
/// ```
/// assert_eq!(muster_mcp::output_schema_name("git", "git_log"), "mcp.git.git_log.output");
/// ```
pub fn output_schema_name(agent: &str, tool: &str) -> String {
    format!("mcp.{agent}.{}.output", schema_part(tool))
}

fn schema_part(tool: &str) -> String {
    tool.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The text of a result's text blocks, joined with newlines.
pub(crate) fn text_of(content: &[Value]) -> String {
    content
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a tool result becomes as a task's output: its `structuredContent` when it has one,
/// else the generic document of [`content_schema`].
pub(crate) fn output_of(structured: Option<Value>, content: Vec<Value>) -> Value {
    if let Some(s) = structured {
        return s;
    }
    let text = text_of(&content);
    let mut doc = Map::new();
    doc.insert("content".into(), Value::Array(content));
    if !text.trim().is_empty()
        && let Ok(parsed) = serde_json::from_str::<Value>(text.trim())
    {
        doc.insert("json".into(), parsed);
    }
    doc.insert("text".into(), Value::String(text));
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_schema_safe() {
        assert_eq!(input_schema_name("a", "Get Time!"), "mcp.a.get-time-.input");
        assert_eq!(output_schema_name("a", "x_y-z"), "mcp.a.x_y-z.output");
    }

    #[test]
    fn an_unstructured_result_is_its_blocks_text_and_parsed_json() {
        let out = output_of(
            None,
            vec![
                json!({"type": "text", "text": "{\"a\": 1}"}),
                json!({"type": "image", "data": "", "mimeType": "image/png"}),
            ],
        );
        assert_eq!(out["text"], "{\"a\": 1}");
        assert_eq!(out["json"], json!({"a": 1}));
        assert_eq!(out["content"].as_array().map(Vec::len), Some(2));
        let plain = output_of(None, vec![json!({"type": "text", "text": "hello"})]);
        assert!(plain.get("json").is_none());
        let structured = output_of(Some(json!({"n": 2})), vec![]);
        assert_eq!(structured, json!({"n": 2}));
    }

    #[test]
    fn outputs_match_the_generic_schema() {
        let store = muster_core::messaging::SchemaStore::new();
        store.add(CONTENT_SCHEMA, content_schema()).unwrap();
        let out = output_of(None, vec![json!({"type": "text", "text": "[1, 2]"})]);
        store.validate(CONTENT_SCHEMA, &out).unwrap();
        assert!(
            store
                .validate(CONTENT_SCHEMA, &json!({"text": "no blocks"}))
                .is_err()
        );
    }
}
