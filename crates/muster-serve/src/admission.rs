//! Admission control: how much work a node takes on at once. Runs in flight on the node
//! (`--max-runs`) and bare tasks in flight submitted through the API (`--max-tasks`) are
//! bounded; beyond a bound `POST /v1/runs` or `POST /v1/tasks` is answered 429 with
//! `Retry-After`, and the refusal is counted (`muster_admission_refused_total`).
//!
//! It owns the bounds and the task slots. A slot is taken before a task is accepted and
//! given back when the task ends, so nothing accepted is ever dropped for want of room; the
//! run bound is checked by the node as it starts the run (see [`Node`](crate::Node)), on
//! the one thread that starts runs, against the runs it drives. It must not queue work:
//! a refused request is the client's to retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The default bound of runs in flight on a node.
pub const DEFAULT_MAX_RUNS: usize = 10_000;
/// The default bound of bare tasks in flight submitted through the API.
pub const DEFAULT_MAX_TASKS: usize = 10_000;
/// The largest bound either flag takes.
pub const MAX_BOUND: usize = 10_000_000;
/// What a refusal's `Retry-After` says, in seconds.
pub const RETRY_AFTER_SECS: u32 = 1;

/// The node's bounds.
///
/// # Example
/// ```
/// use muster_serve::admission::{Limits, DEFAULT_MAX_RUNS};
///
/// let l = Limits::default();
/// assert_eq!(l.max_runs, DEFAULT_MAX_RUNS);
/// let l = Limits { max_runs: 2, ..Limits::default() };
/// assert_eq!(l.max_runs, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Runs in flight on the node (started, resumed, taken over, waiting at a gate).
    pub max_runs: usize,
    /// Bare tasks in flight submitted through `POST /v1/tasks`.
    pub max_tasks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_runs: DEFAULT_MAX_RUNS,
            max_tasks: DEFAULT_MAX_TASKS,
        }
    }
}

/// Checks a bound given as `flag`'s value: a number from 1 to [`MAX_BOUND`].
///
/// # Example
/// ```
/// use muster_serve::admission::parse_bound;
///
/// assert_eq!(parse_bound("--max-runs", "2"), Ok(2));
/// assert!(parse_bound("--max-runs", "0").unwrap_err().contains("--max-runs"));
/// assert!(parse_bound("--max-tasks", "lots").is_err());
/// ```
pub fn parse_bound(flag: &str, value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_BOUND).contains(&n) => Ok(n),
        _ => Err(format!(
            "{flag} `{value}` must be a number from 1 to {MAX_BOUND}"
        )),
    }
}

/// Places for tasks in flight, at most `max`; a place is taken before a task is accepted
/// and given back when its [`Slot`] drops (when the task ends).
///
/// # Example
/// ```
/// use muster_serve::admission::Slots;
///
/// let s = Slots::new(1);
/// let one = s.take().unwrap();
/// assert!(s.take().is_none());
/// assert_eq!(s.in_use(), 1);
/// drop(one);
/// assert!(s.take().is_some());
/// ```
#[derive(Debug)]
pub struct Slots {
    used: Arc<AtomicUsize>,
    max: usize,
}

/// One place taken; dropping it gives it back.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slots {
    /// At most `max` places.
    pub fn new(max: usize) -> Self {
        Slots {
            used: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A place, if one is free (taken atomically: two callers never get the last one).
    pub fn take(&self) -> Option<Slot> {
        let mut n = self.used.load(Ordering::Acquire);
        loop {
            if n >= self.max {
                return None;
            }
            match self
                .used
                .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Slot(self.used.clone())),
                Err(now) => n = now,
            }
        }
    }

    /// Places taken now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// The node's admission state, shared by the handlers.
///
/// # Example
/// ```
/// use muster_serve::admission::{Admission, Limits};
///
/// let a = Admission::new(Limits { max_runs: 5, max_tasks: 1 });
/// let slot = a.tasks.take().unwrap();
/// assert!(a.tasks.take().is_none());
/// # drop(slot);
/// ```
#[derive(Debug)]
pub struct Admission {
    /// The bounds.
    pub limits: Limits,
    /// Bare tasks in flight submitted through the API.
    pub tasks: Slots,
}

impl Admission {
    /// The admission state for `limits`.
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits,
            tasks: Slots::new(limits.max_tasks),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_one_to_ten_million() {
        assert_eq!(parse_bound("--max-runs", "1"), Ok(1));
        assert_eq!(parse_bound("--max-runs", "10000000"), Ok(MAX_BOUND));
        for bad in ["0", "10000001", "-1", "", "1e3", "ten"] {
            let e = parse_bound("--max-tasks", bad).unwrap_err();
            assert!(
                e.contains("--max-tasks") && e.contains("1 to 10000000"),
                "{e}"
            );
        }
    }

    #[test]
    fn slots_are_never_over_given_under_contention() {
        let s = Arc::new(Slots::new(8));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || (0..100).filter_map(|_| s.take()).collect::<Vec<_>>())
            })
            .collect();
        let taken: Vec<Slot> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(taken.len(), 8);
        assert_eq!(s.in_use(), 8);
        drop(taken);
        assert_eq!(s.in_use(), 0);
    }
}
