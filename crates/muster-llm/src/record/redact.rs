//! Redaction of recorded texts: which values are secret ([`Secrets`], gathered from the
//! task's input and every text of a call) and their replacement by [`REDACTED`] in every
//! form they can take in a recorded text.
//!
//! A secret is found as it is, JSON-escaped one to three times over (any escape a JSON
//! encoder may choose: `\"`, `\u0022`, minijinja's `\u003c` for `<`, surrogate pairs), and,
//! where a bounded quote cut it (`… (N bytes)`, `…[cut: ...]`), up to the cut; the value
//! of a field named in `redact` is replaced whatever it is (string, number, boolean,
//! object) wherever a JSON text in the record holds that field. It must not bound or
//! journal anything (the recorder does).

use std::collections::HashSet;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::escaped;

/// The most entries of `redact`, and of `redact_patterns`.
pub const MAX_REDACT_ENTRIES: usize = 64;
/// The most bytes of one compiled `redact_patterns` entry (the regex crate's size limit).
const MAX_PATTERN_SIZE: usize = 1 << 20;
/// What replaces a redacted value.
pub const REDACTED: &str = "[redacted]";
/// How deep JSON texts inside strings are read for secrets (a tool call's arguments in
/// the recorded tool-call message are one level down).
const MAX_NESTED_JSON: u8 = 4;

/// The values a call's record must not hold: strings, and numbers (matched only whole).
///
/// # Example
/// ```
/// use muster_llm::{Redactor, Secrets};
/// use serde_json::json;
///
/// let r = Redactor::new(&["pin".into()], &[]).unwrap();
/// let mut s: Secrets = r.secrets_in(&json!({"pin": 4711, "user": "ana"}));
/// s.add("sk-live-key");
/// assert_eq!(s.len(), 2);
/// assert_eq!(r.redact("pin 4711, key sk-live-key, id 47110", &s), "pin [redacted], key [redacted], id 47110");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    strings: Vec<String>,
    numbers: Vec<String>,
    seen: HashSet<String>,
}

impl Secrets {
    /// Adds a string value (an empty one is no secret).
    pub fn add(&mut self, value: &str) {
        if !value.is_empty() && self.seen.insert(value.to_string()) {
            self.strings.push(value.to_string());
        }
    }

    /// Adds a number, found only where it stands whole (no digit right before or after).
    fn add_number(&mut self, n: &serde_json::Number) {
        let text = n.to_string();
        if self.seen.insert(format!("#{text}")) {
            self.numbers.push(text);
        }
    }

    /// Adds every value of `other`.
    pub fn extend(&mut self, other: &Secrets) {
        for s in &other.strings {
            self.add(s);
        }
        for n in &other.numbers {
            if self.seen.insert(format!("#{n}")) {
                self.numbers.push(n.clone());
            }
        }
    }

    /// How many values.
    pub fn len(&self) -> usize {
        self.strings.len() + self.numbers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
/// let input = json!({"title": "login fails", "api_key": "hunter2-\"secret\""});
/// let secrets = r.secrets_in(&input);
/// // As a template wrote it, and JSON-encoded (`tojson`): both are found.
/// let text = format!("key hunter2-\"secret\", input {input}, token sk-abcdefgh1234");
/// assert_eq!(
///     r.redact(&text, &secrets),
///     format!(r#"key {REDACTED}, input {{"api_key":"{REDACTED}","title":"login fails"}}, token {REDACTED}"#)
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

    /// Whether this redactor hides nothing but the secrets it is given (no field names,
    /// no patterns).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.patterns.is_empty()
    }

    /// The secrets of `value`: the string and number values of the named fields at any
    /// depth (also inside a string holding a JSON text, such as a tool call's arguments),
    /// and every match of a pattern in any of its strings.
    pub fn secrets_in(&self, value: &Value) -> Secrets {
        let mut out = Secrets::default();
        if !self.is_empty() {
            self.collect(value, false, MAX_NESTED_JSON, &mut out);
        }
        out
    }

    /// Adds the secrets of a recorded text to `out`: those of the JSON value it is (if it
    /// is one), the values of the named fields in any JSON it holds (also escaped, also
    /// in prose), and the patterns' matches.
    pub fn secrets_in_text(&self, text: &str, out: &mut Secrets) {
        if self.is_empty() {
            return;
        }
        if let Some(v) = json_of(text) {
            self.collect(&v, false, MAX_NESTED_JSON, out);
        }
        for m in escaped::members(text, &self.fields) {
            if let Some(v) = m.json.as_deref().and_then(|j| serde_json::from_str(j).ok()) {
                self.collect(&v, true, MAX_NESTED_JSON, out);
            }
        }
        for re in &self.patterns {
            for m in re.find_iter(text) {
                out.add(m.as_str());
            }
        }
    }

    fn collect(&self, v: &Value, inside: bool, nested: u8, out: &mut Secrets) {
        match v {
            Value::String(s) => {
                if inside {
                    out.add(s);
                }
                for re in &self.patterns {
                    for m in re.find_iter(s) {
                        out.add(m.as_str());
                    }
                }
                if nested > 0
                    && let Some(inner) = json_of(s)
                {
                    self.collect(&inner, inside, nested - 1, out);
                }
            }
            Value::Number(n) if inside => out.add_number(n),
            Value::Array(items) => items
                .iter()
                .for_each(|i| self.collect(i, inside, nested, out)),
            Value::Object(map) => {
                for (k, item) in map {
                    let named = inside || self.fields.iter().any(|f| f == k);
                    self.collect(item, named, nested, out);
                }
            }
            _ => {}
        }
    }

    /// `text` with every occurrence of a secret (as it is, JSON-escaped, or cut by a
    /// bounded quote), the value of every named field in any JSON it holds, and every
    /// match of a pattern replaced by [`REDACTED`].
    pub fn redact(&self, text: &str, secrets: &Secrets) -> String {
        // Byte ranges to replace, and by what.
        let mut spans: Vec<(usize, usize, Option<String>)> = Vec::new();
        for m in escaped::members(text, &self.fields) {
            // A whole value keeps its JSON shape: a string in its place, escaped as the
            // text around it is.
            let with = m.whole.then(|| quoted(m.depth));
            spans.push((m.start, m.end, with));
        }
        let wanted: Vec<escaped::Wanted<'_>> = secrets
            .strings
            .iter()
            .map(|s| escaped::Wanted {
                text: s,
                number: false,
            })
            .chain(secrets.numbers.iter().map(|n| escaped::Wanted {
                text: n,
                number: true,
            }))
            .collect();
        spans.extend(
            escaped::occurrences(text, &wanted)
                .into_iter()
                .map(|(a, b)| (a, b, None)),
        );
        let mut out = replace(text, spans);
        for re in &self.patterns {
            if let std::borrow::Cow::Owned(s) = re.replace_all(&out, REDACTED) {
                out = s;
            }
        }
        out
    }
}

/// `"[redacted]"` as a JSON string `depth` layers of escaping down.
fn quoted(depth: u8) -> String {
    let mut t = format!("\"{REDACTED}\"");
    for _ in 0..depth {
        let q = Value::String(t).to_string();
        t = q[1..q.len() - 1].to_string();
    }
    t
}

/// `text` with each range replaced: ranges that overlap are merged and replaced by
/// [`REDACTED`]; a range alone by its own replacement, if it has one.
fn replace(text: &str, mut spans: Vec<(usize, usize, Option<String>)>) -> String {
    if spans.is_empty() {
        return text.to_string();
    }
    spans.sort_by_key(|s| (s.0, std::cmp::Reverse(s.1)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut i = 0;
    while i < spans.len() {
        let (start, mut end, mut with) = spans[i].clone();
        i += 1;
        while i < spans.len() && spans[i].0 < end {
            if spans[i].1 > end {
                end = spans[i].1;
                with = None;
            }
            i += 1;
        }
        out.push_str(&text[at..start]);
        out.push_str(with.as_deref().unwrap_or(REDACTED));
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// The JSON value a text is, if it looks like one (an object or array, maybe in a
/// Markdown code fence).
fn json_of(text: &str) -> Option<Value> {
    let t = text.trim_start();
    if !(t.starts_with('{') || t.starts_with('[') || t.starts_with("```")) {
        return None;
    }
    crate::json_in(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn number_and_boolean_values_of_named_fields_are_redacted() {
        let r = Redactor::new(&["pin".into(), "admin".into()], &[]).unwrap();
        let input = json!({"user": "ana", "pin": 4711, "admin": true, "n": 4711});
        let secrets = r.secrets_in(&input);
        // The template wrote the pin in prose and the input as JSON.
        let text = format!("pin {}, id 47110; input {input}", input["pin"]);
        assert_eq!(
            r.redact(&text, &secrets),
            r#"pin [redacted], id 47110; input {"admin":"[redacted]","n":[redacted],"pin":"[redacted]","user":"ana"}"#
        );
    }

    #[test]
    fn a_pattern_match_is_found_in_its_escaped_forms() {
        let r = Redactor::new(&[], &[r#"pw="[^"]+""#.into()]).unwrap();
        let input = json!({"note": "login with pw=\"x<y\""});
        let secrets = r.secrets_in(&input);
        let text = format!("raw: {}; as JSON: {input}", input["note"].as_str().unwrap());
        let text = format!(
            "{text}; as tojson: {}",
            input.to_string().replace('<', "\\u003c")
        );
        assert_eq!(
            r.redact(&text, &secrets),
            r#"raw: login with [redacted]; as JSON: {"note":"login with [redacted]"}; as tojson: {"note":"login with [redacted]"}"#
        );
    }
}
