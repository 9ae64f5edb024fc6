//! `late_results = "adopt"` (issue 26): for an idempotent capability that declares it, a
//! result of an earlier epoch that arrives while the next attempt is still running, and
//! that passes the contract, completes the task (journaled `result_adopted` with both
//! epochs, then one `result_accepted`), and the running attempt is cancelled. A late
//! result that fails the contract is fenced as stale, and a capability that is not
//! idempotent never adopts: the fence stays absolute.
//!
//! Paused clock; every wait is bounded in virtual time.

use crate::support::common;

use std::time::Duration;

use common::*;
use muster::{AgentDef, CapabilitySpec, Event, LeaseOutcome, Task, TaskStatus};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Attempt 1 answers `late` half a second after its deadline (inside the grace);
/// attempt 2 answers `{"value": 2}` after 0.8 of its time bound (so it runs when the late
/// answer comes).
fn late_then_slow(spec: CapabilitySpec, late: Value) -> AgentDef {
    AgentDef::function("w", move |_input, ctx| {
        let late = late.clone();
        async move {
            if ctx.attempt == 1 {
                tokio::time::sleep(TIMEOUT + Duration::from_millis(500)).await;
                Ok(late)
            } else {
                tokio::time::sleep(TIMEOUT.mul_f64(0.8)).await;
                Ok(json!({"value": 2}))
            }
        }
    })
    .capability(spec)
    .replicas(2)
}

fn adopting() -> CapabilitySpec {
    cap()
        .idempotent(Duration::from_secs(60))
        .adopt_late_results()
}

/// Runs one task on `def`; returns its outcome and its journal events.
async fn run_one(def: AgentDef) -> (muster::TaskRecord, Vec<Event>) {
    let m = builder().agent(def).start().await.expect("runtime starts");
    let h = m
        .submit(Task::new(CAP, input(1)).timeout(TIMEOUT).attempts(3))
        .await
        .expect("submitted");
    let id = h.id();
    let out = within(120, "the task's outcome", h.outcome()).await;
    // Let every attempt end (the cancelled one, the late one's grace).
    pass(TIMEOUT * 3).await;
    let events: Vec<Event> = journal(&m)
        .into_iter()
        .map(|r| r.event)
        .filter(|e| e.task() == Some(id))
        .collect();
    m.shutdown().await;
    (out, events)
}

#[test]
fn a_late_valid_result_completes_the_task_exactly_once() {
    run_paused(|| async {
        let (out, events) = run_one(late_then_slow(adopting(), json!({"value": 1}))).await;
        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
        assert_eq!(
            out.output.as_deref(),
            Some(&json!({"value": 1})),
            "the late result"
        );
        assert_eq!(out.leases.len(), 2);
        let (first, second) = (&out.leases[0], &out.leases[1]);
        assert_eq!(first.outcome, LeaseOutcome::Completed);
        assert_eq!(
            second.outcome,
            LeaseOutcome::Cancelled,
            "the running attempt"
        );
        let adopted: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::ResultAdopted {
                    epoch,
                    current_epoch,
                    ..
                } => Some((*epoch, *current_epoch)),
                _ => None,
            })
            .collect();
        assert_eq!(adopted, vec![(first.epoch, second.epoch)]);
        assert_eq!(count_kind(&events, "result_accepted"), 1, "exactly once");
        assert_eq!(count_kind(&events, "result_stale"), 0);
    });
}

#[test]
fn a_late_result_that_fails_the_contract_is_fenced() {
    run_paused(|| async {
        let (out, events) = run_one(late_then_slow(adopting(), json!({"value": "one"}))).await;
        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
        assert_eq!(
            out.output.as_deref(),
            Some(&json!({"value": 2})),
            "the running attempt's"
        );
        assert_eq!(count_kind(&events, "result_adopted"), 0);
        assert_eq!(
            count_kind(&events, "result_stale"),
            1,
            "the late result, fenced"
        );
        assert_eq!(count_kind(&events, "result_accepted"), 1);
    });
}

#[test]
fn a_capability_that_is_not_idempotent_never_adopts() {
    run_paused(|| async {
        let spec = cap().adopt_late_results(); // asked for, but not idempotent
        let (out, events) = run_one(late_then_slow(spec, json!({"value": 1}))).await;
        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
        assert_eq!(out.output.as_deref(), Some(&json!({"value": 2})));
        assert_eq!(count_kind(&events, "result_adopted"), 0);
        assert_eq!(count_kind(&events, "result_stale"), 1);
        assert_eq!(count_kind(&events, "result_accepted"), 1);
    });
}

#[test]
fn the_default_fences_a_late_result_of_an_idempotent_capability() {
    run_paused(|| async {
        let spec = cap().idempotent(Duration::from_secs(60));
        let (out, events) = run_one(late_then_slow(spec, json!({"value": 1}))).await;
        assert_eq!(out.output.as_deref(), Some(&json!({"value": 2})));
        assert_eq!(count_kind(&events, "result_adopted"), 0);
        assert_eq!(count_kind(&events, "result_stale"), 1);
    });
}
