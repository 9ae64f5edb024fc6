//! What every task owner shares: the router, the registry's name, the counters, the grace
//! an attempt gets past its deadline, the set of live tasks, the scope table and the
//! table of reusable work.
//!
//! It holds no owner and decides nothing about a task: the owners
//! ([`owner`](super::owner)) do, driven by their shard ([`shard`](super::shard)).

use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use uuid::Uuid;

use super::protocol::{Accepted, EndUnstarted};
use super::record::{TaskRecord, TaskStatus};
use super::reuse::Reuse;
use super::scope_table::ScopeTable;
use super::stats::Stats;
use crate::agents::AttemptReport;
use crate::discovery::Registry;
use crate::journal::Event;
use crate::routing::Router;
use crate::supervision::Named;

/// What every task owner works with.
pub(super) struct Shared {
    pub(super) router: Router,
    pub(super) registry: Named<Registry>,
    /// Tasks whose owner has not ended them yet, with the shard their owner runs on.
    pub(super) table: DashMap<Uuid, usize>,
    pub(super) stats: Stats,
    pub(super) grace: Duration,
    /// Started with the first task that declares a scope (tasks without one never use it).
    pub(super) scopes: std::sync::OnceLock<Addr<ScopeTable>>,
    pub(super) reuse: Reuse,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("live", &self.table.len())
            .finish()
    }
}

impl Shared {
    /// The owners' shared handles: they route through `router`, wait for agents on
    /// `registry`, and let an attempt run `grace` past its deadline.
    pub(super) fn new(router: Router, registry: Named<Registry>, grace: Duration) -> Self {
        Shared {
            router,
            registry,
            table: DashMap::new(),
            stats: Stats::default(),
            grace,
            scopes: std::sync::OnceLock::new(),
            reuse: Reuse::default(),
        }
    }

    /// The scope table, started on the current arbiter the first time it is needed.
    pub(super) fn scope_table(&self) -> &Addr<ScopeTable> {
        self.scopes
            .get_or_init(|| ScopeTable::new(self.router.recorder().clone()).start())
    }

    /// A result for a task no owner holds any more (it ended and stopped lingering):
    /// fenced and journaled as stale, like any answer to an ended task (G2).
    pub(super) fn stale_after_end(&self, r: &AttemptReport) {
        if r.result.is_ok() {
            self.stats.stale();
            self.router.recorder().record(Event::ResultStale {
                task: r.task_id,
                agent: r.agent.clone(),
                epoch: r.epoch,
                current_epoch: 0,
            });
        }
    }
}

/// Why a task whose owner never started ended (see [`EndUnstarted`]).
pub(super) const UNSTARTED: &str = "the runtime is shutting down: its task owners have stopped";

impl EndUnstarted for Shared {
    fn end_unstarted(&self, a: Accepted) {
        let recorder = self.router.recorder();
        let now = recorder.now_ms();
        // Journaled before the task leaves the table: once `live` reads 0, every end is
        // in the journal.
        recorder.record_at(
            now,
            Event::TaskCancelled {
                task: a.id,
                reason: UNSTARTED.into(),
            },
        );
        self.stats.ended(TaskStatus::Cancelled);
        self.table.remove(&a.id);
        let correlation = a.task.correlation.unwrap_or(a.id);
        let mut record = TaskRecord::new(a.id, a.task.capability, correlation, now);
        record.status = TaskStatus::Cancelled;
        record.ended_ms = Some(now);
        // The submitter may have dropped its handle: nobody to tell then.
        let _ = a.waiter.send(record);
    }
}
