//! G5 with many tasks at once: a task's outcome reaches its caller only once the journal
//! has written the task's terminal record, however many outcomes wait for the same
//! commits. On a SQLite journal whose commits are slow (a fault-injected slow disk), every
//! outcome a caller holds has its `result_accepted` in the file, as a separate reader of
//! the file sees it.

use crate::support::common;

use std::sync::Arc;
use std::time::Duration;

use common::{echo, input, real, within};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use muster::journal::sqlite::read_journal;
use muster::journal::{Durability, Event, JournalConfig, SqliteJournal};
use muster::{Task, TaskStatus};

const TASKS: i64 = 120;

#[test]
fn every_outcome_of_many_concurrent_tasks_is_in_the_file_when_its_caller_gets_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("journal.db");
    let config = JournalConfig {
        // Commits take a while: outcomes pile up behind them.
        commit_delay: Duration::from_millis(15),
        ..JournalConfig::default()
    };
    let journal = Arc::new(
        SqliteJournal::open_with(&path, Durability::Relaxed, config).expect("journal opens"),
    );
    real(async {
        let m = common::builder()
            .journal(journal.clone())
            .agent(echo("e").replicas(4))
            .start()
            .await
            .expect("runtime starts");
        let mut outcomes = FuturesUnordered::new();
        for i in 0..TASKS {
            let h = m
                .submit(Task::new(common::CAP, input(i)).timeout(Duration::from_secs(600)))
                .await
                .expect("submitted");
            outcomes.push(h.outcome());
        }
        let mut seen = 0;
        while let Some(out) = within(120, "every outcome", outcomes.next()).await {
            assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
            // What the caller holds is in the file already.
            let on_disk = read_journal(&path, 0).expect("a reader opens the file");
            let accepted = on_disk
                .iter()
                .any(|r| matches!(&r.event, Event::ResultAccepted { task, .. } if *task == out.id));
            assert!(
                accepted,
                "task {} was acknowledged before its result_accepted was written ({} records on disk)",
                out.id,
                on_disk.len()
            );
            seen += 1;
        }
        assert_eq!(seen, TASKS);
        m.shutdown().await;
    });
    journal.close().expect("closes");
}
