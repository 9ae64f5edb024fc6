//! Retrying a failed run from the step that failed: [`plan`] reads the failed run's
//! records and says where the retry starts and which completed steps it carries over;
//! [`WorkflowExt::retry_run`](super::WorkflowExt::retry_run) starts it.
//!
//! A retry is a **new run** (its own id and records), never the failed run resumed: the
//! failed run's records keep saying that it failed and why, and each run has one story.
//! The new run journals `run_started` (the same input), `retry_started` (the failed run,
//! the step it starts at, the steps it carries), a `step_completed` per carried step
//! (the failed run's task and output: the step is not run again), and the failed run gets
//! `run_retried` naming the new run, all in one group (`Journal::append_group`: one
//! commit, so a crash never leaves half of them); so recovery rebuilds a retry like any
//! run (G1 across a crash), and its tasks are new tasks with new ids and their own leases
//! (one owner per task, G2). Visits start from zero: the retry gets every loop bound
//! afresh.
//!
//! It must not write anything (the engine does) nor decide who may retry (the API does).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use super::definition::{Step, Workflow};
use muster_core::journal::{Event, Record};

/// A completed step of the failed run that the retry takes as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Carried {
    /// The step.
    pub step: String,
    /// The failed run's task that completed it.
    pub task: Uuid,
    /// Its accepted output.
    pub output: Arc<Value>,
}

/// Where a retry of a failed run starts and what it takes from it.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPlan {
    /// The failed run.
    pub from: Uuid,
    /// Its workflow's name.
    pub workflow: String,
    /// Its input (the retry's input).
    pub input: Value,
    /// The step the retry enters first: the step that failed (a parallel step when one
    /// of its branches failed).
    pub step: String,
    /// The steps whose outputs it carries over, in the order they completed.
    pub carried: Vec<Carried>,
}

/// A completed step's task and output.
type Done = (Uuid, Arc<Value>);

/// Why a run cannot be retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotRetryable {
    /// The records hold no such run.
    #[error("no run {0} in the journal")]
    Unknown(Uuid),
    /// The run has not failed: it completed, was cancelled, or has not ended.
    #[error("run {run} did not fail ({status}); only a failed run is retried")]
    NotFailed {
        /// The run.
        run: Uuid,
        /// Where it stands.
        status: String,
    },
    /// The run was retried already.
    #[error("run {run} was already retried as run {retry}")]
    Retried {
        /// The run.
        run: Uuid,
        /// Its retry.
        retry: Uuid,
    },
    /// The run is of another workflow than the one given.
    #[error("run {run} is a run of workflow `{workflow}`, which is not the one given")]
    OtherWorkflow {
        /// The run.
        run: Uuid,
        /// Its workflow.
        workflow: String,
    },
    /// No step of the workflow to start from.
    #[error("run {run} cannot be retried: {reason}")]
    NoStep {
        /// The run.
        run: Uuid,
        /// Why.
        reason: String,
    },
}

/// How run `run` of `records` (its records, in order: `Journal::records_of` is enough)
/// would be retried with `wf`: the step that failed last and was not completed since,
/// or the step the run ended at when no step failed (a task or parallel step only), and
/// the other steps whose last record is `step_completed`.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Journal, MemoryJournal};
/// use muster_workflow::{Workflow, retry};
/// use serde_json::json;
///
/// let toml = r#"
/// name = "w"
/// input = "any"
/// start = "a"
/// [steps.a]
/// capability = "echo"
/// next = "b"
/// [steps.b]
/// capability = "echo"
/// next = "done"
/// [steps.done]
/// terminal = "done"
/// "#;
/// let schemas = muster_core::messaging::SchemaStore::new();
/// schemas.add("any", json!({"type": "object"})).unwrap();
/// let wf = Workflow::parse(toml, std::path::Path::new("w.toml"), &schemas).unwrap();
/// let (j, run, task) = (MemoryJournal::default(), uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
/// j.append(0, Event::RunStarted { run, workflow: "w".into(), file: "w.toml".into(), input: json!({"x": 1}) });
/// j.append(1, Event::StepCompleted { run, step: "a".into(), task, output: json!({"y": 2}).into() });
/// j.append(2, Event::StepFailed { run, step: "b".into(), task: None, reason: "escalated".into() });
/// j.append(3, Event::RunEnded { run, status: "failed".into(), step: "b".into(), reason: None });
/// let plan = retry::plan(&wf, &j.read_after(0), run).unwrap();
/// assert_eq!(plan.step, "b");
/// assert_eq!(plan.carried[0].step, "a");
/// ```
pub fn plan(wf: &Workflow, records: &[Record], run: Uuid) -> Result<RetryPlan, NotRetryable> {
    let mut started: Option<(String, Value)> = None;
    let mut ended: Option<(String, String)> = None;
    let mut retried: Option<Uuid> = None;
    // Each step's last record: where it is, and its task and output when it completed.
    let mut last: HashMap<String, (usize, Option<Done>)> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        match &r.event {
            Event::RunStarted {
                run: r,
                workflow,
                input,
                ..
            } if *r == run && started.is_none() => {
                started = Some((workflow.clone(), input.clone()));
            }
            Event::StepCompleted {
                run: r,
                step,
                task,
                output,
            } if *r == run => {
                last.insert(step.clone(), (i, Some((*task, output.clone()))));
            }
            Event::StepFailed { run: r, step, .. } if *r == run => {
                last.insert(step.clone(), (i, None));
            }
            Event::RunEnded {
                run: r,
                status,
                step,
                ..
            } if *r == run => {
                ended = Some((status.clone(), step.clone()));
            }
            Event::RunRetried { run: r, retry, .. } if *r == run => {
                retried = Some(*retry);
            }
            _ => {}
        }
    }
    let (workflow, input) = started.ok_or(NotRetryable::Unknown(run))?;
    if workflow != wf.name {
        return Err(NotRetryable::OtherWorkflow { run, workflow });
    }
    match &ended {
        Some((status, _)) if status != "completed" && status != "cancelled" => {}
        Some((status, _)) => {
            return Err(NotRetryable::NotFailed {
                run,
                status: status.clone(),
            });
        }
        None => {
            return Err(NotRetryable::NotFailed {
                run,
                status: "it has not ended".into(),
            });
        }
    }
    if let Some(retry) = retried {
        return Err(NotRetryable::Retried { run, retry });
    }
    let ended_at = ended.map(|(_, s)| s).unwrap_or_default();
    let failed = last
        .iter()
        .filter(|(_, (_, done))| done.is_none())
        .max_by_key(|(_, (i, _))| *i)
        .map(|(s, _)| s.clone());
    let step = match failed {
        // A failed branch retries its join: branches run together.
        Some(s) => wf
            .steps
            .iter()
            .find_map(|(name, st)| match st {
                Step::Parallel { branches, .. } if branches.contains(&s) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or(s),
        None => ended_at.clone(),
    };
    let branches: Vec<String> = match wf.steps.get(&step) {
        Some(Step::Task(_)) => Vec::new(),
        Some(Step::Parallel { branches, .. }) => branches.clone(),
        Some(_) => {
            return Err(NotRetryable::NoStep {
                run,
                reason: format!("it ended at `{ended_at}` with no failed task step to start from"),
            });
        }
        None => {
            return Err(NotRetryable::NoStep {
                run,
                reason: format!("workflow `{}` has no step `{step}` now", wf.name),
            });
        }
    };
    let mut carried: Vec<(usize, Carried)> = last
        .into_iter()
        .filter(|(s, _)| *s != step && !branches.contains(s) && wf.task(s).is_some())
        .filter_map(|(s, (i, done))| {
            done.map(|(task, output)| {
                (
                    i,
                    Carried {
                        step: s,
                        task,
                        output,
                    },
                )
            })
        })
        .collect();
    carried.sort_by_key(|(i, _)| *i);
    Ok(RetryPlan {
        from: run,
        workflow,
        input,
        step,
        carried: carried.into_iter().map(|(_, c)| c).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::journal::{Journal, MemoryJournal};
    use serde_json::json;

    const TOML: &str = r#"
name = "w"
input = "any"
start = "a"
[steps.a]
capability = "echo"
next = "b"
[steps.b]
capability = "echo"
next = "c"
[steps.c]
capability = "echo"
next = "done"
[steps.done]
terminal = "done"
"#;

    fn wf() -> Workflow {
        let schemas = muster_core::messaging::SchemaStore::new();
        schemas.add("any", json!({"type": "object"})).unwrap();
        Workflow::parse(TOML, std::path::Path::new("w.toml"), &schemas).unwrap()
    }

    /// A run that completed `a`, failed `b` once, completed it on a second visit, then
    /// failed at `c`.
    fn failed_run(j: &MemoryJournal) -> Uuid {
        let run = Uuid::now_v7();
        let input = json!({"x": 1});
        j.append(
            0,
            Event::RunStarted {
                run,
                workflow: "w".into(),
                file: "w.toml".into(),
                input,
            },
        );
        for (step, ok) in [("a", true), ("b", false), ("b", true), ("c", false)] {
            j.append(
                1,
                Event::StepEntered {
                    run,
                    step: step.into(),
                    visit: 1,
                },
            );
            if ok {
                let output = Arc::new(json!({"from": step}));
                j.append(
                    2,
                    Event::StepCompleted {
                        run,
                        step: step.into(),
                        task: Uuid::now_v7(),
                        output,
                    },
                );
            } else {
                j.append(
                    2,
                    Event::StepFailed {
                        run,
                        step: step.into(),
                        task: None,
                        reason: "no".into(),
                    },
                );
            }
        }
        j.append(
            3,
            Event::RunEnded {
                run,
                status: "failed".into(),
                step: "c".into(),
                reason: None,
            },
        );
        run
    }

    #[test]
    fn a_retry_starts_at_the_last_failure_not_mended_and_carries_the_completed_steps() {
        let j = MemoryJournal::default();
        let run = failed_run(&j);
        let plan = plan(&wf(), &j.read_after(0), run).unwrap();
        assert_eq!(plan.step, "c");
        let carried: Vec<&str> = plan.carried.iter().map(|c| c.step.as_str()).collect();
        assert_eq!(carried, ["a", "b"]);
        assert_eq!(*plan.carried[1].output, json!({"from": "b"}));
        assert_eq!(plan.input, json!({"x": 1}));
    }

    #[test]
    fn only_a_failed_run_not_retried_yet_is_retried() {
        let j = MemoryJournal::default();
        let run = failed_run(&j);
        let retry = Uuid::now_v7();
        j.append(
            4,
            Event::RunRetried {
                run,
                retry,
                step: "c".into(),
            },
        );
        assert_eq!(
            plan(&wf(), &j.read_after(0), run),
            Err(NotRetryable::Retried { run, retry })
        );
        let done = Uuid::now_v7();
        j.append(
            5,
            Event::RunStarted {
                run: done,
                workflow: "w".into(),
                file: "w.toml".into(),
                input: json!({}),
            },
        );
        j.append(
            6,
            Event::RunEnded {
                run: done,
                status: "completed".into(),
                step: "done".into(),
                reason: None,
            },
        );
        assert!(matches!(
            plan(&wf(), &j.read_after(0), done),
            Err(NotRetryable::NotFailed { .. })
        ));
        let unknown = Uuid::now_v7();
        assert_eq!(
            plan(&wf(), &j.read_after(0), unknown),
            Err(NotRetryable::Unknown(unknown))
        );
    }

    /// What recovery rebuilds from a retry's first records (a node that stops right after
    /// them resumes the retry at its start step with the carried outputs).
    #[test]
    fn recovery_rebuilds_a_retry_from_its_records() {
        let j = MemoryJournal::default();
        let (from, run, task) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        j.append(
            0,
            Event::RunStarted {
                run,
                workflow: "w".into(),
                file: "w.toml".into(),
                input: json!({}),
            },
        );
        j.append(
            0,
            Event::RetryStarted {
                run,
                from,
                step: "c".into(),
                carried: vec!["a".into()],
            },
        );
        let output = Arc::new(json!({"from": "a"}));
        j.append(
            0,
            Event::StepCompleted {
                run,
                step: "a".into(),
                task,
                output,
            },
        );
        let rec = crate::recovery::recover(&j.read_after(0)).remove(0);
        assert_eq!(rec.start.as_deref(), Some("c"));
        assert!(rec.at.is_none(), "no step entered yet");
        assert_eq!(rec.steps["a"]["output"], json!({"from": "a"}));
    }
}
