//! Failover: 1,000 tasks over two agents of one capability, one of which panics on every
//! 3rd task it gets and hangs (never answers) on every 7th. Runs on tokio's paused clock, so
//! the 2 s time bounds cost no wall time. It prints one JSON line last, computed from the
//! task records and the journal (not assumed):
//!
//! ```text
//! {"tasks":1000,"completed":…,"escalated":…,"lost":…,"duplicates":…,"stale_rejected":…,"reassigned":…}
//! ```
//!
//! `lost` counts tasks with no terminal state, `duplicates` tasks with more than one
//! accepted result; G1 and G2 say both are 0 whatever the agents do.
//!
//! Run: `cargo run --example failover`

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use muster::{
    AgentDef, AgentError, CapabilitySpec, Event, Muster, Supervision, Task, TaskContext, TaskRecord,
};
use serde::Serialize;
use serde_json::{Value, json};

/// What the scenario ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Tasks submitted.
    pub tasks: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Tasks escalated.
    pub escalated: u64,
    /// Tasks with no terminal state (in their record or in the journal).
    pub lost: u64,
    /// Tasks with more than one accepted result.
    pub duplicates: u64,
    /// Late results fenced as stale.
    pub stale_rejected: u64,
    /// Times a task moved to another agent.
    pub reassigned: u64,
}

const CAP: &str = "work";

/// Some simulated work, 5-50 ms, so attempts overlap.
async fn work(n: u64) {
    tokio::time::sleep(Duration::from_millis(5 + (n * 7919) % 46)).await;
}

/// The flaky agent: counts the tasks it gets across restarts; panics on every 3rd and hangs
/// on every 7th (a 21st panics).
fn flaky() -> AgentDef {
    let got = Arc::new(AtomicU64::new(0));
    AgentDef::function("flaky", move |input: Value, ctx: TaskContext| {
        let k = got.fetch_add(1, Ordering::Relaxed) + 1;
        async move {
            let n = input["n"].as_u64().unwrap_or(0);
            work(n).await;
            if k.is_multiple_of(3) {
                panic!("flaky: task {k} it got (every 3rd panics)");
            }
            if k.is_multiple_of(7) {
                futures::future::pending::<()>().await;
            }
            Ok::<_, AgentError>(json!({"n": n, "epoch": ctx.epoch}))
        }
    })
    .capability(CapabilitySpec::new(CAP, "in", "out"))
    .concurrency(16)
    .mailbox(16)
    // It crashes by design: let its supervisor keep restarting it.
    .supervision(Supervision {
        intensity: 100_000,
        ..Supervision::default()
    })
}

fn steady() -> AgentDef {
    AgentDef::function("steady", |input: Value, ctx: TaskContext| async move {
        let n = input["n"].as_u64().unwrap_or(0);
        work(n).await;
        Ok::<_, AgentError>(json!({"n": n, "epoch": ctx.epoch}))
    })
    .capability(CapabilitySpec::new(CAP, "in", "out"))
    .concurrency(16)
    .mailbox(16)
}

/// Runs the scenario with `tasks` tasks; must run inside an actix system on a paused clock.
pub async fn scenario(tasks: u64) -> Result<Report, Box<dyn std::error::Error>> {
    let m = Muster::builder()
        .schema("in", json!({"type": "object", "required": ["n"]}))
        .schema(
            "out",
            json!({"type": "object", "required": ["n", "epoch"],
                   "properties": {"n": {"type": "integer"}, "epoch": {"type": "integer"}}}),
        )
        .seed(1)
        .agent(flaky())
        .agent(steady())
        .start()
        .await?;
    let mut handles = Vec::new();
    for n in 0..tasks {
        let task = Task::new(CAP, json!({ "n": n })).timeout(Duration::from_secs(2));
        handles.push(m.submit(task).await?);
    }
    let ids: Vec<_> = handles.iter().map(|h| h.id()).collect();
    let all = futures::future::join_all(handles.into_iter().map(|h| h.outcome()));
    let records: Vec<TaskRecord> = tokio::time::timeout(Duration::from_secs(3600), all)
        .await
        .map_err(|_| "tasks still running after an hour of virtual time")?;
    // Late answers (deadline + grace) come in, and are fenced, after their tasks ended.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = tally(&m, &ids, &records);
    m.shutdown().await;
    Ok(report)
}

/// Counts from the records and the journal.
fn tally(m: &Muster, ids: &[uuid::Uuid], records: &[TaskRecord]) -> Report {
    let mut accepted: HashMap<uuid::Uuid, u64> = HashMap::new();
    let mut terminal: HashMap<uuid::Uuid, u64> = HashMap::new();
    let mut stale = 0;
    for r in m.journal().read_after(0) {
        match r.event {
            Event::ResultAccepted { task, .. } => {
                *accepted.entry(task).or_default() += 1;
                *terminal.entry(task).or_default() += 1;
            }
            Event::TaskEscalated { task, .. } | Event::TaskCancelled { task, .. } => {
                *terminal.entry(task).or_default() += 1;
            }
            Event::ResultStale { .. } => stale += 1,
            _ => {}
        }
    }
    let by_id: HashMap<_, _> = records.iter().map(|r| (r.id, r)).collect();
    let lost = ids
        .iter()
        .filter(|id| {
            let ended = by_id.get(id).is_some_and(|r| {
                r.status.is_terminal()
                    // A handle whose owner vanished reports an escalation of its own making.
                    && !r
                        .escalation
                        .as_ref()
                        .is_some_and(|e| e.reason.contains("owner was lost"))
            });
            !ended || terminal.get(id).copied().unwrap_or(0) != 1
        })
        .count() as u64;
    let duplicates = ids
        .iter()
        .filter(|id| {
            accepted.get(id).copied().unwrap_or(0) > 1
                || by_id.get(id).is_some_and(|r| r.accepted_results() > 1)
        })
        .count() as u64;
    Report {
        tasks: ids.len() as u64,
        completed: records.iter().filter(|r| r.is_completed()).count() as u64,
        escalated: records
            .iter()
            .filter(|r| r.status == muster::TaskStatus::Escalated)
            .count() as u64,
        lost,
        duplicates,
        stale_rejected: stale,
        reassigned: records.iter().map(|r| r.reassignments() as u64).sum(),
    }
}

/// An actix system whose tokio runtime starts with a paused clock.
pub fn paused_system() -> actix::SystemRunner {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap_or_else(|e| panic!("cannot build a tokio runtime: {e}"))
    })
}

#[allow(dead_code)] // not called when the file is included by tests/failover_example.rs
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The flaky agent's panics are the point of the example: keep them off stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let report = paused_system().block_on(scenario(1000))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
