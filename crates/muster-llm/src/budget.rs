//! The rate budgets of a provider: token buckets that refill continuously, one for
//! requests per minute and one for tokens per minute. Pure arithmetic over the instants it
//! is given, so it is tested without a clock; the provider actor owns the instances.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket holding at most one minute's allowance, refilled at `per_minute / 60`
/// per second. A request larger than the whole bucket waits for a full bucket and then
/// takes it (so no request waits forever).
///
/// # Example
/// ```
/// use std::time::Duration;
/// use muster_llm::RateBudget;
/// use tokio::time::Instant;
///
/// let t0 = Instant::now();
/// let mut b = RateBudget::per_minute(60, t0); // one a second, up to 60 at once
/// for _ in 0..60 { assert!(b.take(1, t0).is_ok()); }
/// assert_eq!(b.take(1, t0), Err(Duration::from_secs(1)));
/// assert!(b.take(1, t0 + Duration::from_secs(1)).is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateBudget {
    capacity: f64,
    level: f64,
    per_sec: f64,
    at: Instant,
}

impl RateBudget {
    /// A full bucket of `per_minute` (at least 1) at `now`.
    pub fn per_minute(per_minute: u64, now: Instant) -> Self {
        let capacity = per_minute.max(1) as f64;
        RateBudget {
            capacity,
            level: capacity,
            per_sec: capacity / 60.0,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.per_sec).min(self.capacity);
        self.at = self.at.max(now);
    }

    /// Takes `n` now, or says how long until it can be taken.
    pub fn take(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let need = (n as f64).min(self.capacity);
        if self.level + 1e-9 >= need {
            self.level -= n as f64; // may go below 0 for an oversized request: paid back later
            return Ok(());
        }
        let secs = (need - self.level) / self.per_sec;
        // Rounded up to the millisecond so a wait of that length always suffices.
        Err(Duration::from_millis((secs * 1000.0).ceil() as u64).max(Duration::from_millis(1)))
    }

    /// Gives back `n` (an estimate that was higher than what was spent) or takes more (a
    /// negative `n`: it was lower).
    pub fn settle(&mut self, n: i64, now: Instant) {
        self.refill(now);
        self.level = (self.level + n as f64).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_continuously_and_never_above_a_minute() {
        let t0 = Instant::now();
        let mut b = RateBudget::per_minute(600, t0);
        for _ in 0..600 {
            b.take(1, t0).unwrap();
        }
        assert_eq!(b.take(1, t0), Err(Duration::from_millis(100)));
        b.take(1, t0 + Duration::from_millis(100)).unwrap();
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..600 {
            b.take(1, later).unwrap();
        }
        assert!(b.take(1, later).is_err());
    }

    #[test]
    fn an_oversized_request_waits_for_a_full_bucket_then_goes() {
        let t0 = Instant::now();
        let mut b = RateBudget::per_minute(100, t0);
        b.take(50, t0).unwrap();
        let wait = b.take(1000, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(30));
        b.take(1000, t0 + wait).unwrap();
        // It went into debt: the next request waits for the debt to be paid back.
        assert!(b.take(1, t0 + wait).is_err());
    }

    #[test]
    fn settling_returns_an_overestimate() {
        let t0 = Instant::now();
        let mut b = RateBudget::per_minute(100, t0);
        b.take(100, t0).unwrap();
        b.settle(40, t0);
        assert!(b.take(40, t0).is_ok());
        assert!(b.take(1, t0).is_err());
    }
}
