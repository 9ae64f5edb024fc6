//! Reading the SQLite journal costs its writer nothing: a read never makes the writer
//! commit early. The run index (`runs`, `run_entry`: run lists, the dashboard) answers
//! from what is committed, at once; a read of records (`read_after`, `read_batch`,
//! `records_of`) still sees every record appended before it, waiting for the group
//! commit that takes them rather than forcing one.

use std::time::Duration;

use muster::journal::{
    Durability, Event, Journal, JournalConfig, RunQuery, SqliteJournal, WriteStats,
};

fn open(dir: &std::path::Path, commit_window: Duration) -> SqliteJournal {
    let config = JournalConfig {
        commit_window,
        ..JournalConfig::default()
    };
    SqliteJournal::open_with(dir.join("j.db"), Durability::Relaxed, config).expect("open")
}

fn stats(j: &SqliteJournal) -> WriteStats {
    j.write_stats()
        .expect("the SQLite journal counts its commits")
}

fn started(run: uuid::Uuid) -> Event {
    Event::RunStarted {
        run,
        workflow: "w".into(),
        file: "w.toml".into(),
        input: serde_json::json!({}),
    }
}

fn all() -> RunQuery {
    RunQuery {
        limit: usize::MAX,
        ..RunQuery::default()
    }
}

#[test]
fn a_run_list_read_adds_no_commit_and_answers_what_is_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nobody waits for the record: without a read forcing it, it stays queued.
    let j = open(dir.path(), Duration::from_secs(3600));
    let run = uuid::Uuid::now_v7();
    let seq = j.append(1, started(run));
    let (listed, entry) = (j.runs(&all()), j.run_entry(run));
    assert_eq!(
        stats(&j).commits,
        0,
        "a run-list read made the writer commit"
    );
    assert!(listed.is_empty(), "the run is not committed yet");
    assert!(entry.is_none(), "the run is not committed yet");
    // Once the runtime has waited for the record (as it does before it reports a run),
    // the lists show it.
    j.wait_durable(seq).expect("written");
    assert_eq!(stats(&j).commits, 1);
    assert_eq!(j.runs(&all()).len(), 1);
    assert_eq!(j.run_entry(run).map(|e| e.started_seq), Some(seq));
    assert_eq!(
        stats(&j).commits,
        1,
        "reading committed state commits nothing"
    );
}

#[test]
fn a_record_appended_is_seen_by_every_read_of_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = open(dir.path(), JournalConfig::default().commit_window);
    let run = uuid::Uuid::now_v7();
    let first = j.append(1, started(run));
    assert_eq!(
        j.records_of(run).iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![first],
        "records_of sees the record appended before it"
    );
    let note = j.append(2, Event::Note { text: "n".into() });
    assert_eq!(
        j.read_after(first).last().map(|r| r.seq),
        Some(note),
        "read_after sees it"
    );
    let step = j.append(
        3,
        Event::StepEntered {
            run,
            step: "s".into(),
            visit: 1,
        },
    );
    assert_eq!(
        j.read_batch(note, 10)
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        vec![step],
        "read_batch sees it"
    );
    assert_eq!(j.records_of(run).len(), 2);
}

#[test]
fn a_read_of_records_waits_for_the_group_commit_instead_of_forcing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A window long enough that the second append below lands in it on any machine.
    let j = std::sync::Arc::new(open(dir.path(), Duration::from_secs(2)));
    let run = uuid::Uuid::now_v7();
    let first = j.append(1, started(run));
    let ready = std::sync::Arc::new(std::sync::Barrier::new(2));
    let reader = {
        let (j, ready) = (j.clone(), ready.clone());
        std::thread::spawn(move || {
            ready.wait();
            j.records_of(run)
        })
    };
    ready.wait();
    std::thread::sleep(Duration::from_millis(100));
    // A read that forced a commit would be done by now; this one waits for the window.
    assert!(
        !reader.is_finished(),
        "the read did not wait for the group commit"
    );
    assert_eq!(stats(&j).commits, 0, "the read forced a commit");
    let second = j.append(
        2,
        Event::StepEntered {
            run,
            step: "s".into(),
            visit: 1,
        },
    );
    let seen = reader.join().expect("the reader");
    assert!(
        seen.iter().any(|r| r.seq == first),
        "the reader sees the record appended before it: {seen:?}"
    );
    j.wait_durable(second).expect("written");
    let s = stats(&j);
    assert_eq!(
        (s.commits, s.records),
        (1, 2),
        "the read forced a commit of its own instead of waiting for the group's"
    );
}
