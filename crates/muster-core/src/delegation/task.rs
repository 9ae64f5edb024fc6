//! The task spec: what is asked, of which capability, within which bounds.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::agents::EffectEntry;
use crate::messaging::Scope;

/// The longest time bound a task may have (timeout, deadline, backoff): 366 days. A
/// longer one is refused at submission (it could not be represented as an instant on
/// every platform, and no agent is waited for longer).
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Delay before a reassignment: `initial * factor^(n-1)`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// The first delay.
    #[serde(with = "crate::util::duration")]
    pub initial: Duration,
    /// The largest delay.
    #[serde(with = "crate::util::duration")]
    pub max: Duration,
    /// Growth per failed attempt.
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::none()
    }
}

impl Backoff {
    /// No delay: reassign at once (the next agent is a different one anyway).
    pub fn none() -> Self {
        Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            factor: 1.0,
        }
    }

    /// Exponential backoff from `initial`, doubling, capped at `max`.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            factor: 2.0,
        }
    }

    /// The delay after the `failures`-th failed attempt (from 1).
    pub fn delay(&self, failures: u32) -> Duration {
        if self.initial.is_zero() {
            return Duration::ZERO;
        }
        let f = self.factor.max(1.0).powi(failures.saturating_sub(1) as i32);
        let d = self.initial.mul_f64(f.min(1e6));
        if self.max.is_zero() {
            d
        } else {
            d.min(self.max)
        }
    }
}

/// What happens when a task's attempt budget is spent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exhausted {
    /// The task is escalated to the dead-letter record, with its full history.
    #[default]
    Fail,
    /// The task is escalated to a named human gate.
    Gate(String),
}

/// What a task does when its scope overlaps one held by another task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Wait its turn (first come, first served), within the task's overall deadline.
    #[default]
    Wait,
    /// Fail at once, naming the holder and the overlapping patterns.
    Fail,
}

/// A task to delegate: a capability, an input, and the bounds of its ownership.
///
/// # Example
/// ```
/// use muster_core::Task;
/// use serde_json::json;
/// use std::time::Duration;
///
/// let task = Task::new("code.test", json!({"workspace": "/tmp/w"}))
///     .timeout(Duration::from_secs(60))
///     .attempts(3)
///     .escalate_to("human");
/// assert_eq!(task.attempts, 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The capability asked for.
    pub capability: String,
    /// The input; validated against the capability's input schema before any lease.
    /// Shared, not copied, by the `task_submitted` record and every lease's envelope.
    pub input: Arc<Value>,
    /// Time bound per attempt.
    pub timeout: Duration,
    /// Attempt budget: how many leases before escalating.
    pub attempts: u32,
    /// Delay before each reassignment.
    pub backoff: Backoff,
    /// What happens when the budget is spent.
    pub on_exhausted: Exhausted,
    /// Overall bound, which also bounds waiting for an agent to register. Defaults to
    /// `attempts * timeout`.
    pub deadline: Option<Duration>,
    /// Correlation id (e.g. the workflow run); defaults to the task id.
    pub correlation: Option<Uuid>,
    /// The envelope that caused this task.
    pub causation: Option<Uuid>,
    /// Who delegates it (for the journal).
    pub sender: String,
    /// A fixed task id (recovery); new tasks get a fresh one.
    pub id: Option<Uuid>,
    /// Leases start above this epoch (recovery: results of earlier leases are stale).
    pub min_epoch: u64,
    /// Attempts already used before a restart (recovery): they count against `attempts`,
    /// and attempt numbers continue after them.
    pub spent: u32,
    /// Hand the outcome over as soon as it is journaled, before the journal has written
    /// it. Only for a caller that itself waits for the journal
    /// ([`Recorder::until_written`](crate::journal::Recorder::until_written)) before it
    /// reports or acts on the outcome, as the workflow engine does; it saves that caller
    /// one wait for the disk per task. Off by default.
    pub early_outcome: bool,
    /// The resources the task may touch. Before its first lease the owner takes the scope
    /// from the scope table (writes exclusive, reads shared) and holds it until the task
    /// ends; the agent sees it in its [`TaskContext`](crate::agents::TaskContext). None
    /// (the default, or the capability's default scope): no scope is taken at all.
    pub scope: Option<Arc<Scope>>,
    /// What happens when the scope overlaps one held: wait (default) or fail.
    pub on_conflict: OnConflict,
    /// The task's effect ledger so far (recovery: folded from the journal's
    /// `effect_started` and `effect_done` records), handed to its first attempt: an effect
    /// done is not run again, one started is reported as of unknown outcome.
    pub effects: Vec<EffectEntry>,
    /// The prefix of the task's effect keys; `None` (the default): derived from the task
    /// id. A delegated tool call sets it from its parent's task, so its keys stay the same
    /// across the parent's attempts.
    pub effect_prefix: Option<Arc<str>>,
}

impl Task {
    /// A task with defaults: 30 s per attempt, 3 attempts, no backoff, escalate to the
    /// dead-letter record. The input is a `Value`, or an `Arc<Value>` already held
    /// elsewhere (an earlier task's output) to share it rather than copy it.
    pub fn new(capability: impl Into<String>, input: impl Into<Arc<Value>>) -> Self {
        Task {
            capability: capability.into(),
            input: input.into(),
            timeout: Duration::from_secs(30),
            attempts: 3,
            backoff: Backoff::none(),
            on_exhausted: Exhausted::Fail,
            deadline: None,
            correlation: None,
            causation: None,
            sender: "api".into(),
            id: None,
            min_epoch: 0,
            spent: 0,
            early_outcome: false,
            scope: None,
            on_conflict: OnConflict::Wait,
            effects: Vec::new(),
            effect_prefix: None,
        }
    }

    /// A task whose input is a Rust value (serialized to JSON; the capability's schema,
    /// derived or not, still checks it at submission).
    pub fn typed<T: serde::Serialize>(
        capability: impl Into<String>,
        input: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Task::new(capability, serde_json::to_value(input)?))
    }

    /// Sets the time bound per attempt.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Sets the attempt budget.
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n;
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.backoff = b;
        self
    }

    /// Escalates to a named human gate when the budget is spent.
    pub fn escalate_to(mut self, gate: &str) -> Self {
        self.on_exhausted = Exhausted::Gate(gate.into());
        self
    }

    /// Sets the overall deadline.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }

    /// Sets the correlation id.
    pub fn correlation(mut self, id: Uuid) -> Self {
        self.correlation = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn causation(mut self, id: Uuid) -> Self {
        self.causation = Some(id);
        self
    }

    /// Declares the resources the task may touch (see [`Scope`]).
    ///
    /// # Example
    /// ```
    /// use muster_core::{Scope, Task};
    /// use serde_json::json;
    ///
    /// let scope = Scope::new(["src/user_service/**", "concept:UserService"], ["spec/**"]).unwrap();
    /// let task = Task::new("code.implement", json!({})).scope(scope).fail_on_conflict();
    /// assert!(task.scope.is_some());
    /// ```
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = (!scope.is_empty()).then(|| Arc::new(scope));
        self
    }

    /// Fails the task at once, instead of waiting, when its scope overlaps one held.
    pub fn fail_on_conflict(mut self) -> Self {
        self.on_conflict = OnConflict::Fail;
        self
    }

    /// Sets the sender name.
    pub fn sender(mut self, s: impl Into<String>) -> Self {
        self.sender = s.into();
        self
    }

    pub(crate) fn overall(&self) -> Duration {
        self.deadline
            .unwrap_or_else(|| self.timeout.saturating_mul(self.attempts.max(1)))
            .min(MAX_DURATION)
    }

    /// The first of the task's time bounds that is beyond [`MAX_DURATION`], by name.
    pub(crate) fn out_of_bounds(&self) -> Option<(&'static str, Duration)> {
        [
            ("timeout", Some(self.timeout)),
            ("deadline", self.deadline),
            ("backoff.initial", Some(self.backoff.initial)),
            ("backoff.max", Some(self.backoff.max)),
        ]
        .into_iter()
        .find_map(|(name, d)| d.filter(|d| *d > MAX_DURATION).map(|d| (name, d)))
    }
}
