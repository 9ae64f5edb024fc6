//! Task counters, kept as tasks move (cheap atomics read by `Muster::stats`).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::record::TaskStatus;

/// Counters of what happened to tasks, kept as they happen.
#[derive(Debug, Default)]
pub struct Stats {
    submitted: AtomicU64,
    completed: AtomicU64,
    escalated: AtomicU64,
    cancelled: AtomicU64,
    reassigned: AtomicU64,
    stale: AtomicU64,
    failed_attempts: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Tasks accepted.
    pub submitted: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Tasks escalated.
    pub escalated: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Reassignments to another agent.
    pub reassigned: u64,
    /// Results rejected as stale.
    pub stale_rejected: u64,
    /// Failed attempts.
    pub failed_attempts: u64,
}

impl Stats {
    pub(crate) fn submitted(&self) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn reassigned(&self) {
        self.reassigned.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn attempt_failed(&self) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn ended(&self, s: TaskStatus) {
        let c = match s {
            TaskStatus::Completed => &self.completed,
            TaskStatus::Escalated => &self.escalated,
            TaskStatus::Cancelled => &self.cancelled,
            _ => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            submitted: self.submitted.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            escalated: self.escalated.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            reassigned: self.reassigned.load(Ordering::Relaxed),
            stale_rejected: self.stale.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
        }
    }
}
