//! Scope leases: a task takes its whole scope before its first lease and holds it to its
//! end. Overlapping writes never run at once (they wait first come, first served, or fail
//! naming the holder), every end state frees the scope, many tasks with overlapping
//! multi-pattern scopes never deadlock, the table is rebuilt from the journal, and a write
//! outside the scope is a contract violation that is reassigned.

use crate::support::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use muster::delegation::scope_table::held_at;
use muster::journal::Record;
use muster::{Event, Muster, Scope, Task, TaskStatus};
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

fn scope(write: &[&str], read: &[&str]) -> Scope {
    Scope::new(write, read).expect("valid scope")
}

/// An agent with room for many tasks at once that works `n` seconds (virtual) on `{"n": n}`.
async fn slow_runtime() -> Muster {
    slow_runtime_seeded(7).await
}

async fn slow_runtime_seeded(seed: u64) -> Muster {
    builder()
        .seed(seed)
        .agent(
            agent("w", |input, _| async move {
                let n = input["n"].as_i64().unwrap_or(0);
                tokio::time::sleep(Duration::from_secs(n.max(0) as u64)).await;
                Ok(json!({"value": n}))
            })
            .concurrency(64),
        )
        .start()
        .await
        .expect("runtime starts")
}

/// The tasks in the order they were granted their scope.
fn acquired(records: &[Record]) -> Vec<Uuid> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::ScopeAcquired { task, .. } => Some(*task),
            _ => None,
        })
        .collect()
}

/// Replays grants and releases: no two scopes held at the same time conflict.
fn assert_never_overlapping(records: &[Record]) {
    let mut held: Vec<(Uuid, Scope)> = Vec::new();
    for r in records {
        match &r.event {
            Event::ScopeAcquired { task, scope } => {
                for (other, theirs) in &held {
                    assert!(
                        scope.conflict_with(theirs).is_none(),
                        "task {task} was granted {scope:?} while {other} held {theirs:?}"
                    );
                }
                held.push((*task, scope.clone()));
            }
            Event::ScopeReleased { task } => held.retain(|(t, _)| t != task),
            _ => {}
        }
    }
}

#[test]
fn overlapping_write_scopes_wait_in_fifo_order_and_disjoint_ones_pass() {
    run_paused(|| async {
        let m = slow_runtime().await;
        let user = scope(&["concept:UserService", "src/user/**"], &[]);
        let mut handles = Vec::new();
        for _ in 0..3 {
            handles.push(
                m.submit(
                    Task::new(CAP, input(10))
                        .timeout(Duration::from_secs(60))
                        .scope(user.clone()),
                )
                .await
                .expect("submitted"),
            );
            pass(Duration::from_millis(1)).await;
        }
        let other = m
            .submit(Task::new(CAP, input(1)).scope(scope(&["src/billing/**"], &["src/user/**"])))
            .await
            .expect("submitted");
        let ids: Vec<Uuid> = handles.iter().map(|h| h.id()).collect();
        let other_id = other.id();
        // A reader of src/user/** overlaps the writers: it waits too, behind them.
        let o = within(120, "the reader", other.outcome()).await;
        assert_eq!(o.status, TaskStatus::Completed);
        let mut outs = Vec::new();
        for h in handles {
            outs.push(within(120, "a writer", h.outcome()).await);
        }
        assert!(outs.iter().all(|o| o.status == TaskStatus::Completed));
        let records = journal(&m);
        let order = acquired(&records);
        let writers: Vec<Uuid> = order.iter().copied().filter(|t| ids.contains(t)).collect();
        assert_eq!(writers, ids, "writers are granted in the order they asked");
        // The reader asked after all three writers: it is behind them (FIFO), not first.
        assert_eq!(order.last(), Some(&other_id), "{order:?}");
        let waiting = records
            .iter()
            .filter(|r| matches!(&r.event, Event::ScopeWaiting { task, holder, .. } if *task == ids[1] && *holder == ids[0]))
            .count();
        assert_eq!(
            waiting, 1,
            "the second writer is journaled waiting for the first"
        );
        assert_never_overlapping(&records);
        // The writers ran one after another: 10 s each.
        let ends: Vec<u64> = outs.iter().map(|o| o.ended_ms.unwrap_or(0)).collect();
        assert!(ends[0] < ends[1] && ends[1] < ends[2], "{ends:?}");
    });
}

#[test]
fn a_task_without_overlap_does_not_wait_for_a_held_scope() {
    run_paused(|| async {
        let m = slow_runtime().await;
        let a = m
            .submit(
                Task::new(CAP, input(100))
                    .timeout(Duration::from_secs(200))
                    .scope(scope(&["src/a/**"], &["spec/**"])),
            )
            .await
            .unwrap();
        pass(Duration::from_millis(1)).await;
        let b = m
            .submit(Task::new(CAP, input(1)).scope(scope(&["src/b/**"], &["spec/**"])))
            .await
            .unwrap();
        let out = within(
            10,
            "the disjoint task (it must not wait 100 s)",
            b.outcome(),
        )
        .await;
        assert_eq!(out.status, TaskStatus::Completed);
        m.cancel(a.id()).await;
    });
}

#[test]
fn on_conflict_fail_names_the_holder_and_the_overlapping_patterns() {
    run_paused(|| async {
        let m = slow_runtime().await;
        let a = m
            .submit(Task::new(CAP, input(10)).scope(scope(&["src/user_service/**"], &[])))
            .await
            .unwrap();
        pass(Duration::from_millis(1)).await;
        let b = m
            .submit(
                Task::new(CAP, input(1))
                    .scope(scope(&["src/*/mod.rs"], &[]))
                    .fail_on_conflict(),
            )
            .await
            .unwrap();
        let out = within(5, "the refused task", b.outcome()).await;
        assert_eq!(out.status, TaskStatus::Escalated);
        assert!(out.leases.is_empty(), "nothing was leased");
        let reason = out.escalation.expect("escalated").reason;
        assert!(reason.contains(&a.id().to_string()), "{reason}");
        assert!(
            reason.contains("src/user_service/**") && reason.contains("src/*/mod.rs"),
            "{reason}"
        );
        assert!(
            reason.contains("src/user_service/mod.rs"),
            "an example path: {reason}"
        );
        assert_eq!(
            within(30, "a", a.outcome()).await.status,
            TaskStatus::Completed
        );
    });
}

#[test]
fn every_end_state_frees_the_scope() {
    run_paused(|| async {
        let failures = Arc::new(AtomicUsize::new(0));
        let f = failures.clone();
        let m = builder()
            .agent(
                agent("w", move |input, _| {
                    let f = f.clone();
                    async move {
                        let n = input["n"].as_i64().unwrap_or(0);
                        if n < 0 {
                            f.fetch_add(1, Ordering::SeqCst);
                            return Err("refuses negative numbers".into());
                        }
                        tokio::time::sleep(Duration::from_secs(n as u64)).await;
                        Ok(json!({"value": n}))
                    }
                })
                .concurrency(8),
            )
            .start()
            .await
            .unwrap();
        let s = scope(&["concept:Ledger"], &[]);
        // Escalated (attempt budget spent).
        let esc = m
            .submit(Task::new(CAP, input(-1)).attempts(1).scope(s.clone()))
            .await
            .unwrap();
        let esc_id = esc.id();
        assert_eq!(
            within(10, "escalated", esc.outcome()).await.status,
            TaskStatus::Escalated
        );
        // Cancelled while holding.
        let held = m
            .submit(
                Task::new(CAP, input(50))
                    .timeout(Duration::from_secs(100))
                    .scope(s.clone()),
            )
            .await
            .unwrap();
        pass(Duration::from_secs(1)).await;
        // Cancelled while waiting behind it.
        let waiting = m
            .submit(
                Task::new(CAP, input(1))
                    .timeout(Duration::from_secs(100))
                    .scope(s.clone()),
            )
            .await
            .unwrap();
        pass(Duration::from_secs(1)).await;
        assert!(m.cancel(waiting.id()).await);
        assert!(m.cancel(held.id()).await);
        // Completed.
        let done = m
            .submit(Task::new(CAP, input(1)).scope(s.clone()))
            .await
            .unwrap();
        let done_id = done.id();
        assert_eq!(
            within(10, "completed (the scope is free)", done.outcome())
                .await
                .status,
            TaskStatus::Completed
        );
        let last = m
            .submit(Task::new(CAP, input(1)).scope(s.clone()))
            .await
            .unwrap();
        let last_id = last.id();
        assert_eq!(
            within(10, "after a completed task", last.outcome())
                .await
                .status,
            TaskStatus::Completed
        );
        let records = journal(&m);
        assert_never_overlapping(&records);
        let released: Vec<Uuid> = records
            .iter()
            .filter_map(|r| match r.event {
                Event::ScopeReleased { task } => Some(task),
                _ => None,
            })
            .collect();
        for id in [esc_id, held.id(), waiting.id(), done_id, last_id] {
            assert!(released.contains(&id), "{id} freed its scope");
        }
        assert!(held_at(&records).is_empty(), "nothing is held at the end");
        assert_eq!(failures.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn the_journal_rebuilds_the_table_and_a_restored_scope_is_not_taken_by_another_task() {
    run_paused(|| async {
        // First life: a task holds its scope when the runtime goes away.
        let m1 = slow_runtime().await;
        let s = scope(&["src/user/**"], &["spec/**"]);
        let a = m1
            .submit(
                Task::new(CAP, input(1000))
                    .timeout(Duration::from_secs(2000))
                    .scope(s.clone()),
            )
            .await
            .unwrap();
        let a_id = a.id();
        pass(Duration::from_secs(1)).await;
        let records = journal(&m1);
        assert_eq!(
            held_at(&records),
            vec![(a_id, s.clone())],
            "rebuilt from the journal"
        );

        // Second life: the table is restored, an overlapping newcomer waits for the resumed task.
        // Another seed: its task ids differ from the first life's.
        let m2 = slow_runtime_seeded(8).await;
        m2.restore_scopes(held_at(&records));
        let mut resumed = Task::new(CAP, input(5)).scope(s.clone());
        resumed.id = Some(a_id);
        let newcomer = m2
            .submit(Task::new(CAP, input(1)).scope(scope(&["src/user/api.rs"], &[])))
            .await
            .unwrap();
        pass(Duration::from_secs(2)).await;
        let r = m2.submit(resumed).await.unwrap();
        let ro = within(30, "the resumed task", r.outcome()).await;
        let no = within(30, "the newcomer", newcomer.outcome()).await;
        assert_eq!(
            (ro.status, no.status),
            (TaskStatus::Completed, TaskStatus::Completed)
        );
        assert!(
            no.ended_ms > ro.ended_ms,
            "the newcomer ran after the resumed task freed the restored scope"
        );
        drop(m1);
    });
}

#[test]
fn a_write_outside_the_scope_is_a_contract_violation_and_is_reassigned() {
    run_paused(|| async {
        let rogue = agent("rogue", |input, _| async move {
            Ok(json!({"value": input["n"], "touched": ["src/user/a.rs", "src/billing/ledger.rs"]}))
        });
        let good = agent("good", |input, ctx| async move {
            let scope = ctx.scope().expect("the agent gets its scope");
            assert!(scope.allows_write("src/user/a.rs"));
            Ok(json!({"value": input["n"], "touched": ["src/user/a.rs"]}))
        });
        let m = builder().agent(rogue).start().await.unwrap();
        let h = m
            .submit(
                Task::new(CAP, input(3))
                    .timeout(Duration::from_secs(5))
                    .scope(scope(&["src/user/**"], &[])),
            )
            .await
            .unwrap();
        pass(Duration::from_millis(10)).await;
        m.register(good).await.unwrap();
        let out = within(60, "the outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
        assert_eq!(out.leases.len(), 2, "reassigned after the violation");
        assert_eq!(&*out.leases[1].agent, "good#0");
        let failed: Vec<(String, String)> = events_of(&m, out.id)
            .into_iter()
            .filter_map(|e| match e {
                Event::AttemptFailed { reason, detail, .. } => Some((reason, detail)),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, "contract_violation");
        assert!(
            failed[0].1.contains("src/billing/ledger.rs"),
            "{}",
            failed[0].1
        );
        assert!(!failed[0].1.contains("`src/user/a.rs`"), "{}", failed[0].1);
    });
}

#[test]
fn a_task_without_a_scope_ignores_touched_and_takes_no_scope() {
    run_paused(|| async {
        let m = builder()
            .agent(agent("w", |input, ctx| async move {
                assert!(ctx.scope().is_none());
                Ok(json!({"value": input["n"], "touched": ["anything"]}))
            }))
            .start()
            .await
            .unwrap();
        let out = within(5, "the outcome", m.delegate(Task::new(CAP, input(1))))
            .await
            .unwrap();
        assert_eq!(out.status, TaskStatus::Completed);
        let kinds: Vec<&str> = journal(&m).iter().map(|r| r.event.kind()).collect();
        assert!(!kinds.iter().any(|k| k.starts_with("scope_")), "{kinds:?}");
    });
}

/// A pool of overlapping patterns: each task writes some and reads others.
const POOL: [&str; 6] = [
    "src/**",
    "src/user/**",
    "src/user/mod.rs",
    "concept:UserService",
    "docs/*.md",
    "docs/api.md",
];

fn scopes() -> impl Strategy<Value = Vec<(Vec<usize>, Vec<usize>, u64)>> {
    proptest::collection::vec(
        (
            proptest::collection::vec(0..POOL.len(), 0..3),
            proptest::collection::vec(0..POOL.len(), 0..3),
            1..5u64,
        ),
        2..24,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn many_tasks_with_overlapping_multi_pattern_scopes_never_deadlock(tasks in scopes()) {
        run_paused(|| async move {
            let m = slow_runtime().await;
            let mut handles = Vec::new();
            for (w, r, secs) in &tasks {
                let write: Vec<&str> = w.iter().map(|i| POOL[*i]).collect();
                let read: Vec<&str> = r.iter().map(|i| POOL[*i]).collect();
                let t = Task::new(CAP, input(*secs as i64))
                    .timeout(Duration::from_secs(10))
                    .deadline(Duration::from_secs(1000))
                    .scope(scope(&write, &read));
                handles.push(m.submit(t).await.expect("submitted"));
            }
            for h in handles {
                let o = within(2000, "every task (a deadlock would hang here)", h.outcome()).await;
                assert_eq!(o.status, TaskStatus::Completed, "{o:?}");
            }
            let records = journal(&m);
            assert_never_overlapping(&records);
            assert!(held_at(&records).is_empty());
        });
    }
}
