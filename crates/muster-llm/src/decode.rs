//! Decoding a chat-completions answer: a whole JSON body, or a stream of server-sent
//! events, into an [`Answer`] (text, tool calls, token counts).
//!
//! Servers differ (extra fields, `content` as a list of parts, no `usage`, `usage` only in
//! the last chunk), so decoding is lenient about what it does not need and strict about
//! what it does: a body that is not JSON, has no choice, or carries an `error` is a
//! [`DecodeError`] with a short excerpt. Every size is bounded ([`MAX_RESPONSE_BYTES`],
//! [`MAX_TOOL_CALLS`]). It must not panic on any input (a fuzz target checks), and knows
//! nothing of HTTP or schemas.

use serde_json::Value;

/// The largest answer body (or stream) read.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// The most tool calls one answer may carry.
pub const MAX_TOOL_CALLS: usize = 64;

/// Token counts as the server reported them (`None`: not reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Prompt tokens.
    pub prompt: Option<u64>,
    /// Completion tokens.
    pub completion: Option<u64>,
    /// Total tokens.
    pub total: Option<u64>,
}

/// One tool call the model asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCall {
    /// The call's id (echoed in the tool's answer).
    pub id: String,
    /// The function name.
    pub name: String,
    /// The arguments, as the JSON text the model wrote.
    pub arguments: String,
}

/// A decoded answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// The text of the first choice, if any.
    pub content: Option<String>,
    /// Its tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped (`stop`, `length`, `tool_calls`...).
    pub finish_reason: Option<String>,
    /// Token counts; `None` when the answer had no `usage`.
    pub usage: Option<TokenCounts>,
}

/// An answer that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is not JSON (or not the expected shape).
    #[error("the answer is not a chat completion: {0}")]
    Malformed(String),
    /// The body has no choice.
    #[error("the answer has no choices")]
    NoChoice,
    /// The server answered with an error object.
    #[error("the server answered with an error: {0}")]
    Server(String),
    /// The body is larger than [`MAX_RESPONSE_BYTES`].
    #[error("the answer is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
}

/// Token counts from a `usage` object (a count that is absent or not a whole number is
/// not reported); `None` when it reports none.
fn counts(usage: &Value) -> Option<TokenCounts> {
    let n = |k: &str| usage.get(k).and_then(Value::as_u64);
    let (prompt, completion) = (n("prompt_tokens"), n("completion_tokens"));
    let c = TokenCounts {
        prompt,
        completion,
        total: n("total_tokens").or_else(|| Some(prompt?.saturating_add(completion?))),
    };
    (c != TokenCounts::default()).then_some(c)
}

/// The first choice's message (or delta), its finish reason, the usage and any error of
/// a body. Fields are looked up by name in objects only (a serde struct would also take
/// an array, by position).
struct Parts<'a> {
    message: Option<&'a Value>,
    finish_reason: Option<String>,
    usage: Option<TokenCounts>,
    has_choice: bool,
}

fn parts(body: &Value) -> Result<Parts<'_>, DecodeError> {
    if !body.is_object() {
        return Err(DecodeError::Malformed(
            "the body is not a JSON object".into(),
        ));
    }
    if let Some(e) = body.get("error").filter(|e| !e.is_null()) {
        return Err(DecodeError::Server(error_text(e)));
    }
    let choice = body
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .filter(|c| c.is_object());
    Ok(Parts {
        message: choice.and_then(|c| {
            c.get("message")
                .filter(|m| m.is_object())
                .or_else(|| c.get("delta").filter(|m| m.is_object()))
        }),
        finish_reason: choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .map(str::to_string),
        usage: body.get("usage").and_then(counts),
        has_choice: choice.is_some(),
    })
}

/// One tool call (or a stream's piece of one): `(index, id, name, arguments)`.
type RawCall = (Option<u64>, Option<String>, Option<String>, Option<String>);

/// The tool calls of a message (or delta).
fn raw_calls(message: &Value) -> Result<Vec<RawCall>, DecodeError> {
    let Some(calls) = message.get("tool_calls").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    if calls.len() > MAX_TOOL_CALLS {
        return Err(DecodeError::Malformed(format!(
            "more than {MAX_TOOL_CALLS} tool calls"
        )));
    }
    Ok(calls
        .iter()
        .map(|c| {
            let f = c.get("function");
            (
                c.get("index").and_then(Value::as_u64),
                c.get("id").and_then(Value::as_str).map(str::to_string),
                f.and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                f.and_then(|f| f.get("arguments"))
                    .filter(|a| !a.is_null())
                    .map(arguments_text),
            )
        })
        .collect())
}

/// Text content: a string, or a list of `{type: "text", text}` parts.
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<String>(),
        ),
        _ => None,
    }
}

/// Arguments are JSON text; some servers send them as an object.
fn arguments_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The bytes as an error quotes them: the one bounded quote, on one line.
fn excerpt(bytes: &[u8]) -> String {
    muster_core::util::bounded_bytes(bytes).replace(['\n', '\r'], " ")
}

/// A provider's error as an error quotes it (the one bounded quote).
fn error_text(e: &Value) -> String {
    match e.get("message").and_then(Value::as_str) {
        Some(m) => muster_core::util::bounded_text(m).into_owned(),
        None => muster_core::util::bounded_json(e),
    }
}

/// Decodes a whole (non-streamed) chat-completions body.
///
/// # Example
/// ```
/// use muster_llm::decode_response;
///
/// let a = decode_response(br#"{"choices":[{"message":{"content":"{\"ok\":true}"},"finish_reason":"stop"}],
///     "usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7},"x-extra":1}"#).unwrap();
/// assert_eq!(a.content.as_deref(), Some("{\"ok\":true}"));
/// assert_eq!(a.usage.and_then(|u| u.total), Some(7));
/// assert!(decode_response(b"<html>502</html>").is_err());
/// ```
pub fn decode_response(body: &[u8]) -> Result<Answer, DecodeError> {
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(DecodeError::TooLarge);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::Malformed(format!("{e} in `{}`", excerpt(body))))?;
    let p = parts(&v)?;
    if !p.has_choice {
        return Err(DecodeError::NoChoice);
    }
    let mut answer = Answer {
        content: None,
        tool_calls: Vec::new(),
        finish_reason: p.finish_reason,
        usage: p.usage,
    };
    if let Some(m) = p.message {
        answer.content = m.get("content").and_then(text_of);
        for (i, (_, id, name, arguments)) in raw_calls(m)?.into_iter().enumerate() {
            answer.tool_calls.push(ToolCall {
                id: id.unwrap_or_else(|| format!("call_{i}")),
                name: name.unwrap_or_default(),
                arguments: arguments.unwrap_or_default(),
            });
        }
    }
    Ok(answer)
}

/// Decodes a streamed answer (`text/event-stream`) chunk by chunk: feed it the bytes as
/// they come with [`StreamDecoder::push`], then take the [`Answer`] with
/// [`StreamDecoder::finish`].
///
/// # Example
/// ```
/// use muster_llm::StreamDecoder;
///
/// let mut d = StreamDecoder::default();
/// d.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"{\\\"a\\\"\"}}]}\n\nda").unwrap();
/// d.push(b"ta: {\"choices\":[{\"delta\":{\"content\":\":1}\"},\"finish_reason\":\"stop\"}]}\n\n").unwrap();
/// d.push(b"data: [DONE]\n\n").unwrap();
/// let a = d.finish().unwrap();
/// assert_eq!(a.content.as_deref(), Some("{\"a\":1}"));
/// assert_eq!(a.usage, None); // the stream reported no usage: unknown
/// ```
#[derive(Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    seen: usize,
    content: Option<String>,
    tool_calls: Vec<ToolCall>,
    finish_reason: Option<String>,
    usage: Option<TokenCounts>,
    done: bool,
}

impl StreamDecoder {
    /// Feeds received bytes; returns how many events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<usize, DecodeError> {
        self.seen = self.seen.saturating_add(bytes.len());
        if self.seen > MAX_RESPONSE_BYTES {
            return Err(DecodeError::TooLarge);
        }
        self.pending.extend_from_slice(bytes);
        let mut events = 0;
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim();
            let Some(data) = line.strip_prefix("data:") else {
                continue; // comments, `event:`, `id:`, blank separators
            };
            let data = data.trim();
            events += 1;
            if data == "[DONE]" {
                self.done = true;
                continue;
            }
            self.event(data.as_bytes())?;
        }
        Ok(events)
    }

    fn event(&mut self, data: &[u8]) -> Result<(), DecodeError> {
        let v: Value = serde_json::from_slice(data)
            .map_err(|e| DecodeError::Malformed(format!("{e} in `{}`", excerpt(data))))?;
        let p = parts(&v)?;
        if let Some(u) = p.usage {
            self.usage = Some(u);
        }
        if p.finish_reason.is_some() {
            self.finish_reason = p.finish_reason;
        }
        let Some(delta) = p.message else {
            return Ok(()); // the usage-only last chunk
        };
        if let Some(t) = delta.get("content").and_then(text_of) {
            self.content.get_or_insert_with(String::new).push_str(&t);
        }
        for (index, id, name, arguments) in raw_calls(delta)? {
            let i = match index {
                Some(i) => usize::try_from(i).unwrap_or(usize::MAX),
                None => self.tool_calls.len().saturating_sub(1),
            };
            if i >= MAX_TOOL_CALLS {
                return Err(DecodeError::Malformed(format!(
                    "more than {MAX_TOOL_CALLS} tool calls"
                )));
            }
            while self.tool_calls.len() <= i {
                let n = self.tool_calls.len();
                self.tool_calls.push(ToolCall {
                    id: format!("call_{n}"),
                    ..ToolCall::default()
                });
            }
            let call = &mut self.tool_calls[i];
            if let Some(id) = id {
                call.id = id;
            }
            if let Some(n) = name {
                call.name.push_str(&n);
            }
            if let Some(a) = arguments {
                call.arguments.push_str(&a);
            }
        }
        Ok(())
    }

    /// Whether the server sent `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The answer the stream carried.
    pub fn finish(self) -> Result<Answer, DecodeError> {
        if self.content.is_none() && self.tool_calls.is_empty() && self.finish_reason.is_none() {
            return Err(DecodeError::NoChoice);
        }
        Ok(Answer {
            content: self.content,
            tool_calls: self.tool_calls,
            finish_reason: self.finish_reason,
            usage: self.usage,
        })
    }
}

/// The JSON value in a model's text: the whole text, or the inside of a Markdown code
/// fence around it (small models often add one).
///
/// # Example
/// ```
/// use muster_llm::json_in;
/// assert_eq!(json_in("```json\n{\"a\": 1}\n```").unwrap()["a"], 1);
/// assert!(json_in("sure! here it is").is_err());
/// ```
pub fn json_in(text: &str) -> Result<Value, NotJson> {
    let t = text.trim();
    let inner = t
        .strip_prefix("```")
        .map(|rest| {
            let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
            rest.strip_suffix("```").unwrap_or(rest).trim()
        })
        .unwrap_or(t);
    serde_json::from_str(inner).map_err(|source| NotJson {
        shown: muster_core::util::bounded_text(t).into_owned(),
        source,
    })
}

/// A model's answer that [`json_in`] could not read as JSON.
#[derive(Debug, thiserror::Error)]
#[error("the answer is not JSON ({source}): `{shown}`")]
pub struct NotJson {
    /// The answer, quoted within the bounded-quote limit.
    pub shown: String,
    /// What the JSON parser said.
    #[source]
    pub source: serde_json::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_without_usage_has_unknown_usage_not_zero() {
        let a = decode_response(br#"{"choices":[{"message":{"content":"{}"}}]}"#).unwrap();
        assert_eq!(a.usage, None);
        let a =
            decode_response(br#"{"choices":[{"message":{"content":"{}"}}],"usage":null}"#).unwrap();
        assert_eq!(a.usage, None);
    }

    #[test]
    fn tool_calls_and_content_parts_are_decoded() {
        let a = decode_response(
            br#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],
            "tool_calls":[{"id":"c1","type":"function","function":{"name":"answer","arguments":"{\"x\":1}"}},
                          {"function":{"name":"t","arguments":{"y":2}}}]}}]}"#,
        )
        .unwrap();
        assert_eq!(a.content.as_deref(), Some("ab"));
        assert_eq!(a.tool_calls[0].id, "c1");
        assert_eq!(a.tool_calls[0].arguments, "{\"x\":1}");
        assert_eq!(a.tool_calls[1].arguments, "{\"y\":2}");
    }

    #[test]
    fn errors_and_garbage_are_decode_errors() {
        assert!(matches!(
            decode_response(br#"{"error":{"message":"model not found"}}"#),
            Err(DecodeError::Server(m)) if m == "model not found"
        ));
        assert_eq!(
            decode_response(br#"{"choices":[]}"#),
            Err(DecodeError::NoChoice)
        );
        assert!(matches!(
            decode_response(b"\xff\x00"),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn a_stream_assembles_content_tool_calls_and_final_usage() {
        let mut d = StreamDecoder::default();
        let chunks = [
            ": keep-alive\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"ans\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"wer\",\"arguments\":\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\r\n\r\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n",
        ];
        for c in chunks {
            d.push(c.as_bytes()).unwrap();
        }
        assert!(d.is_done());
        let a = d.finish().unwrap();
        assert_eq!(a.tool_calls[0].name, "answer");
        assert_eq!(a.tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(a.usage.and_then(|u| u.total), Some(7));
    }

    #[test]
    fn a_stream_is_bounded() {
        let mut d = StreamDecoder::default();
        let big = vec![b'x'; MAX_RESPONSE_BYTES + 1];
        assert_eq!(d.push(&big), Err(DecodeError::TooLarge));
        let mut d = StreamDecoder::default();
        let line = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{{\"index\":{}}}]}}}}]}}\n",
            usize::MAX
        );
        assert!(d.push(line.as_bytes()).is_err());
    }
}
