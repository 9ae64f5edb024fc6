//! What a run produces: its status, a summary of every step visit, the progress events
//! it emits, and the record of each step's result that conditions and mappings read as
//! `steps.<name>` (the same shape whether the step ran now or was rebuilt from the
//! journal by recovery).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use muster_core::journal::UsageTotals;

/// How a run ended (or where it waits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunStatus {
    /// It reached a `done` terminal (or a gate approved with nowhere else to go).
    Completed,
    /// It failed: the step and why.
    Failed {
        /// The step.
        step: String,
        /// Why.
        reason: String,
    },
    /// It waits at a gate (only when the run was started not to wait).
    Waiting {
        /// The gate step.
        gate: String,
        /// What the human decides.
        question: String,
    },
}

/// What happened at one step visit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSummary {
    /// Step name.
    pub step: String,
    /// Visit number.
    pub visit: u32,
    /// Capability (task steps).
    pub capability: String,
    /// The agent whose result was accepted.
    pub agent: Option<String>,
    /// Leases granted.
    pub attempts: u32,
    /// Reassignments to another agent.
    pub reassignments: u32,
    /// Stale results rejected.
    pub stale_rejected: u32,
    /// `completed`, `escalated`, `cancelled`, or `refused` (input did not fit).
    pub outcome: String,
    /// Virtual or real milliseconds from submission to the end.
    pub duration_ms: u64,
    /// The model tokens the visit's attempts reported (none for agents that call no
    /// model).
    #[serde(default, skip_serializing_if = "UsageTotals::is_empty")]
    pub usage: UsageTotals,
    /// What the accepted output says, in words ([`verdict_of`]); empty for a step without
    /// an output, and when the run reports no progress (`RunOptions::progress` unset: the
    /// engine does not spend on it; a node's run documents compute it when read).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verdict: String,
}

/// At most this many characters of a verdict.
const VERDICT_CHARS: usize = 160;
/// At most this many characters of one list item in a verdict.
const VERDICT_ITEM_CHARS: usize = 48;

/// A step's output in words, for a person reading progress lines: each number or boolean
/// field as `name value`, each list as `name: count` with its first two items, in the
/// output's key order; text and nested objects are left out. Bounded to 160 characters.
///
/// # Example
/// ```
/// use muster_workflow::verdict_of;
/// use serde_json::json;
///
/// let test = json!({"failed": 1, "passed": 5,
///                   "failures": [{"test": "test_low_stock_threshold", "message": "4 != 3"}]});
/// assert_eq!(
///     verdict_of(&test),
///     "failed 1, failures: 1 (test_low_stock_threshold), passed 5"
/// );
/// assert_eq!(verdict_of(&json!({"findings": []})), "findings: 0");
/// assert_eq!(verdict_of(&json!("text only")), "");
/// ```
pub fn verdict_of(output: &Value) -> String {
    let Value::Object(fields) = output else {
        return String::new();
    };
    let mut parts: Vec<String> = Vec::new();
    for (name, v) in fields {
        match v {
            Value::Number(n) => parts.push(format!("{name} {n}")),
            Value::Bool(b) => parts.push(format!("{name} {b}")),
            Value::Array(items) => {
                let mut part = format!("{name}: {}", items.len());
                if !items.is_empty() {
                    let shown: Vec<String> = items.iter().take(2).map(item_words).collect();
                    part.push_str(&format!(
                        " ({}{})",
                        shown.join("; "),
                        if items.len() > 2 { "; …" } else { "" }
                    ));
                }
                parts.push(part);
            }
            _ => {}
        }
    }
    let text = parts.join(", ");
    if text.chars().count() <= VERDICT_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(VERDICT_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// One list item of a verdict: a string as it is, an object by its first naming field
/// (`test`, `message`, `file`, `name`, `id`), anything else as JSON; bounded.
fn item_words(item: &Value) -> String {
    let text = match item {
        Value::String(s) => s.clone(),
        Value::Object(o) => ["test", "message", "file", "name", "id"]
            .iter()
            .find_map(|k| o.get(*k))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| item.to_string()),
        other => other.to_string(),
    };
    if text.chars().count() <= VERDICT_ITEM_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(VERDICT_ITEM_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// A run's result: the facts `muster run` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// Run id.
    pub run: Uuid,
    /// Workflow name.
    pub workflow: String,
    /// How it ended.
    #[serde(flatten)]
    pub status: RunStatus,
    /// Every task step visit, in order of completion.
    pub steps: Vec<StepSummary>,
    /// Distinct agents whose results were accepted.
    pub owners: Vec<String>,
    /// Leases granted (one handoff each).
    pub handoffs: u32,
    /// Reassignments.
    pub reassignments: u32,
    /// Stale results rejected.
    pub stale_rejected: u32,
    /// Step outputs by name (the last visit's).
    pub outputs: serde_json::Map<String, Value>,
    /// Milliseconds from start to end (the runtime clock).
    pub duration_ms: u64,
    /// The model tokens the whole run reported, from its first start (a resumed run
    /// counts what it spent before the crash).
    #[serde(default, skip_serializing_if = "UsageTotals::is_empty")]
    pub usage: UsageTotals,
}

impl RunOutcome {
    /// Whether the run completed.
    pub fn is_completed(&self) -> bool {
        self.status == RunStatus::Completed
    }
}

/// Progress of a run, as it happens.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StepEvent {
    /// The run started: its `run_started` record is written (the journal acknowledged
    /// it), so a crash from here on leaves a run that `muster resume` finishes. Sent once,
    /// before anything else, by a run that starts (not by one that resumes).
    Started {
        /// The run's id.
        run: Uuid,
        /// The workflow's name.
        workflow: String,
        /// The workflow file, as journaled.
        file: String,
    },
    /// A step was entered.
    Entered {
        /// Step.
        step: String,
        /// Visit number.
        visit: u32,
        /// The `max_visits` of the transition that led here, if it has one (a loop's
        /// bound: `visit` of `bound`).
        bound: Option<u32>,
    },
    /// A task step finished.
    Finished(StepSummary),
    /// The run waits at a gate.
    Waiting {
        /// Gate.
        gate: String,
        /// Question.
        question: String,
    },
    /// A gate was decided.
    Decided {
        /// Gate.
        gate: String,
        /// Approved?
        approved: bool,
    },
}

/// A step's result as transitions and mappings see it (`steps.<name>.output`,
/// `.attempts`, `.error`): built by the engine as a step ends, and by recovery from the
/// journal, so a resumed run decides exactly as the original would have.
///
/// # Example
/// ```
/// use muster_workflow::StepRecord;
/// use serde_json::json;
///
/// let r = StepRecord::refused("input mapping failed: no such key".into());
/// assert_eq!(r.to_value(), json!({"output": null, "attempts": 0,
///     "error": {"reason": "input mapping failed: no such key"}}));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The accepted output (`null` unless the step completed): the value the step's task
    /// record and its journal records hold, shared rather than copied.
    pub output: Arc<Value>,
    /// Leases granted for the step's task.
    pub attempts: u32,
    /// Why the step failed (`null` when it completed).
    pub error: Option<StepError>,
    /// The agent whose result was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The envelope of the accepted lease: the causation of the next step's task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<Uuid>,
}

/// Why a step failed, with each failed attempt when its task ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepError {
    /// The reason (escalation reason, mapping or condition error, refusal).
    pub reason: String,
    /// Every failed attempt, in order (absent when no task ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<Vec<AttemptFailure>>,
}

/// One failed attempt of a step's task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptFailure {
    /// The agent instance.
    pub agent: String,
    /// The failure reason (`timeout`, `error`, `contract_violation`, ...).
    pub reason: String,
    /// Its details.
    pub detail: String,
}

impl StepRecord {
    /// A step that failed before any task ran (its input did not map or fit).
    pub fn refused(reason: String) -> Self {
        StepRecord {
            output: Arc::default(),
            attempts: 0,
            error: Some(StepError {
                reason,
                failures: None,
            }),
            agent: None,
            envelope: None,
        }
    }

    /// A step whose task completed, with its output (a `Value`, or the `Arc<Value>` of
    /// the task's record to share it).
    pub fn completed(
        output: impl Into<Arc<Value>>,
        attempts: u32,
        agent: Option<String>,
        envelope: Option<Uuid>,
    ) -> Self {
        StepRecord {
            output: output.into(),
            attempts,
            error: None,
            agent,
            envelope,
        }
    }

    /// A step whose task ended without an accepted result.
    pub fn failed(attempts: u32, reason: String, failures: Vec<AttemptFailure>) -> Self {
        StepRecord {
            output: Arc::default(),
            attempts,
            error: Some(StepError {
                reason,
                failures: Some(failures),
            }),
            agent: None,
            envelope: None,
        }
    }

    /// The record as conditions read it.
    pub fn to_value(&self) -> Value {
        self.clone().into_value()
    }

    /// The record as conditions read it, its output moved in (copied only while another
    /// holder shares it): the serialized form, built field by field.
    ///
    /// # Example
    /// ```
    /// use muster_workflow::StepRecord;
    /// use serde_json::json;
    ///
    /// let r = StepRecord::completed(json!({"n": 1}), 1, Some("a#0".into()), None);
    /// assert_eq!(r.into_value(), json!({"output": {"n": 1}, "attempts": 1, "error": null,
    ///     "agent": "a#0"}));
    /// ```
    pub fn into_value(self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("output".into(), Arc::unwrap_or_clone(self.output));
        m.insert("attempts".into(), self.attempts.into());
        // A struct of strings and numbers always serializes.
        let error = self.error.map_or(Value::Null, |e| {
            serde_json::to_value(e).unwrap_or(Value::Null)
        });
        m.insert("error".into(), error);
        if let Some(agent) = self.agent {
            m.insert("agent".into(), agent.into());
        }
        if let Some(envelope) = self.envelope {
            m.insert("envelope".into(), envelope.to_string().into());
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_step_record_built_in_place_is_its_serialized_form() {
        let failure = AttemptFailure {
            agent: "a#0".into(),
            reason: "timeout".into(),
            detail: "30s".into(),
        };
        for r in [
            StepRecord::refused("no such key".into()),
            StepRecord::completed(
                json!({"n": [1, 2.5]}),
                2,
                Some("a#1".into()),
                Some(Uuid::now_v7()),
            ),
            StepRecord::completed(json!(null), 1, None, None),
            StepRecord::failed(3, "budget spent".into(), vec![failure]),
        ] {
            let by_serde = serde_json::to_value(&r).unwrap();
            assert_eq!(r.into_value(), by_serde);
        }
    }
}
