//! A task's time bounds are checked at submission: a timeout, deadline or backoff beyond
//! the documented limit (366 days) is refused naming the field, never a panic when the
//! runtime turns it into an instant.

mod common;

use std::time::Duration;

use common::{builder, echo, input, paused, CAP};
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
