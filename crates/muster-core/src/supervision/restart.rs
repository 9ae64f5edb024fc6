//! Restart types, strategies, intensity settings and exit reasons.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When a child is restarted (OTP restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always restarted.
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit (error, panic, kill).
    Transient,
    /// Never restarted.
    Temporary,
}

/// Which children are restarted when one must be (OTP strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the failed child.
    #[default]
    OneForOne,
    /// All children: the others are stopped (reverse start order) and all restarted.
    OneForAll,
    /// The failed child and every child started after it.
    RestForOne,
}

/// A supervisor's settings.
///
/// # Example
/// ```
/// use muster_core::supervision::{Strategy, Supervision};
/// use std::time::Duration;
///
/// let s = Supervision { strategy: Strategy::RestForOne, intensity: 3, period: Duration::from_secs(5), ..Supervision::default() };
/// assert_eq!(s.intensity, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Supervision {
    /// Restart strategy.
    pub strategy: Strategy,
    /// Restarts allowed within `period`; one more and the supervisor escalates.
    pub intensity: u32,
    /// The sliding window for `intensity`.
    #[serde(with = "crate::util::duration")]
    pub period: Duration,
    /// Delay before each restart.
    #[serde(with = "crate::util::duration")]
    pub backoff: Duration,
    /// How long each child gets to stop before it is killed.
    #[serde(with = "crate::util::duration")]
    pub shutdown: Duration,
}

impl Default for Supervision {
    fn default() -> Self {
        // OTP's defaults are 1 restart in 5 s; agents crash more often than Erlang
        // processes, so the default allows more before an agent drops out.
        Supervision {
            strategy: Strategy::OneForOne,
            intensity: 5,
            period: Duration::from_secs(10),
            backoff: Duration::ZERO,
            shutdown: Duration::from_secs(5),
        }
    }
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "exit", content = "reason", rename_all = "snake_case")]
pub enum Exit {
    /// It finished by itself, normally.
    Normal,
    /// It was asked to stop and did.
    Shutdown,
    /// It failed with an error.
    Error(String),
    /// It panicked.
    Panic(String),
    /// It was killed (shutdown timeout, missed heartbeats, dropped without reporting).
    Killed(String),
}

impl Exit {
    /// Abnormal exits restart `transient` children; normal ones do not.
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, Exit::Normal | Exit::Shutdown)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Normal => f.write_str("normal"),
            Exit::Shutdown => f.write_str("shutdown"),
            Exit::Error(e) => write!(f, "error: {e}"),
            Exit::Panic(p) => write!(f, "panic: {p}"),
            Exit::Killed(k) => write!(f, "killed: {k}"),
        }
    }
}
