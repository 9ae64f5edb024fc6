//! G2: one owner at a time. An attempt that times out is taken over by another agent under
//! a higher epoch; when the first agent answers late (after its deadline, before the
//! instance aborts it) the answer is journaled `result_stale` with its old epoch and never
//! accepted. The agent is handed its epoch, so it can fence its own side effects.

use crate::support::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use muster::{Event, LeaseOutcome, Task, TaskStatus};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);

/// What each agent saw: (instance, epoch, attempt).
type Seen = Arc<Mutex<Vec<(String, u64, u32)>>>;

/// Attempt 1 answers 0.5 s after its deadline (inside the 1 s grace); attempt 2 answers
/// after `second` with a value that names it.
fn late_then_slow(seen: Seen, second: Duration) -> muster::AgentDef {
    agent("w", move |input, ctx| {
        let seen = seen.clone();
        async move {
            seen.lock()
                .expect("lock")
                .push((ctx.agent.to_string(), ctx.epoch, ctx.attempt));
            let n = input["n"].as_i64().unwrap_or(0);
            if ctx.attempt == 1 {
                tokio::time::sleep(TIMEOUT + Duration::from_millis(500)).await;
                Ok(json!({"value": n}))
            } else {
                tokio::time::sleep(second).await;
                Ok(json!({"value": n + 1000}))
            }
        }
    })
    .replicas(2)
}

#[test]
fn a_late_answer_is_fenced_while_the_next_owner_works() {
    run_paused(|| async {
        let seen: Seen = Arc::default();
        let m = builder()
            .agent(late_then_slow(seen.clone(), Duration::from_millis(1500)))
            .start()
            .await
            .expect("runtime starts");
        let h = m
            .submit(Task::new(CAP, input(1)).timeout(TIMEOUT).attempts(3))
            .await
            .expect("submitted");
        let id = h.id();
        let out = within(60, "the task's outcome", h.outcome()).await;

        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
        assert_eq!(
            out.output.as_deref(),
            Some(&json!({"value": 1001})),
            "the second agent's output"
        );
        assert_eq!(out.leases.len(), 2);
        let (first, second) = (&out.leases[0], &out.leases[1]);
        assert_ne!(first.agent, second.agent, "reassigned to a different agent");
        assert!(
            second.epoch > first.epoch,
            "the new lease has a higher epoch"
        );
        assert!(matches!(
            &first.outcome,
            LeaseOutcome::Failed { failure } if failure.reason() == "timeout"
        ));
        assert_eq!(second.outcome, LeaseOutcome::Completed);
        assert_eq!(out.owner(), Some(second.agent.as_ref()));
        assert_eq!(out.stale_rejected, 1, "the late answer was fenced");
        assert_eq!(out.accepted_results(), 1);

        // Each agent was handed the epoch of its own lease.
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(
            seen,
            vec![
                (first.agent.to_string(), first.epoch, 1),
                (second.agent.to_string(), second.epoch, 2)
            ]
        );

        let events = events_of(&m, id);
        assert_eq!(count_kind(&events, "result_accepted"), 1);
        let stale: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::ResultStale {
                    agent,
                    epoch,
                    current_epoch,
                    ..
                } => Some((agent.to_string(), *epoch, *current_epoch)),
                _ => None,
            })
            .collect();
        assert_eq!(
            stale,
            vec![(first.agent.to_string(), first.epoch, second.epoch)]
        );
        // The stale answer came before the accepted one, and the accepted one is epoch 2's.
        let pos = |kind: &str| events.iter().position(|e| e.kind() == kind);
        assert!(pos("result_stale") < pos("result_accepted"));
        assert!(events.iter().any(|e| matches!(
            e,
            Event::ResultAccepted { epoch, output, .. }
                if *epoch == second.epoch && **output == json!({"value": 1001})
        )));
        assert_eq!(m.stats().stale_rejected, 1);
        assert_eq!(m.stats().reassigned, 1);
    });
}

#[test]
fn a_late_answer_after_completion_is_still_journaled_stale() {
    run_paused(|| async {
        let seen: Seen = Arc::default();
        let m = builder()
            .agent(late_then_slow(seen, Duration::ZERO))
            .start()
            .await
            .expect("runtime starts");
        let h = m
            .submit(Task::new(CAP, input(2)).timeout(TIMEOUT).attempts(3))
            .await
            .expect("submitted");
        let id = h.id();
        let out = within(60, "the task's outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Completed);
        assert_eq!(out.output.as_deref(), Some(&json!({"value": 1002})));
        // The first agent answers 0.5 s after its deadline, i.e. after the task completed.
        pass(Duration::from_secs(3)).await;
        let events = events_of(&m, id);
        assert_eq!(count_kind(&events, "result_accepted"), 1);
        let first_epoch = out.leases[0].epoch;
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::ResultStale { epoch, .. } if *epoch == first_epoch
            )),
            "{events:#?}"
        );
        assert_eq!(m.stats().stale_rejected, 1);
        assert_eq!(m.stats().completed, 1);
    });
}
