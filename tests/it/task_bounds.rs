//! A task's time bounds are checked at submission: a timeout, deadline or backoff beyond
//! the documented limit (366 days) is refused naming the field, never a panic when the
//! runtime turns it into an instant.

use crate::support::common;

use std::time::Duration;

use common::{CAP, builder, echo, input, paused};
use muster::{Backoff, SubmitError, Task};

#[test]
fn time_bounds_beyond_the_limit_are_refused_naming_the_field() {
    paused(async {
        let m = builder().agent(echo("echo")).start().await.expect("starts");
        let ages = Duration::from_secs(1_000 * 365 * 24 * 3600);
        let cases = [
            ("timeout", Task::new(CAP, input(1)).timeout(ages)),
            ("deadline", Task::new(CAP, input(1)).deadline(ages)),
            (
                "backoff.initial",
                Task::new(CAP, input(1)).backoff(Backoff {
                    initial: ages,
                    max: ages,
                    factor: 1.0,
                }),
            ),
        ];
        for (field, task) in cases {
            match m.submit(task).await {
                Err(SubmitError::InvalidTask { message, .. }) => {
                    assert!(message.contains(field), "{field}: {message}")
                }
                other => panic!("{field}: expected a refusal, got {other:?}"),
            }
        }
        // The limit itself is accepted.
        let ok = m
            .delegate(Task::new(CAP, input(2)).timeout(muster::delegation::task::MAX_DURATION))
            .await
            .expect("accepted");
        assert!(ok.is_completed());
        m.shutdown().await;
    })
}

#[test]
fn a_second_submission_of_a_live_tasks_id_is_refused_one_owner_at_a_time() {
    paused(async {
        let slow = common::agent("slow", |input, _ctx| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(serde_json::json!({"value": input["n"].as_i64().unwrap_or(0)}))
        });
        let m = builder().agent(slow).start().await.expect("starts");
        let id = uuid::Uuid::from_u128(42);
        let mut first = Task::new(CAP, input(1));
        first.id = Some(id);
        let handle = m.submit(first).await.expect("accepted");
        let mut second = Task::new(CAP, input(2));
        second.id = Some(id);
        match m.submit(second).await {
            Err(SubmitError::InvalidTask { message, .. }) => {
                assert!(message.contains(&id.to_string()), "{message}");
                assert!(message.contains("live"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let outcome = common::within(60, "the first task", handle.outcome()).await;
        assert!(outcome.is_completed(), "{outcome:?}");
        // Nothing of the refused one was journaled: one submission, one acceptance.
        let events = common::events_of(&m, id);
        assert_eq!(
            common::count_kind(&events, "task_submitted"),
            1,
            "{events:?}"
        );
        assert_eq!(
            common::count_kind(&events, "result_accepted"),
            1,
            "{events:?}"
        );
        // Once it ended, the id is free again (what a resumed run does).
        let mut again = Task::new(CAP, input(3));
        again.id = Some(id);
        assert!(m.delegate(again).await.expect("accepted").is_completed());
        m.shutdown().await;
    })
}
