//! G1 and G2 over random fault schedules: whatever the agents do (panic, error, hang,
//! violate the output schema, answer after their deadline, or succeed), with agents that
//! register late, every task ends in exactly one terminal state, a completed task has
//! exactly one accepted result (the current lease's), and the counters add up.
//!
//! Each case runs on its own paused-clock system, so hangs and timeouts cost no wall time.

use crate::support::common;

use std::collections::HashMap;
use std::sync::{Arc, Once};
use std::time::Duration;

use common::*;
use muster::{AgentDef, AgentError, Event, Muster, Task, TaskStatus};
use proptest::prelude::*;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(2);
const INJECTED: &str = "injected panic";

/// What an agent does on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Panic,
    Error,
    Hang,
    Violate,
    Late,
    Succeed,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The fault for (case seed, agent, task, attempt): a pure function, so the schedule is
/// the case's.
fn fault(seed: u64, agent: u64, n: u64, attempt: u32) -> Fault {
    let h = splitmix(seed ^ splitmix(agent ^ splitmix(n ^ splitmix(attempt as u64))));
    match h % 100 {
        0..=9 => Fault::Panic,
        10..=19 => Fault::Error,
        20..=27 => Fault::Hang,
        28..=37 => Fault::Violate,
        38..=47 => Fault::Late,
        _ => Fault::Succeed,
    }
}

fn faulty_agent(seed: u64, index: u64, concurrency: usize) -> AgentDef {
    agent(&format!("a{index}"), move |input, ctx| async move {
        let n = input["n"].as_u64().unwrap_or(0);
        // A little work first, so attempts overlap.
        tokio::time::sleep(Duration::from_millis(splitmix(seed ^ n) % 300)).await;
        match fault(seed, index, n, ctx.attempt) {
            Fault::Panic => panic!("{INJECTED} ({})", ctx.agent),
            Fault::Error => Err(AgentError::new("injected error")),
            Fault::Hang => hang().await,
            Fault::Violate => Ok(json!({"value": "not a number"})),
            Fault::Late => {
                // Past the owner's deadline, inside the instance's grace.
                tokio::time::sleep_until(ctx.deadline + Duration::from_millis(400)).await;
                Ok(json!({"value": ctx.epoch}))
            }
            // The output names its epoch, so the test can check which lease it came from.
            Fault::Succeed => Ok(json!({"value": ctx.epoch})),
        }
    })
    .concurrency(concurrency)
    .mailbox(16)
}

/// Injected panics are expected: keep them off stderr (and skip their backtraces), and let
/// every other panic through.
fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.starts_with(INJECTED) {
                default(info);
            }
        }));
    });
}

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    tasks: u64,
    /// Per agent: (registration delay in ms, concurrency).
    agents: Vec<(u64, usize)>,
}

fn case() -> impl Strategy<Value = Case> {
    let agent = (
        prop::sample::select(vec![0u64, 0, 0, 500, 1500, 4000]),
        1usize..=4,
    );
    (
        any::<u64>(),
        50u64..=100,
        prop::collection::vec(agent, 2..=4),
    )
        .prop_map(|(seed, tasks, agents)| Case {
            seed,
            tasks,
            agents,
        })
}

async fn run_case(c: Case) -> Result<(), TestCaseError> {
    let m = builder()
        .seed(c.seed)
        .start()
        .await
        .expect("runtime starts");
    for (i, &(delay, conc)) in c.agents.iter().enumerate() {
        let def = faulty_agent(c.seed, i as u64, conc);
        if delay == 0 {
            m.register(def).await.expect("registered");
        } else {
            let m2: Muster = m.clone();
            actix::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                m2.register(def).await.expect("registered late");
            });
        }
    }
    let mut handles = Vec::new();
    for n in 0..c.tasks {
        let task = Task::new(CAP, input(n as i64)).timeout(TIMEOUT).attempts(3);
        handles.push(m.submit(task).await.expect("submitted"));
    }
    let ids: Vec<_> = handles.iter().map(|h| h.id()).collect();
    let outcomes = within(
        600,
        "every task's outcome",
        futures::future::join_all(handles.into_iter().map(|h| h.outcome())),
    )
    .await;
    // Let every late answer and aborted hang come in (deadline + grace), then look.
    pass(TIMEOUT + Duration::from_secs(5)).await;

    let mut accepted: HashMap<uuid::Uuid, Vec<(u64, Arc<serde_json::Value>)>> = HashMap::new();
    let mut granted: HashMap<uuid::Uuid, u64> = HashMap::new();
    // When each instance registered (first start and every restart).
    let mut registered: HashMap<String, Vec<u64>> = HashMap::new();
    for r in m.journal().read_after(0) {
        match r.event {
            Event::AgentRegistered { ref agent, .. } => {
                registered
                    .entry(agent.to_string())
                    .or_default()
                    .push(r.at_ms);
            }
            Event::ResultAccepted {
                task,
                epoch,
                output,
                ..
            } => accepted.entry(task).or_default().push((epoch, output)),
            Event::LeaseGranted { task, epoch, .. } => {
                let e = granted.entry(task).or_default();
                *e = (*e).max(epoch);
            }
            _ => {}
        }
    }
    for (id, out) in ids.iter().zip(&outcomes) {
        prop_assert_eq!(out.id, *id);
        let n_accepted = accepted.get(id).map_or(0, Vec::len);
        prop_assert!(
            n_accepted <= 1,
            "task {} has {} accepted results",
            id,
            n_accepted
        );
        match out.status {
            TaskStatus::Completed => {
                prop_assert_eq!(n_accepted, 1, "completed task {} in the journal", id);
                prop_assert_eq!(out.accepted_results(), 1);
                let (epoch, output) = &accepted[id][0];
                // The accepted result is the last lease's, and the agent was handed it.
                prop_assert_eq!(Some(*epoch), granted.get(id).copied());
                prop_assert_eq!(out.leases.last().map(|l| l.epoch), Some(*epoch));
                prop_assert_eq!(&**output, &json!({"value": epoch}));
                prop_assert_eq!(out.output.as_ref(), Some(output));
            }
            TaskStatus::Escalated => {
                prop_assert_eq!(n_accepted, 0);
                prop_assert_eq!(out.accepted_results(), 0);
                prop_assert!(out.escalation.is_some());
                prop_assert!(
                    out.leases.len() <= 3,
                    "attempt budget kept: {:?}",
                    out.leases
                );
            }
            other => prop_assert!(false, "task {} ended {:?}", id, other),
        }
        prop_assert!(out.ended_ms.is_some());
        // Epochs only grow, and a task goes back to an agent only after that agent
        // crashed on it (its supervisor restarted it: a fresh start, which the owner may
        // give the task again when nobody else can take it), never after an error, a
        // timeout or a contract violation.
        let epochs: Vec<u64> = out.leases.iter().map(|l| l.epoch).collect();
        prop_assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{:?}", epochs);
        for (i, l) in out.leases.iter().enumerate() {
            for earlier in out.leases[..i].iter().filter(|e| e.agent == l.agent) {
                // The instance registered again (restarted, whatever task it crashed on)
                // between the two leases.
                let restarted = registered.get(l.agent.as_ref()).is_some_and(|at| {
                    at.iter()
                        .any(|t| *t >= earlier.started_ms && *t <= l.started_ms)
                });
                prop_assert!(
                    restarted,
                    "an agent was given the task again without a restart: {:?}",
                    out.leases
                );
            }
        }
    }
    let s = m.stats();
    prop_assert_eq!(s.submitted, c.tasks);
    prop_assert_eq!(s.submitted, s.completed + s.escalated + s.cancelled);
    let completed = outcomes.iter().filter(|o| o.is_completed()).count() as u64;
    prop_assert_eq!(s.completed, completed);
    let moved: u64 = outcomes.iter().map(|o| o.reassignments() as u64).sum();
    prop_assert_eq!(
        s.reassigned,
        moved,
        "reassignments counted as the records show them"
    );
    prop_assert_eq!(m.live_tasks(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_task_is_lost_or_accepted_twice(c in case()) {
        quiet_injected_panics();
        run_paused(|| run_case(c))?;
    }
}
