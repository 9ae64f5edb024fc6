//! Bounded memory: finished work leaves nothing behind in memory beyond the runtime's
//! bounded retention. After many finished tasks the owner table is empty, the in-memory
//! journal holds at most its ring, the dead letters at most theirs (with a count of the
//! dropped), and no gate is left for a run that went away. Proven by lengths, never by
//! timing, on the paused clock.

use crate::support::common;

use std::sync::Arc;
use std::time::Duration;

use common::{builder, echo, input, paused, within};
use futures::StreamExt;
use muster::journal::{Journal, JournalConfig, MemoryJournal};
use muster::workflow::Workflow;
use muster::workflow::engine::RunOptions;
use muster::workflow::gates::Gates;
use muster::{Envelope, Recipient, RuntimeConfig, Task, WorkflowExt};
use serde_json::json;
use uuid::Uuid;

const TASKS: usize = 3_000;
const RING: usize = 500;

#[test]
fn finished_tasks_leave_no_owner_and_the_journal_holds_only_its_ring() {
    paused(async {
        let journal = Arc::new(MemoryJournal::new(JournalConfig {
            retain_records: RING,
            ..JournalConfig::default()
        }));
        let m = builder()
            .journal(journal.clone())
            .agent(echo("worker").replicas(4))
            .start()
            .await
            .unwrap();
        let ended = within(
            600,
            "every task",
            futures::stream::iter(0..TASKS)
                .map(|i| {
                    let m = m.clone();
                    async move {
                        let h = m.submit(Task::new("work", input(i as i64))).await.unwrap();
                        h.outcome().await.is_completed()
                    }
                })
                .buffer_unordered(64)
                .filter(|ok| futures::future::ready(*ok))
                .count(),
        )
        .await;
        assert_eq!(ended, TASKS);
        // Every owner is gone from the table once its task ended.
        assert_eq!(m.live_tasks(), 0);
        // The journal numbered every record but holds only the most recent ones.
        assert!(journal.len() > (TASKS * 3) as u64, "{}", journal.len());
        assert_eq!(journal.retained(), RING);
        assert_eq!(journal.dropped(), journal.len() - RING as u64);
        let kept = journal.read_after(0);
        assert_eq!(kept.len(), RING);
        assert_eq!(kept.last().map(|r| r.seq), Some(journal.len()));
        m.shutdown().await;
    });
}

#[test]
fn dead_letters_keep_the_most_recent_and_count_the_rest() {
    paused(async {
        let m = builder()
            .config(RuntimeConfig {
                dead_letters: 5,
                ..RuntimeConfig::default()
            })
            .start()
            .await
            .unwrap();
        for i in 0..40 {
            let env = Envelope::new(
                "nobody",
                Recipient::Capability("nobody".into()),
                "in",
                input(i),
            );
            assert!(within(60, "a failed send", m.send(env)).await.is_err());
        }
        assert_eq!(m.dead_letters().len(), 5);
        assert_eq!(m.dead_letter_counts(), (40, 35));
        // The journal still has every one.
        let failed = m
            .journal()
            .read_after(0)
            .iter()
            .filter(|r| r.event.kind() == "envelope_failed")
            .count();
        assert_eq!(failed, 40);
        m.shutdown().await;
    });
}

const GATED: &str = r#"
name = "gated"
input = "any"
start = "ask"
[steps.ask]
gate = "Ship it?"
on_approve = "done"
[steps.done]
terminal = "done"
"#;

#[test]
fn a_run_dropped_while_it_waits_at_a_gate_leaves_no_gate_behind() {
    paused(async {
        let m = builder().schema("any", json!({})).start().await.unwrap();
        let wf = Arc::new(Workflow::parse(GATED, "gated.toml".as_ref(), &m.schemas()).unwrap());
        let gates = m.extension::<Gates>();
        for n in 0..20u128 {
            let id = Uuid::from_u128(n + 1);
            let runner = m.clone();
            let wf = wf.clone();
            let run = actix::spawn(async move {
                let opts = RunOptions {
                    run_id: Some(id),
                    ..RunOptions::default()
                };
                runner.run_workflow_with(wf, json!({}), opts).await
            });
            within(10, "the gate", async {
                while !m.is_waiting(id, "ask") {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            assert_eq!(gates.waiting(), 1);
            run.abort();
            let _ = run.await;
            assert!(!m.is_waiting(id, "ask"));
            assert_eq!(gates.waiting(), 0);
        }
        m.shutdown().await;
    });
}
