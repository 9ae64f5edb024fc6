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
