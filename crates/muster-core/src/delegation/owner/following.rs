//! Reuse of identical idempotent work: an accepted result ends the task at once, a task
//! in flight is followed until it ends.

use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use super::super::record::TaskStatus;
use super::super::reuse::{Found, ReuseKey, Reused};
use super::super::timers::Due;
use super::phase::Phase;
use super::{Cx, TaskOwner};
use crate::journal::Event;

impl TaskOwner {
    /// An idempotent task first looks for identical work: an accepted result ends it at
    /// once (`task_reused`), a task in flight takes it on as a follower. True when it
    /// must not run now.
    pub(super) fn try_reuse(&mut self, cx: &mut dyn Cx) -> bool {
        let Some(c) = self.contract.as_ref().filter(|c| c.spec.idempotent) else {
            return false;
        };
        let key = ReuseKey::new(&c.name, &c.spec.version, &self.task.input);
        match cx.find_or_run(&key, &self.task.input, self.record.id) {
            Found::Done { task, output } => {
                self.reused(task, output, cx);
                true
            }
            Found::InFlight(leader) => {
                tracing::debug!(task = %self.record.id, %leader, "attached to an identical task in flight");
                // Bounded like any wait: past the deadline the task escalates.
                let timer = cx.arm(self.deadline, self.record.id, Due::Follow);
                self.enter(Phase::Following { leader, timer }, cx);
                true
            }
            Found::Run => {
                self.reuse_key = Some(key);
                false
            }
        }
    }

    pub(super) fn reused(&mut self, original: Uuid, output: Arc<Value>, cx: &mut dyn Cx) {
        let reused = self.recorder.record(Event::TaskReused {
            task: self.record.id,
            original,
            output: output.clone(),
        });
        self.record.output = Some(output);
        self.finish(TaskStatus::Completed, reused, cx);
    }

    /// The identical task this one follows ended.
    pub(crate) fn on_reused(&mut self, r: Reused, cx: &mut dyn Cx) {
        if !matches!(self.phase, Phase::Following { leader, .. } if leader == r.original) {
            return;
        }
        self.enter(Phase::Pending, cx);
        match r.output {
            Some(output) => self.reused(r.original, output, cx),
            // The task it attached to ended without a result: this one runs (or attaches
            // to another identical task that started since).
            None => {
                if !self.try_reuse(cx) {
                    self.acquire_then_lease(cx);
                }
            }
        }
    }
}
