//! An instance's queue: attempts wait in it while every slot is taken and start, in order,
//! as slots free. An attempt whose agent answers without waiting ends on its first poll and
//! is reported at once (no task of its own): a long queue of such attempts is worked off in
//! a loop, never by a recursion as deep as the queue, and a panic on a first poll crashes
//! the instance and fails what it still holds, as any panic does.

use crate::support::common;

use std::sync::Arc;
use std::time::Duration;

use common::{agent, builder, input, paused, within};
use muster::{LeaseOutcome, Muster, Task, TaskStatus};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::oneshot;

const LONG: Duration = Duration::from_secs(3600);

/// A runtime with one instance running one attempt at a time and queueing up to `queue`;
/// its first attempt waits until the returned sender fires. Attempts of inputs with
/// `panic_at` panic on their first poll (first attempt only); the others answer at once.
async fn held_instance(queue: usize, panic_at: Option<i64>) -> (Muster, oneshot::Sender<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let first = Arc::new(Mutex::new(Some(rx)));
    let m = builder()
        .agent(
            agent("one", move |input, ctx| {
                let held = first.lock().take();
                let n = input["n"].as_i64().unwrap_or(0);
                async move {
                    if let Some(rx) = held {
                        let _ = rx.await;
                    }
                    if Some(n) == panic_at && ctx.attempt == 1 {
                        panic!("boom on the first poll of {n}");
                    }
                    Ok(json!({"value": n}))
                }
            })
            .concurrency(1)
            .mailbox(queue),
        )
        .start()
        .await
        .expect("runtime starts");
    (m, tx)
}

/// Submits tasks `0..n`, each with a long time bound, and waits until every one is held by
/// the instance (its slot reserved: running or queued).
async fn submit_all(m: &Muster, n: i64) -> Vec<muster::TaskHandle> {
    let mut handles = Vec::new();
    for i in 0..n {
        let task = Task::new(common::CAP, input(i)).timeout(LONG).attempts(3);
        handles.push(m.submit(task).await.expect("submitted"));
    }
    let one = m.instance("one#0").expect("the instance");
    for _ in 0..10_000 {
        if one.load() == n as usize {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(one.load(), n as usize, "every task is held by the instance");
    handles
}

#[test]
fn a_long_queue_of_attempts_that_end_at_once_is_worked_off_in_order() {
    // Deep enough that a recursion per queued attempt would overflow a test thread's stack.
    const N: i64 = 20_000;
    paused(async {
        let (m, release) = held_instance(N as usize, None).await;
        let handles = submit_all(&m, N).await;
        release.send(()).expect("the first attempt waits");
        let mut order = Vec::new();
        for (i, h) in handles.into_iter().enumerate() {
            let out = within(60, "every outcome", h.outcome()).await;
            assert_eq!(out.status, TaskStatus::Completed, "task {i}: {out:?}");
            assert_eq!(out.output.as_deref(), Some(&json!({"value": i})));
            assert_eq!(out.leases.len(), 1, "task {i} ran once");
            order.push(out.leases[0].started_ms);
        }
        assert!(
            order.windows(2).all(|w| w[0] <= w[1]),
            "started in the order they were queued"
        );
        let one = m.instance("one#0").expect("the instance");
        assert_eq!(one.load(), 0, "every slot freed");
        m.shutdown().await;
    })
}

#[test]
fn a_panic_on_a_first_poll_fails_the_queue_and_every_task_still_completes() {
    paused(async {
        let (m, release) = held_instance(8, Some(2)).await;
        let handles = submit_all(&m, 6).await;
        release.send(()).expect("the first attempt waits");
        let mut outs = Vec::new();
        for h in handles {
            outs.push(within(60, "every outcome", h.outcome()).await);
        }
        for (i, out) in outs.iter().enumerate() {
            assert_eq!(out.status, TaskStatus::Completed, "task {i}: {out:?}");
            assert_eq!(out.output.as_deref(), Some(&json!({"value": i})));
        }
        // Tasks 0 and 1 ran before the panic; task 2 panicked on its first poll.
        assert_eq!(outs[0].leases.len(), 1);
        assert_eq!(outs[1].leases.len(), 1);
        assert!(matches!(
            &outs[2].leases[0].outcome,
            LeaseOutcome::Failed { failure } if failure.reason() == "panic"
                && failure.detail().contains("boom on the first poll of 2")
        ));
        // Tasks 3..5 were queued behind it: failed with the crash at once, then run again
        // on the restarted instance.
        for (i, out) in outs.iter().enumerate().skip(3) {
            assert_eq!(out.leases.len(), 2, "task {i}: {:?}", out.leases);
            assert!(
                matches!(&out.leases[0].outcome, LeaseOutcome::Failed { .. }),
                "task {i}: {:?}",
                out.leases[0]
            );
        }
        m.shutdown().await;
    })
}
