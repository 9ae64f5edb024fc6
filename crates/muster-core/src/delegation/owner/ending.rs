//! The task's end: escalation, cancellation and completion all end here, once (G1), and
//! the owner then lingers for the leases still to answer; an owner dropped before its task
//! ended escalates it (nothing is lost silently).

use std::time::Duration;

use super::super::record::{Escalation, LeaseOutcome, TaskStatus};
use super::super::task::Exhausted;
use super::super::timers::Due;
use super::super::written::Pending;
use super::phase::Phase;
use super::{Cx, TaskOwner};
use crate::journal::Event;
use crate::messaging::DEFAULT_REUSE_FOR;

impl TaskOwner {
    pub(super) fn escalate(&mut self, reason: String, cx: &mut dyn Cx) {
        let to = match &self.task.on_exhausted {
            Exhausted::Fail => "dead_letter".to_string(),
            Exhausted::Gate(g) => g.clone(),
        };
        tracing::info!(task = %self.record.id, %to, %reason, "task escalated");
        let escalated = self.recorder.record(Event::TaskEscalated {
            task: self.record.id,
            to: to.clone(),
            reason: reason.clone(),
        });
        self.record.escalation = Some(Escalation { to, reason });
        self.finish(TaskStatus::Escalated, escalated, cx);
    }

    /// Ends the task with `status`, whose terminal record is `terminal` (its sequence
    /// number): the outcome goes to its caller once that record is written.
    pub(super) fn finish(&mut self, status: TaskStatus, terminal: u64, cx: &mut dyn Cx) {
        // Whatever it waited on is over (a lease was ended before).
        self.enter(Phase::Done, cx);
        self.record.status = status;
        self.record.ended_ms = Some(self.recorder.now_ms());
        self.owners.stats.ended(status);
        self.owners.table.remove(&self.record.id);
        self.release_scope();
        if let Some(key) = self.reuse_key.take() {
            let keep = self
                .contract
                .as_ref()
                .and_then(|c| c.spec.reuse_for)
                .unwrap_or(DEFAULT_REUSE_FOR);
            let output = self
                .record
                .output
                .as_ref()
                .filter(|_| status == TaskStatus::Completed);
            self.owners.reuse.finish(&key, self.record.id, output, keep);
        }
        if let Some(w) = self.waiter.take() {
            // With no lease left to answer, nothing reads the record again but `done()`:
            // hand the output and the history over instead of copying them.
            let record = if self.outstanding.is_empty() {
                let mut shell = self.record.clone_header();
                std::mem::swap(&mut shell, &mut self.record);
                shell
            } else {
                self.record.clone()
            };
            // Nothing is acknowledged before it is written: the outcome goes to its caller
            // once the journal has written this task's terminal record, and not whatever
            // other tasks appended after it; a journal whose `append` is the write answers
            // at once.
            let wait = match self.task.early_outcome {
                true => None,
                false => self.recorder.ask_written(terminal),
            };
            match wait {
                None => {
                    let _ = w.send(record);
                }
                Some(watermark) => {
                    let pending = Pending {
                        seq: terminal,
                        task: self.record.id,
                        to: w,
                        record,
                    };
                    cx.when_written(pending, watermark);
                }
            }
        }
        if !self.outstanding.is_empty() {
            // Bound the lingering: every agent answers by its deadline plus grace.
            let linger = self.task.timeout + self.owners.grace + Duration::from_secs(1);
            let at = cx.now() + linger;
            let timer = cx.arm(at, self.record.id, Due::Linger);
            self.enter(Phase::Lingering { timer }, cx);
        }
    }

    /// A lingering owner whose every lease has answered is done.
    pub(super) fn maybe_stop(&mut self, cx: &mut dyn Cx) {
        if matches!(self.phase, Phase::Lingering { .. }) && self.outstanding.is_empty() {
            self.enter(Phase::Done, cx);
        }
    }

    /// Cancels the task; false if it had already ended.
    pub(crate) fn cancel(&mut self, reason: String, cx: &mut dyn Cx) -> bool {
        if self.done() {
            return false;
        }
        let epoch = self.epoch;
        if let Some(h) = self.end_lease(epoch, LeaseOutcome::Cancelled, cx) {
            cx.cancel_attempt(&h, self.record.id, epoch);
        }
        let cancelled = self.recorder.record(Event::TaskCancelled {
            task: self.record.id,
            reason,
        });
        self.finish(TaskStatus::Cancelled, cancelled, cx);
        true
    }
}

impl Drop for TaskOwner {
    fn drop(&mut self) {
        // An owner that goes away before its task ended (a bug in the runtime) must not
        // lose the task silently: the record says so.
        if !self.done() {
            let reason = "the task's owner stopped before the task ended".to_string();
            self.recorder.record(Event::TaskEscalated {
                task: self.record.id,
                to: "dead_letter".into(),
                reason: reason.clone(),
            });
            self.record.status = TaskStatus::Escalated;
            self.record.escalation = Some(Escalation {
                to: "dead_letter".into(),
                reason,
            });
            self.owners.stats.ended(TaskStatus::Escalated);
            self.owners.table.remove(&self.record.id);
            self.release_scope();
            if let Some(key) = self.reuse_key.take() {
                self.owners
                    .reuse
                    .finish(&key, self.record.id, None, Duration::ZERO);
            }
            if let Some(w) = self.waiter.take() {
                let _ = w.send(self.record.clone());
            }
        }
    }
}
