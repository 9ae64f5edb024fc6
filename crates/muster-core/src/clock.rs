//! The runtime clock: Unix milliseconds derived from tokio's clock.
//!
//! Every timestamp the runtime writes (envelopes, journal records) comes from here, so a
//! simulation on tokio's paused clock stamps virtual time and stays reproducible (G6),
//! while a live runtime stamps real time. It never reads the wall clock twice per event.

use tokio::time::Instant;

/// Converts tokio instants into Unix milliseconds from a fixed origin.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_unix_ms: u64,
}

impl Clock {
    /// A clock anchored at the current wall time (live runtimes).
    pub fn system() -> Self {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            origin: Instant::now(),
            origin_unix_ms: unix,
        }
    }

    /// A clock anchored at a fixed Unix time (simulations: the same for every run).
    pub fn fixed(origin_unix_ms: u64) -> Self {
        Clock {
            origin: Instant::now(),
            origin_unix_ms,
        }
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.at_ms(Instant::now())
    }

    /// An instant, in Unix milliseconds.
    pub fn at_ms(&self, at: Instant) -> u64 {
        self.origin_unix_ms + at.saturating_duration_since(self.origin).as_millis() as u64
    }
}
