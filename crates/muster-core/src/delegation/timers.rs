//! The owner shard's timers: every deadline of every live task on the shard (attempt time
//! bounds, heartbeat checks, retry back-offs, lingering, waits on identical work) in one
//! ordered queue, so that the shard arms a single runtime timer (for the earliest) instead
//! of one per deadline.
//!
//! Owns the order in which due timers fire: by instant, then by the order they were set,
//! so the same inputs fire them in the same order on the paused clock (G6). It does not
//! know what a timer means: [`Due`] is handed back to the task's owner as it was set.

use std::collections::BTreeMap;

use tokio::time::{Duration, Instant};
use uuid::Uuid;

/// What a timer means to the owner that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// The attempt under lease `epoch` ran out of time.
    Attempt {
        /// The lease.
        epoch: u64,
    },
    /// Time to check that the agent holding lease `epoch` sent a heartbeat within `every`.
    Heartbeat {
        /// The lease.
        epoch: u64,
        /// The contract's heartbeat interval.
        every: Duration,
    },
    /// A failed attempt's back-off is over: lease again.
    Retry,
    /// The task ended and its lingering (for late answers) is over.
    Linger,
    /// The task waited on identical work in flight until its deadline.
    Follow,
}

/// A timer set, to cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TimerKey(Instant, u64);

/// Every timer of a shard, earliest first.
#[derive(Debug, Default)]
pub(super) struct Timers {
    queue: BTreeMap<(Instant, u64), (Uuid, Due)>,
    next: u64,
}

impl Timers {
    /// Sets a timer for `task` at `when`.
    pub(super) fn at(&mut self, when: Instant, task: Uuid, due: Due) -> TimerKey {
        self.next += 1;
        self.queue.insert((when, self.next), (task, due));
        TimerKey(when, self.next)
    }

    /// Cancels a timer (nothing if it fired already).
    pub(super) fn cancel(&mut self, key: TimerKey) {
        self.queue.remove(&(key.0, key.1));
    }

    /// When the earliest timer is due.
    pub(super) fn earliest(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|((at, _), _)| *at)
    }

    /// Takes the earliest timer if it is due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Uuid, Due)> {
        match self.queue.first_entry() {
            Some(e) if e.key().0 <= now => Some(e.remove()),
            _ => None,
        }
    }

    /// Timers set and not fired or cancelled.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_by_instant_then_in_the_order_they_were_set_and_cancelled_ones_never() {
        let mut t = Timers::default();
        let now = Instant::now();
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        t.at(now + Duration::from_secs(2), a, Due::Retry);
        t.at(now + Duration::from_secs(1), b, Due::Linger);
        let gone = t.at(now + Duration::from_secs(1), c, Due::Follow);
        t.at(now + Duration::from_secs(1), c, Due::Attempt { epoch: 1 });
        t.cancel(gone);
        assert_eq!(t.earliest(), Some(now + Duration::from_secs(1)));
        assert_eq!(t.pop_due(now), None, "nothing is due yet");
        let due: Vec<_> = std::iter::from_fn(|| t.pop_due(now + Duration::from_secs(1))).collect();
        assert_eq!(due, vec![(b, Due::Linger), (c, Due::Attempt { epoch: 1 })]);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.pop_due(now + Duration::from_secs(5)),
            Some((a, Due::Retry))
        );
        assert_eq!(t.earliest(), None);
    }
}
