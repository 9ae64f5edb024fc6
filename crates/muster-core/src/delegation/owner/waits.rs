//! The owner's waits for an agent: in the capability's line while every capable agent is
//! at its bound, or for an agent to register while nobody serves the capability. Both are
//! bounded by the task's deadline (G1: past it the task escalates).

use std::sync::Arc;
use std::time::Duration;

use super::phase::Phase;
use super::{Cx, TaskOwner};
use crate::discovery::LinePlace;

/// How long an owner waiting in line waits for its wake before it looks again anyway (a
/// backstop: wakes are not expected to be lost); it doubles up to [`LINE_BACKSTOP_MAX`].
const LINE_BACKSTOP: Duration = Duration::from_secs(1);
const LINE_BACKSTOP_MAX: Duration = Duration::from_secs(32);

impl TaskOwner {
    /// Every candidate is at its bound: waits in the capability's line until a freed slot
    /// wakes this owner (a backstop looks anyway), bounded by the task's deadline.
    pub(super) fn wait_in_line(&mut self, line: LinePlace, cx: &mut dyn Cx) {
        let now = cx.now();
        if now >= self.deadline {
            self.escalate(
                "every capable agent stayed at its bound until the deadline".into(),
                cx,
            );
            return;
        }
        let backstop = LINE_BACKSTOP
            .saturating_mul(1 << self.line_waits.min(5))
            .min(LINE_BACKSTOP_MAX)
            .min(self.deadline.saturating_duration_since(now));
        self.line_waits = self.line_waits.saturating_add(1);
        self.line_gen = self.line_gen.wrapping_add(1);
        let generation = self.line_gen;
        self.enter(Phase::InLine { generation }, cx);
        cx.wait_in_line(self.record.id, generation, line, backstop);
    }

    pub(super) fn wait_for_agent(&mut self, cx: &mut dyn Cx) {
        if cx.now() >= self.deadline {
            let reason = if self.excluded.is_empty() {
                format!(
                    "no agent serving `{}` registered before the deadline",
                    self.task.capability
                )
            } else {
                format!(
                    "every agent serving `{}` failed this task ({}); last failure: {}",
                    self.task.capability,
                    self.excluded.join(", "),
                    self.last_failure()
                )
            };
            self.escalate(reason, cx);
            return;
        }
        if matches!(self.phase, Phase::AwaitingAgent) {
            return;
        }
        self.enter(Phase::AwaitingAgent, cx);
        let capability = Arc::from(self.task.capability.as_str());
        // A registration is the wake; the backstop looks again anyway, for the instance
        // that registered (or restarted) between this owner's look and its wait.
        let backstop = LINE_BACKSTOP
            .saturating_mul(1 << self.line_waits.min(5))
            .min(LINE_BACKSTOP_MAX);
        self.line_waits = self.line_waits.saturating_add(1);
        let until = self.deadline.min(cx.now() + backstop);
        cx.wait_for_agent(self.record.id, capability, until);
    }
}
