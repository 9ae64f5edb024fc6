//! Model usage: the tokens (and optional cost) an attempt spent on a model, as journaled in
//! [`Event::ModelUsage`](super::Event::ModelUsage) and summed by inspection and `muster run`.
//!
//! A count the server did not report is *unknown* (`None`), never 0: a sum with an unknown
//! part is unknown, and [`UsageTotals`] keeps the known sum apart from the number of
//! attempts whose usage is unknown. It must not decide anything (budgets are enforced by
//! the workflow engine); it only adds.

use serde::{Deserialize, Serialize};

/// What one attempt spent on a model.
///
/// # Example
/// ```
/// use muster_core::journal::Usage;
///
/// let mut u = Usage::known("smollm2", 10, 5);
/// u.add(&Usage::known("smollm2", 1, 2));
/// assert_eq!((u.calls, u.total_tokens), (2, Some(18)));
/// u.add(&Usage::unknown("smollm2"));
/// assert_eq!(u.total_tokens, None); // one call reported nothing: the sum is unknown
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// The model that answered (as configured).
    pub model: String,
    /// Requests that got an answer from the server (repair and tool turns count).
    pub calls: u32,
    /// Prompt tokens; `None` when a call's answer did not say.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens; `None` when a call's answer did not say.
    pub completion_tokens: Option<u64>,
    /// Total tokens; `None` when a call's answer did not say.
    pub total_tokens: Option<u64>,
    /// Cost in the currency of the backend's `price`; `None` without a price or with
    /// unknown tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

fn add_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(a?.saturating_add(b?))
}

impl Usage {
    /// One call that reported its tokens.
    pub fn known(model: &str, prompt: u64, completion: u64) -> Self {
        Usage {
            model: model.to_string(),
            calls: 1,
            prompt_tokens: Some(prompt),
            completion_tokens: Some(completion),
            total_tokens: Some(prompt.saturating_add(completion)),
            cost: None,
        }
    }

    /// One call whose answer said nothing of its tokens.
    pub fn unknown(model: &str) -> Self {
        Usage {
            model: model.to_string(),
            calls: 1,
            ..Usage::default()
        }
    }

    /// Adds another call's (or attempt's) usage: a count unknown on either side is unknown.
    pub fn add(&mut self, other: &Usage) {
        if self.calls == 0 {
            *self = other.clone();
            return;
        }
        if other.calls == 0 {
            return;
        }
        self.calls = self.calls.saturating_add(other.calls);
        self.prompt_tokens = add_opt(self.prompt_tokens, other.prompt_tokens);
        self.completion_tokens = add_opt(self.completion_tokens, other.completion_tokens);
        self.total_tokens = add_opt(self.total_tokens, other.total_tokens);
        self.cost = match (self.cost, other.cost) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
}

/// Usage summed over attempts (of a run, an agent, a workflow): the known part, and how
/// many attempts' usage is unknown.
///
/// # Example
/// ```
/// use muster_core::journal::{Usage, UsageTotals};
///
/// let mut t = UsageTotals::default();
/// t.add(&Usage::known("m", 10, 5));
/// t.add(&Usage::unknown("m"));
/// assert_eq!((t.attempts, t.total_tokens, t.unknown_attempts), (2, 15, 1));
/// assert_eq!(t.display_total(), "15 (+1 attempt unknown)");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageTotals {
    /// Attempts that called a model.
    pub attempts: u64,
    /// Model calls in all.
    pub calls: u64,
    /// Attempts whose token counts are unknown (left out of the sums).
    pub unknown_attempts: u64,
    /// Prompt tokens of the attempts that reported them.
    pub prompt_tokens: u64,
    /// Completion tokens of the attempts that reported them.
    pub completion_tokens: u64,
    /// Total tokens of the attempts that reported them.
    pub total_tokens: u64,
    /// Cost of the attempts that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

impl UsageTotals {
    /// Adds one attempt's usage.
    pub fn add(&mut self, u: &Usage) {
        self.attempts += 1;
        self.calls += u64::from(u.calls);
        match (u.prompt_tokens, u.completion_tokens, u.total_tokens) {
            (Some(p), Some(c), Some(t)) => {
                self.prompt_tokens = self.prompt_tokens.saturating_add(p);
                self.completion_tokens = self.completion_tokens.saturating_add(c);
                self.total_tokens = self.total_tokens.saturating_add(t);
            }
            (_, _, Some(t)) => self.total_tokens = self.total_tokens.saturating_add(t),
            _ => self.unknown_attempts += 1,
        }
        if let Some(c) = u.cost {
            self.cost = Some(self.cost.unwrap_or(0.0) + c);
        }
    }

    /// Whether no attempt called a model.
    pub fn is_empty(&self) -> bool {
        self.attempts == 0
    }

    /// Adds another tally (e.g. a task's into its run's).
    ///
    /// ```
    /// use muster_core::journal::{Usage, UsageTotals};
    /// let (mut run, mut task) = (UsageTotals::default(), UsageTotals::default());
    /// task.add(&Usage::known("m", 3, 4));
    /// run.merge(&task);
    /// run.merge(&task);
    /// assert_eq!((run.attempts, run.total_tokens), (2, 14));
    /// ```
    pub fn merge(&mut self, other: &UsageTotals) {
        self.attempts += other.attempts;
        self.calls += other.calls;
        self.unknown_attempts += other.unknown_attempts;
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        if let Some(c) = other.cost {
            self.cost = Some(self.cost.unwrap_or(0.0) + c);
        }
    }

    /// The total tokens for a person: `unknown` when no attempt reported any, the known
    /// sum with the number of unknown attempts otherwise.
    pub fn display_total(&self) -> String {
        match (self.attempts, self.unknown_attempts) {
            (0, _) => "0".into(),
            (a, u) if u == a => "unknown".into(),
            (_, 0) => self.total_tokens.to_string(),
            (_, 1) => format!("{} (+1 attempt unknown)", self.total_tokens),
            (_, u) => format!("{} (+{u} attempts unknown)", self.total_tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreported_count_stays_unknown_and_is_never_zero() {
        let mut u = Usage::unknown("m");
        u.add(&Usage::known("m", 3, 4));
        assert_eq!(u.prompt_tokens, None);
        assert_eq!(u.calls, 2);
        let mut t = UsageTotals::default();
        t.add(&Usage::unknown("m"));
        assert_eq!(t.display_total(), "unknown");
        t.add(&Usage::known("m", 3, 4));
        assert_eq!(t.display_total(), "7 (+1 attempt unknown)");
    }
}
