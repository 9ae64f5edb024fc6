//! Recording an attempt's model calls (`[backend] record = "prompts"`): each call's
//! messages and raw answer become a [`ModelCall`] for the journal, redacted and bounded
//! here, before anything is written.
//!
//! Redaction comes first, then the bounds, so a cut never leaves half a secret behind:
//! - `redact` names fields: every non-empty string value of a field of that name, at any
//!   depth of the task's input or of any JSON text of the call (a tool's answer, the
//!   model's), is replaced by [`REDACTED`] wherever it occurs in the recorded text (also in
//!   its JSON-escaped form);
//! - `redact_patterns` are regular expressions: every match is replaced by [`REDACTED`];
//! - the API key's value is always redacted; headers are never recorded.
//!
//! Bounds: each text (a message, the answer, the error) at most [`MAX_RECORDED_TEXT`]
//! bytes, a call at most [`MAX_RECORDED_CALL`] bytes of text and [`MAX_RECORDED_MESSAGES`]
//! messages. A cut text ends with `…[cut: N of M bytes recorded]` and marks the call
//! `truncated`. This module must not journal or send anything: it only shapes the record.

use std::time::Duration;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use muster_core::journal::{CallMessage, ModelCall, TurnKind, Usage};

/// The most bytes of one recorded text (a message, the answer, the error).
pub const MAX_RECORDED_TEXT: usize = 16 * 1024;
/// The most bytes of text one recorded call holds, all its texts together.
pub const MAX_RECORDED_CALL: usize = 64 * 1024;
/// The most messages one recorded call holds; the rest are counted in a last one.
pub const MAX_RECORDED_MESSAGES: usize = 64;
/// The most entries of `redact`, and of `redact_patterns`.
pub const MAX_REDACT_ENTRIES: usize = 64;
/// The most bytes of one compiled `redact_patterns` entry (the regex crate's size limit).
const MAX_PATTERN_SIZE: usize = 1 << 20;
/// What replaces a redacted value.
pub const REDACTED: &str = "[redacted]";

/// What an LLM agent records of its model calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    /// Nothing beyond the attempt's usage (the default).
    #[default]
    None,
    /// Every call's messages, raw answer, tokens, latency and cost, as `model_call`
    /// records.
    Prompts,
}

impl RecordMode {
    /// Whether nothing is recorded.
    pub fn is_none(&self) -> bool {
        *self == RecordMode::None
    }
}

/// The redaction of an agent's recorded calls: the fields whose values are hidden and the
/// patterns whose matches are.
///
/// # Example
/// ```
/// use muster_llm::{Redactor, REDACTED};
/// use serde_json::json;
///
/// let r = Redactor::new(&["api_key".into()], &[r"sk-[A-Za-z0-9]{8,}".into()]).unwrap();
/// let input = json!({"title": "login fails", "api_key": "hunter2-secret"});
/// let secrets = r.secrets_in(&input);
/// let text = "key hunter2-secret, token sk-abcdefgh1234, title login fails";
/// assert_eq!(
///     r.redact(text, &secrets),
///     format!("key {REDACTED}, token {REDACTED}, title login fails")
/// );
/// // A pattern that does not compile is refused, naming its entry:
/// let errors = Redactor::new(&[], &["(unclosed".into()]).unwrap_err();
/// assert_eq!(errors[0].0, "/redact_patterns/0");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    fields: Vec<String>,
    patterns: Vec<Regex>,
}

impl Redactor {
    /// Checks and compiles `fields` (names) and `patterns` (regular expressions); errors
    /// are `(field, message)`, the field a JSON pointer under the backend.
    pub fn new(fields: &[String], patterns: &[String]) -> Result<Self, Vec<(String, String)>> {
        let mut problems = Vec::new();
        for (name, n) in [
            ("/redact", fields.len()),
            ("/redact_patterns", patterns.len()),
        ] {
            if n > MAX_REDACT_ENTRIES {
                problems.push((
                    name.to_string(),
                    format!("{n} entries, above the limit of {MAX_REDACT_ENTRIES}"),
                ));
            }
        }
        for (i, f) in fields.iter().enumerate() {
            if f.trim().is_empty() {
                problems.push((
                    format!("/redact/{i}"),
                    "a field name must not be empty".into(),
                ));
            }
        }
        let mut compiled = Vec::with_capacity(patterns.len());
        for (i, p) in patterns.iter().enumerate() {
            if p.is_empty() {
                problems.push((
                    format!("/redact_patterns/{i}"),
                    "a pattern must not be empty (it would match everywhere)".into(),
                ));
                continue;
            }
            match RegexBuilder::new(p).size_limit(MAX_PATTERN_SIZE).build() {
                Ok(re) if re.is_match("") => problems.push((
                    format!("/redact_patterns/{i}"),
                    format!("`{p}` matches the empty text, so it would match everywhere"),
                )),
                Ok(re) => compiled.push(re),
                Err(e) => problems.push((
                    format!("/redact_patterns/{i}"),
                    format!("`{p}` is not a regular expression: {e}"),
                )),
            }
        }
        if problems.is_empty() {
            Ok(Redactor {
                fields: fields.to_vec(),
                patterns: compiled,
            })
        } else {
            Err(problems)
        }
    }

    /// The string values of the named fields, at any depth of `value`.
    pub fn secrets_in(&self, value: &Value) -> Vec<String> {
        let mut out = Vec::new();
        if !self.fields.is_empty() {
            collect(value, &self.fields, false, &mut out);
        }
        out
    }

    /// `text` with every occurrence of a secret (and of its JSON-escaped form) and every
    /// match of a pattern replaced by [`REDACTED`].
    pub fn redact(&self, text: &str, secrets: &[String]) -> String {
        let mut forms: Vec<String> = Vec::with_capacity(secrets.len() * 2);
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            forms.push(s.clone());
            let escaped = Value::String(s.clone()).to_string();
            let escaped = &escaped[1..escaped.len() - 1];
            if escaped != s {
                forms.push(escaped.to_string());
            }
        }
        // The longest first: a secret that contains another is replaced whole.
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        let mut out = text.to_string();
        for f in &forms {
            if out.contains(f.as_str()) {
                out = out.replace(f.as_str(), REDACTED);
            }
        }
        for re in &self.patterns {
            if let std::borrow::Cow::Owned(s) = re.replace_all(&out, REDACTED) {
                out = s;
            }
        }
        out
    }
}

/// Collects the non-empty strings under keys named in `fields` (`inside`: under one).
fn collect(v: &Value, fields: &[String], inside: bool, out: &mut Vec<String>) {
    match v {
        Value::String(s) if inside && !s.is_empty() => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| collect(i, fields, inside, out)),
        Value::Object(map) => {
            for (k, item) in map {
                collect(item, fields, inside || fields.iter().any(|f| f == k), out);
            }
        }
        _ => {}
    }
}

/// `text` cut to at most `cap` bytes at a character boundary, ending with a note of what
/// was cut; `true` when it was cut.
///
/// # Example
/// ```
/// use muster_llm::bound_text;
///
/// assert_eq!(bound_text("short", 16), ("short".to_string(), false));
/// let (cut, was_cut) = bound_text("ééééé", 5); // 10 bytes; a cut never splits a character
/// assert!(was_cut);
/// assert_eq!(cut, "éé…[cut: 4 of 10 bytes recorded]");
/// ```
pub fn bound_text(text: &str, cap: usize) -> (String, bool) {
    if text.len() <= cap {
        return (text.to_string(), false);
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (
        format!(
            "{}…[cut: {end} of {} bytes recorded]",
            &text[..end],
            text.len()
        ),
        true,
    )
}

/// Which call of an attempt is being recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallId {
    /// From 0.
    pub turn: u32,
    /// First, repair or tool.
    pub kind: TurnKind,
    /// The repair turn's or tool round's number, from 1 (0 for the first call).
    pub round: u32,
}

/// What came back from one call: the raw answer and its usage, or the failure.
pub(crate) type Outcome<'a> = Result<(&'a str, &'a Usage), &'a str>;

/// Turns an attempt's calls into records: holds what every call of the attempt redacts
/// (the input's secrets and the API key) and what every record names.
#[derive(Debug)]
pub(crate) struct CallRecorder<'a> {
    redactor: &'a Redactor,
    secrets: Vec<String>,
    attempt: u32,
    model: &'a str,
}

impl<'a> CallRecorder<'a> {
    pub(crate) fn new(
        redactor: &'a Redactor,
        input: &Value,
        api_key: Option<&str>,
        attempt: u32,
        model: &'a str,
    ) -> Self {
        let mut secrets = redactor.secrets_in(input);
        if let Some(k) = api_key.filter(|k| !k.is_empty()) {
            secrets.push(k.to_string());
        }
        CallRecorder {
            redactor,
            secrets,
            attempt,
            model,
        }
    }

    /// The record of one call: `messages` as sent (chat-completions messages), and its
    /// outcome.
    pub(crate) fn call(
        &self,
        id: CallId,
        messages: &[Value],
        outcome: Outcome<'_>,
        latency: Duration,
    ) -> ModelCall {
        let texts: Vec<(String, String)> = messages.iter().map(role_and_text).collect();
        // The values of the named fields in any JSON text of this call are secrets too.
        let mut secrets = self.secrets.clone();
        if !self.redactor.fields.is_empty() {
            let answer = outcome.ok().map(|(a, _)| a);
            for t in texts.iter().map(|(_, t)| t.as_str()).chain(answer) {
                if let Ok(v) = crate::json_in(t) {
                    secrets.extend(self.redactor.secrets_in(&v));
                }
            }
        }
        let mut budget = MAX_RECORDED_CALL;
        let mut truncated = false;
        let mut take = |text: &str| {
            let clean = self.redactor.redact(text, &secrets);
            let (kept, cut) = bound_text(&clean, MAX_RECORDED_TEXT.min(budget));
            budget = budget.saturating_sub(kept.len());
            truncated |= cut;
            kept
        };
        // The answer and the error first: they are what a reader looks for.
        let (answer, error, usage) = match outcome {
            Ok((a, u)) => (Some(take(a)), None, Some(u.clone())),
            Err(e) => (None, Some(take(e)), None),
        };
        let mut recorded = Vec::with_capacity(texts.len().min(MAX_RECORDED_MESSAGES + 1));
        for (role, text) in texts.iter().take(MAX_RECORDED_MESSAGES) {
            recorded.push(CallMessage {
                role: role.clone(),
                content: take(text),
            });
        }
        if texts.len() > MAX_RECORDED_MESSAGES {
            truncated = true;
            recorded.push(CallMessage {
                role: "muster".into(),
                content: format!(
                    "[cut: {} more messages not recorded]",
                    texts.len() - MAX_RECORDED_MESSAGES
                ),
            });
        }
        ModelCall {
            attempt: self.attempt,
            turn: id.turn,
            kind: id.kind,
            round: id.round,
            model: self.model.to_string(),
            messages: recorded,
            answer,
            error,
            usage,
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            truncated,
        }
    }
}

/// A chat-completions message's role and text: its content, or (an assistant asking for
/// tools) its tool calls as JSON text.
fn role_and_text(m: &Value) -> (String, String) {
    let role = m["role"].as_str().unwrap_or("unknown").to_string();
    let text = match (&m["content"], m.get("tool_calls")) {
        (Value::String(s), None) => s.clone(),
        (Value::String(s), Some(calls)) => format!("{s}\n{calls}"),
        (Value::Null, Some(calls)) => calls.to_string(),
        (Value::Null, None) => String::new(),
        (other, _) => other.to_string(),
    };
    (role, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id() -> CallId {
        CallId {
            turn: 1,
            kind: TurnKind::Repair,
            round: 1,
        }
    }

    #[test]
    fn named_fields_keys_and_patterns_never_reach_the_record() {
        let r = Redactor::new(&["password".into()], &[r"tok_[0-9a-f]{6,}".into()]).unwrap();
        let input = json!({"user": {"name": "ana", "password": "p\"w\\d-1"}, "n": 3});
        let rec = CallRecorder::new(&r, &input, Some("sk-live-KEY"), 2, "m");
        let messages = [
            json!({"role": "system", "content": "Use key sk-live-KEY."}),
            // The password as the template wrote it, and JSON-escaped inside a JSON text.
            json!({"role": "user", "content": "login ana p\"w\\d-1 {\"password\":\"p\\\"w\\\\d-1\"}"}),
            json!({"role": "tool", "content": "{\"password\": \"from-a-tool\", \"id\": \"tok_abcdef12\"}"}),
        ];
        let answer = "{\"ok\": true, \"password\": \"from-the-model\", \"note\": \"from-a-tool\"}";
        let usage = Usage::known("m", 20, 7);
        let call = rec.call(
            id(),
            &messages,
            Ok((answer, &usage)),
            Duration::from_millis(412),
        );
        let mut all: Vec<&str> = call.messages.iter().map(|m| m.content.as_str()).collect();
        all.extend(call.answer.as_deref());
        let all = all.join("\n");
        for secret in [
            "sk-live-KEY",
            "p\"w",
            "from-a-tool",
            "from-the-model",
            "tok_abcdef12",
        ] {
            assert!(!all.contains(secret), "{secret} recorded: {all}");
        }
        assert!(all.contains("login ana [redacted]"), "{all}");
        assert_eq!(call.messages[0].content, "Use key [redacted].");
        assert_eq!(
            (call.attempt, call.turn, call.latency_ms, call.truncated),
            (2, 1, 412, false)
        );
        assert_eq!(call.usage, Some(usage));
    }

    #[test]
    fn each_text_and_each_call_is_bounded_and_says_what_was_cut() {
        let r = Redactor::default();
        let rec = CallRecorder::new(&r, &json!({}), None, 1, "m");
        let big = "x".repeat(MAX_RECORDED_TEXT * 2);
        let mut messages: Vec<Value> = (0..MAX_RECORDED_MESSAGES + 5)
            .map(|_| json!({"role": "user", "content": big}))
            .collect();
        messages.insert(0, json!({"role": "system", "content": "short"}));
        let call = rec.call(id(), &messages, Err("timeout: no answer"), Duration::ZERO);
        assert!(call.truncated);
        assert_eq!(call.error.as_deref(), Some("timeout: no answer"));
        assert_eq!(call.messages[0].content, "short");
        let first = &call.messages[1].content;
        assert!(
            first.ends_with(&format!(
                "…[cut: {MAX_RECORDED_TEXT} of {} bytes recorded]",
                big.len()
            )),
            "{}",
            &first[first.len() - 60..]
        );
        let text: usize = call.messages.iter().map(|m| m.content.len()).sum();
        // The call's budget, plus the notes that say where texts were cut.
        assert!(
            text <= MAX_RECORDED_CALL + (MAX_RECORDED_MESSAGES + 1) * 64,
            "{text} bytes recorded"
        );
        assert_eq!(call.messages.len(), MAX_RECORDED_MESSAGES + 1);
        assert_eq!(
            call.messages.last().unwrap().content,
            "[cut: 6 more messages not recorded]"
        );
    }

    #[test]
    fn bad_redaction_settings_are_refused_naming_the_entry() {
        let errors =
            Redactor::new(&["ok".into(), " ".into()], &["a*".into(), "[".into()]).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["/redact/1", "/redact_patterns/0", "/redact_patterns/1"]
        );
        let many: Vec<String> = (0..=MAX_REDACT_ENTRIES).map(|i| format!("f{i}")).collect();
        assert_eq!(Redactor::new(&many, &[]).unwrap_err()[0].0, "/redact");
    }

    #[test]
    fn an_assistant_asking_for_tools_is_recorded_with_its_calls() {
        let m = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "code_lookup", "arguments": "{}"}}]});
        let (role, text) = role_and_text(&m);
        assert_eq!(role, "assistant");
        assert!(text.contains("code_lookup"), "{text}");
    }
}
