//! Recording an attempt's model calls (`[backend] record = "prompts"`): each call's
//! messages and raw answer become a [`ModelCall`] for the journal, redacted and bounded
//! here, before anything is written.
//!
//! Redaction ([`Redactor`]) comes first, then the bounds, so the recorder's cut never
//! leaves half a secret behind (and a text that reaches it already cut by a bounded quote,
//! such as the repair feedback, has what is left of a secret before the cut redacted):
//! - `redact` names fields: every string or number value of a field of that name, at any
//!   depth of the task's input or of any JSON text of the call (a tool's answer, a tool
//!   call's arguments, the model's answer), is replaced by [`REDACTED`] wherever it occurs
//!   in the recorded text, as it is or JSON-escaped; and the value of such a field in any
//!   JSON a recorded text holds is replaced whatever it is (a boolean too);
//! - `redact_patterns` are regular expressions: every match is replaced by [`REDACTED`],
//!   and so is every other occurrence of a matched text, escaped or not;
//! - the API key's value is always redacted; headers are never recorded.
//!
//! Bounds: each text (a message, the answer, the error) at most [`MAX_RECORDED_TEXT`]
//! bytes, a call at most [`MAX_RECORDED_CALL`] bytes of text and [`MAX_RECORDED_MESSAGES`]
//! messages. A cut text ends with `…[cut: N of M bytes recorded]` and marks the call
//! `truncated`. This module must not journal or send anything: it only shapes the record.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use muster_core::journal::{CallMessage, ModelCall, TurnKind, Usage};

mod escaped;
mod redact;

pub use redact::{MAX_REDACT_ENTRIES, REDACTED, Redactor, Secrets};

/// The most bytes of one recorded text (a message, the answer, the error).
pub const MAX_RECORDED_TEXT: usize = 16 * 1024;
/// The most bytes of text one recorded call holds, all its texts together.
pub const MAX_RECORDED_CALL: usize = 64 * 1024;
/// The most messages one recorded call holds; the rest are counted in a last one.
pub const MAX_RECORDED_MESSAGES: usize = 64;

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
    secrets: Secrets,
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
        if let Some(k) = api_key {
            secrets.add(k);
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
        // The secrets of every text of this call (the named fields' values in a tool's
        // answer, in a tool call's arguments, in the model's answer; the patterns'
        // matches) are hidden in all its texts.
        let mut secrets = self.secrets.clone();
        let (answer, error) = match outcome {
            Ok((a, _)) => (Some(a), None),
            Err(e) => (None, Some(e)),
        };
        for t in texts
            .iter()
            .map(|(_, t)| t.as_str())
            .chain(answer)
            .chain(error)
        {
            self.redactor.secrets_in_text(t, &mut secrets);
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

    /// Every text of a recorded call, joined.
    fn recorded(call: &ModelCall) -> String {
        let mut all: Vec<&str> = call.messages.iter().map(|m| m.content.as_str()).collect();
        all.extend(call.answer.as_deref());
        all.extend(call.error.as_deref());
        all.join("\n")
    }

    /// `s` as the inside of a JSON string, `n` times over.
    fn escaped(s: &str, n: usize) -> String {
        let mut t = s.to_string();
        for _ in 0..n {
            let q = Value::String(t).to_string();
            t = q[1..q.len() - 1].to_string();
        }
        t
    }

    /// `s` as the inside of a JSON string written by an encoder that escapes every
    /// character outside printable ASCII as `\uXXXX` (Python's `json.dumps`).
    fn ascii_escaped(s: &str) -> String {
        let mut out = String::new();
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                ' '..='~' => out.push(c),
                _ => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
        }
        out
    }

    /// Every form `secret` can take in a recorded text: as is, JSON-escaped by serde_json,
    /// by minijinja's `tojson` (`<`, `>`, `&`, `'` as `\u00XX`), in ASCII-only JSON, and
    /// each of those escaped once more (a JSON text inside a JSON string).
    fn forms(secret: &str) -> Vec<String> {
        let tojson = |s: &str| {
            escaped(s, 1)
                .replace('<', "\\u003c")
                .replace('>', "\\u003e")
                .replace('&', "\\u0026")
                .replace('\'', "\\u0027")
        };
        let once = [
            secret.to_string(),
            escaped(secret, 1),
            tojson(secret),
            ascii_escaped(secret),
        ];
        let mut all = once.to_vec();
        all.extend(once.iter().skip(1).map(|f| escaped(f, 1)));
        all
    }

    #[test]
    fn tool_call_arguments_and_tool_results_are_redacted() {
        let r = Redactor::new(&["password".into(), "admin".into()], &[]).unwrap();
        let input = json!({"user": "ana", "password": "in\"put<pw"});
        let rec = CallRecorder::new(&r, &input, None, 1, "m");
        // The model asked for a tool with the input's password and one of its own; the tool
        // answered with another; then the model asks again with the tool's.
        let args = json!({"user": "ana", "password": "in\"put<pw", "admin": true,
                          "note": "{\"password\": \"model-pw\"}"})
        .to_string();
        let assistant = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "login", "arguments": args}}]});
        let messages = [
            json!({"role": "user", "content": "log ana in"}),
            assistant,
            json!({"role": "tool", "tool_call_id": "c1",
                   "content": json!({"password": "tool-pw", "ok": true}).to_string()}),
        ];
        let again = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "login",
             "arguments": json!({"password": "tool-pw", "retry": 1}).to_string()}}]})
        .to_string();
        let usage = Usage::known("m", 1, 1);
        let call = rec.call(id(), &messages, Ok((&again, &usage)), Duration::ZERO);
        let all = recorded(&call);
        for secret in ["in\"put<pw", "model-pw", "tool-pw"] {
            for f in forms(secret) {
                assert!(!all.contains(&f), "{f} recorded: {all}");
            }
        }
        // The boolean value of a named field is gone too, the rest is kept.
        assert!(!all.contains(r#"\"admin\":true"#), "{all}");
        assert!(all.contains(r#"\"admin\":\"[redacted]\""#), "{all}");
        assert!(all.contains(r#"\"user\":\"ana\""#), "{all}");
        assert!(all.contains(r#""ok":true"#), "{all}");
    }

    #[test]
    fn a_secret_cut_by_the_repair_feedback_leaves_no_part_in_the_record() {
        let r = Redactor::new(&["api_key".into()], &[]).unwrap();
        let secret = "hunter2-very-secret-value";
        let input = json!({"title": "crash", "api_key": secret});
        let rec = CallRecorder::new(&r, &input, None, 1, "m");
        let schemas = muster_core::messaging::SchemaStore::new();
        schemas
            .add(
                "s",
                json!({"type": "object", "properties": {"note": {"maxLength": 8}}}),
            )
            .unwrap();
        let schema = schemas.get("s").unwrap();
        // The cut of a bounded quote (256 bytes) falls inside the secret, at every offset:
        // in an answer that is not JSON, and in one whose field the schema refuses.
        for pad in 230..256 {
            let prose = format!("{} {secret} and more", "x".repeat(pad));
            let json =
                json!({"note": format!("{} {secret} and more", "x".repeat(pad))}).to_string();
            let not_json = crate::json_in(&prose).unwrap_err().to_string();
            let invalid = schema
                .validate(&serde_json::from_str(&json).unwrap())
                .unwrap_err()
                .to_string();
            for (answer, feedback) in [(&prose, not_json), (&json, invalid)] {
                assert!(feedback.contains("bytes)"), "{feedback}");
                let mut messages = vec![json!({"role": "user", "content": "triage"})];
                messages.extend(crate::repair_turn(answer, &feedback));
                let usage = Usage::known("m", 1, 1);
                let call = rec.call(id(), &messages, Ok(("{}", &usage)), Duration::ZERO);
                let fed_back = &call.messages[2].content;
                for k in 2..=secret.len() {
                    assert!(
                        !fed_back.contains(&format!(" {}…", &secret[..k])),
                        "{} recorded: {fed_back}",
                        &secret[..k]
                    );
                }
                assert!(!recorded(&call).contains("hunter2"), "{}", recorded(&call));
            }
        }
    }

    #[test]
    fn an_error_quoting_a_cut_secret_is_redacted() {
        let r = Redactor::new(&[], &[]).unwrap();
        let key = "sk-live-0123456789abcdef";
        let rec = CallRecorder::new(&r, &json!({}), Some(key), 1, "m");
        // A server that echoes the request's key in its error, quoted by a bounded quote.
        let body = format!("{}{key}", "e".repeat(250));
        let error = format!(
            "refused: HTTP 400: {}",
            muster_core::util::bounded_text(&body)
        );
        let call = rec.call(id(), &[], Err(&error), Duration::ZERO);
        let recorded = call.error.unwrap();
        assert!(!recorded.contains("sk-li"), "{recorded}");
        assert!(recorded.ends_with("[redacted]… (274 bytes)"), "{recorded}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// A secret with quotes, backslashes, control and non-ASCII characters, rendered
        /// into the prompt as is and through `tojson`, echoed by a tool and by the model,
        /// never reaches the record in any encoding; the text around it does.
        #[test]
        fn a_secret_never_reaches_the_record_in_any_json_encoding(
            body in proptest::collection::vec(proptest::prop_oneof![
                proptest::char::range('a', 'z'),
                proptest::sample::select(vec!['"', '\\', '/', '<', '>', '&', '\'', '\n', '\t',
                    '\u{0}', '\u{1f}', '\u{7f}', 'é', 'ß', '…', '中', '😀', '\u{2028}', ' ']),
            ], 1..24),
            pin in 10_000u64..u64::from(u32::MAX),
        ) {
            // `S` opens every secret and is nowhere else in the texts, so a leftover is
            // the secret's, never a coincidence.
            let secret: String = std::iter::once('S').chain(body).collect();
            let r = Redactor::new(&["api_key".into(), "pin".into()], &[]).unwrap();
            let input = json!({"title": "crash on start", "api_key": secret, "pin": pin});
            let prompts = crate::Prompts::compile(None,
                "title {{ input.title }}; key {{ input.api_key }}; pin {{ input.pin }}; \
                 as json {{ input | tojson }}; key as json {{ input.api_key | tojson }}; \
                 pretty {{ input | tojson(indent=2) }}").unwrap();
            let vars = crate::PromptVars { input: &input, capability: "triage",
                task: "t".into(), attempt: 1, feedback: "" };
            let (_, user) = prompts.render(&vars).unwrap();
            let args = json!({"query": input}).to_string();
            let messages = [
                json!({"role": "user", "content": user}),
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c",
                    "type": "function", "function": {"name": "look", "arguments": args}}]}),
                json!({"role": "tool", "tool_call_id": "c",
                       "content": json!({"echo": input}).to_string()}),
            ];
            let answer = json!({"component": "ui", "said": secret, "n": pin}).to_string();
            let usage = Usage::known("m", 1, 1);
            let rec = CallRecorder::new(&r, &input, None, 1, "m");
            let call = rec.call(id(), &messages, Ok((&answer, &usage)), Duration::ZERO);
            let all = recorded(&call);
            for f in forms(&secret) {
                proptest::prop_assert!(!all.contains(&f), "{:?} recorded: {}", f, all);
            }
            let pin = pin.to_string();
            for (i, _) in all.match_indices(&pin) {
                let before = all[..i].chars().next_back().is_some_and(|c| c.is_ascii_digit());
                let after = all[i + pin.len()..].starts_with(|c: char| c.is_ascii_digit());
                proptest::prop_assert!(before || after, "the pin {} recorded: {}", pin, all);
            }
            proptest::prop_assert!(all.contains("title crash on start; key [redacted]"), "{}", all);
            proptest::prop_assert!(all.contains(r#""title":"crash on start""#), "{}", all);
        }
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
