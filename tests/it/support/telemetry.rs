//! The workload both telemetry tests observe, on the paused clock: a workflow run whose
//! one task times out on its first agent, is reassigned, answers late (a stale result,
//! fenced) and completes on the second agent, each attempt spending model tokens; and a
//! bare task whose agent always fails, escalated after two attempts; then one of that
//! agent's instances is killed and restarted by its supervisor.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use muster::journal::Usage;
use muster::workflow::{RunOutcome, Workflow};
use muster::{AgentDef, AgentError, CapabilitySpec, Muster, Task, TaskRecord, WorkflowExt};
use serde_json::{Value, json};

/// The attempt time bound of the review step.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The model every review attempt reports.
pub const MODEL: &str = "tiny-model";

const WORKFLOW: &str = r#"
name = "review"
input = "any"
start = "review"
[steps.review]
capability = "review"
timeout = "10s"
attempts = 3
on_exhausted = "fail"
next = "done"
[steps.done]
terminal = "done"
"#;

fn cap(name: &str) -> CapabilitySpec {
    CapabilitySpec::new(name, "any", "any")
}

/// Attempt 1 answers 0.5 s after its deadline; attempt 2 after 1.5 s. Each reports
/// 10 input and 5 output tokens.
fn reviewer() -> AgentDef {
    AgentDef::function("reviewer", |input: Value, ctx| async move {
        ctx.record_usage(&Usage::known(MODEL, 10, 5));
        if ctx.attempt == 1 {
            tokio::time::sleep(TIMEOUT + Duration::from_millis(500)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        Ok(json!({"reviewed": input, "attempt": ctx.attempt}))
    })
    .capability(cap("review"))
    .replicas(2)
}

/// Always fails.
fn breaker() -> AgentDef {
    AgentDef::function("breaker", |_: Value, _| async move {
        Err::<Value, _>(AgentError::new("broken on purpose"))
    })
    .capability(cap("break"))
    .replicas(2)
}

/// A started runtime with the two agent types.
pub async fn runtime() -> Muster {
    Muster::builder()
        .schema("any", json!({"type": "object"}))
        .seed(7)
        .agent(reviewer())
        .agent(breaker())
        .start()
        .await
        .expect("the runtime starts")
}

/// Runs the workload; returns the run's outcome and the bare task's.
pub async fn workload(m: &Muster) -> (RunOutcome, TaskRecord) {
    let wf = match Workflow::parse(WORKFLOW, Path::new("review.toml"), &m.schemas()) {
        Ok(wf) => Arc::new(wf),
        Err(e) => panic!("the workflow does not parse: {e:?}"),
    };
    let run = tokio::time::timeout(
        Duration::from_secs(120),
        m.run_workflow(wf, json!({"change": "x"})),
    )
    .await
    .expect("the run ends within 120 s of virtual time")
    .expect("the run starts");
    let bare = tokio::time::timeout(
        Duration::from_secs(120),
        m.delegate(
            Task::new("break", json!({}))
                .attempts(2)
                .timeout(Duration::from_secs(5)),
        ),
    )
    .await
    .expect("the bare task ends within 120 s of virtual time")
    .expect("the bare task is accepted");
    // A crash: its supervisor restarts the instance.
    assert!(m.kill_agent("breaker#0", "killed by the test"));
    // Let every late answer arrive, and the restart happen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    (run, bare)
}
