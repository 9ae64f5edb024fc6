//! Small shared helpers: human-readable durations in files (`"10s"`, `"250ms"`), the
//! process's resident memory (for reports that show memory stays bounded), and the one
//! bounded quote of a value in an error message or a journal record.

/// Serde for `Duration` as a humantime string (`"10s"`), or a number of milliseconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as `"10s"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Accepts `"10s"`, `"1m 30s"`, `"250ms"`, or an integer of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Millis(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => humantime::parse_duration(&t).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{t}` is not a duration ({e}); write e.g. \"10s\" or \"250ms\""
                ))
            }),
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        }
    }
}

/// Serde for `Option<Duration>`, as [`duration`].
pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// Serializes as `"10s"` or nothing.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// As [`super::duration::deserialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// The process's resident set now and its peak, in bytes (`VmRSS`, `VmHWM` of
/// `/proc/self/status`); `None` where that file does not exist (not Linux).
pub fn resident_memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |k: &str| {
        text.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// How much of a value an error message quotes.
pub const QUOTE_LIMIT: usize = 256;

/// The one bounded quote: `text` whole when it is at most [`QUOTE_LIMIT`] bytes, else its
/// first [`QUOTE_LIMIT`] bytes (cut at a character boundary) and its full size, so an
/// error or a journal record that echoes input stays small however large the input is.
/// Every message that quotes a value, a model's answer, an agent's line or its stderr
/// quotes it through this (or [`bounded_json`], [`bounded_message`]).
///
/// # Example
/// ```
/// use muster_core::util::bounded_text;
///
/// assert_eq!(bounded_text("short"), "short");
/// let big = "x".repeat(5 << 20);
/// let q = bounded_text(&big);
/// assert!(q.len() < 300 && q.ends_with("… (5242880 bytes)"));
/// ```
pub fn bounded_text(text: &str) -> std::borrow::Cow<'_, str> {
    match quote_head(text) {
        (_, None) => std::borrow::Cow::Borrowed(text),
        (head, Some(total)) => std::borrow::Cow::Owned(format!("{head}… ({total} bytes)")),
    }
}

/// What a bounded quote shows of `text`: all of it and `None`, or its first
/// [`QUOTE_LIMIT`] bytes (cut at a character boundary) and its full size in bytes. For a
/// caller that frames the head itself (`"head"… (N bytes)`); [`bounded_text`] is the
/// usual form.
///
/// # Example
/// ```
/// use muster_core::util::quote_head;
///
/// assert_eq!(quote_head("ok"), ("ok", None));
/// let text = "é".repeat(1000);
/// let (head, size) = quote_head(&text);
/// assert!(head.len() <= 256 && size == Some(2000));
/// ```
pub fn quote_head(text: &str) -> (&str, Option<usize>) {
    if text.len() <= QUOTE_LIMIT {
        return (text, None);
    }
    let mut end = QUOTE_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], Some(text.len()))
}

/// Bytes (an answer's body, a line an agent printed) quoted by [`bounded_text`], decoded
/// leniently; only the quoted prefix is decoded, and the size is the bytes' own.
///
/// # Example
/// ```
/// use muster_core::util::bounded_bytes;
///
/// assert_eq!(bounded_bytes(b"ab\xffc"), "ab\u{fffd}c");
/// assert!(bounded_bytes(&vec![b'x'; 5 << 20]).ends_with("… (5242880 bytes)"));
/// ```
pub fn bounded_bytes(bytes: &[u8]) -> String {
    match bytes_head(bytes) {
        (head, None) => head.into_owned(),
        (head, Some(total)) => format!("{head}… ({total} bytes)"),
    }
}

/// [`quote_head`] of bytes: the leniently decoded prefix a bounded quote shows, and the
/// bytes' full size when they were cut (only the prefix is decoded).
pub fn bytes_head(bytes: &[u8]) -> (std::borrow::Cow<'_, str>, Option<usize>) {
    if bytes.len() <= QUOTE_LIMIT {
        return (String::from_utf8_lossy(bytes), None);
    }
    let head = String::from_utf8_lossy(&bytes[..QUOTE_LIMIT]);
    // A character cut at the limit decodes to U+FFFD at the end: drop it.
    let kept = head.trim_end_matches('\u{fffd}').len();
    let head = match head {
        std::borrow::Cow::Borrowed(h) => std::borrow::Cow::Borrowed(&h[..kept]),
        std::borrow::Cow::Owned(mut h) => {
            h.truncate(kept);
            std::borrow::Cow::Owned(h)
        }
    };
    (head, Some(bytes.len()))
}

/// `v` as compact JSON, quoted by [`bounded_text`].
pub fn bounded_json(v: &serde_json::Value) -> String {
    bounded_text(&v.to_string()).into_owned()
}

/// `message` with the value it quotes bounded: a validator's message that holds `value`'s
/// whole JSON (`"xxxx…" is longer than 10 characters`) gets it replaced by
/// [`bounded_json`]; a message that quotes it otherwise is cut as a whole by
/// [`bounded_text`].
///
/// # Example
/// ```
/// use muster_core::util::bounded_message;
/// use serde_json::json;
///
/// let v = json!("y".repeat(1 << 20));
/// let m = bounded_message(&format!("{v} is longer than 10 characters"), &v);
/// assert!(m.len() < 400 && m.ends_with("bytes) is longer than 10 characters"));
/// ```
pub fn bounded_message(message: &str, value: &serde_json::Value) -> String {
    if message.len() <= QUOTE_LIMIT {
        return message.to_string();
    }
    let whole = value.to_string();
    if whole.len() > QUOTE_LIMIT
        && let Some(at) = message.find(&whole)
    {
        let rest = bounded_text(&message[at + whole.len()..]).into_owned();
        return format!(
            "{}{}{rest}",
            bounded_text(&message[..at]),
            bounded_text(&whole)
        );
    }
    bounded_text(message).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_value_is_quoted_by_a_bounded_prefix_with_its_size() {
        let small = serde_json::json!({"a": 1});
        assert_eq!(bounded_json(&small), r#"{"a":1}"#);
        let big = serde_json::json!({"s": "é".repeat(10_000)});
        let q = bounded_json(&big);
        assert!(q.len() < QUOTE_LIMIT + 32, "{}", q.len());
        assert!(q.ends_with(&format!("({} bytes)", big.to_string().len())));
    }

    #[test]
    fn a_message_keeps_its_words_around_a_bounded_value() {
        let v = serde_json::json!({"s": "z".repeat(100_000)});
        let m = bounded_message(&format!("{v} is not of type \"string\""), &v);
        assert!(m.len() < 2 * QUOTE_LIMIT, "{}", m.len());
        assert!(m.ends_with("bytes) is not of type \"string\""), "{m}");
        // A message quoting the value some other way is cut as a whole.
        let m = bounded_message(&format!("got {:?}", "q".repeat(100_000)), &v);
        assert!(
            m.len() < QUOTE_LIMIT + 32 && m.starts_with("got \"qqq"),
            "{m}"
        );
        // Short messages are untouched.
        assert_eq!(bounded_message("too short", &v), "too short");
    }
}
