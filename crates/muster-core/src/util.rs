//! Small shared helpers: human-readable durations in files (`"10s"`, `"250ms"`), and the
//! process's resident memory (for reports that show memory stays bounded).

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

/// `v` as compact JSON, cut to its first [`QUOTE_LIMIT`] bytes (at a character boundary)
/// with its full size appended when longer, so an error that echoes input stays small
/// however large the input is.
pub fn bounded_json(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if text.len() <= QUOTE_LIMIT {
        return text;
    }
    let mut end = QUOTE_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
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
}
