//! The journal never acknowledges what it has not written, and one journal has one
//! writer. Through the real binary: a run on a slow disk killed after it printed steps as
//! completed has every one of them in the journal, and resuming it runs none of them
//! again; a second writer is refused naming the holder; a gate is decided once however
//! many deciders race; a kill while the journal file is being created, or a hot rollback
//! journal beside it, never leaves it unreadable.

use crate::support::cast::{Cast, OBJECT, function_agent};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use muster::journal::sqlite::read_journal;
use muster::journal::{Durability, Event, Journal, Record, SqliteJournal};
use serde_json::Value;

const STEPS: usize = 8;

/// A chain of `STEPS` task steps on the built-in `echo` agent, then `done`.
fn chain() -> String {
    let mut w = String::from("name = \"chain\"\ninput = \"obj\"\nstart = \"s1\"\n");
    for i in 1..=STEPS {
        let next = if i == STEPS {
            "done".to_string()
        } else {
            format!("s{}", i + 1)
        };
        w.push_str(&format!(
            "\n[steps.s{i}]\ncapability = \"echo\"\ntimeout = \"20s\"\nattempts = 2\non_exhausted = \"fail\"\nnext = \"{next}\"\n"
        ));
    }
    w.push_str("\n[steps.done]\nterminal = \"done\"\n");
    w
}

const GATED: &str = r#"
name = "gated"
input = "obj"
start = "prepare"

[steps.prepare]
capability = "echo"
timeout = "10s"
attempts = 1
on_exhausted = "fail"
next = "ask"

[steps.ask]
gate = "Ship it?"
on_approve = "done"
on_reject = "stop"

[steps.done]
terminal = "done"

[steps.stop]
terminal = "fail"
"#;

fn setup() -> tempfile::TempDir {
    let echo = function_agent("echo", "echo", "obj", "echo", "replicas = 2");
    Cast::new()
        .schema("obj", OBJECT)
        .actor("echo", &echo)
        .file("chain.toml", &chain())
        .file("gated.toml", GATED)
        .into_dir()
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = crate::support::common::muster_cmd(dir);
    c.args(args).stdin(Stdio::null());
    c
}

/// Waits (at most 60 s) for a child to end; kills it and fails the test otherwise.
fn finish(child: Child, what: &str) -> Output {
    crate::support::common::wait_within(child, 60, what)
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let child = command(dir, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("muster starts");
    finish(child, &format!("muster {args:?}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn completed_steps(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepCompleted { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_step_printed_as_completed_is_in_the_journal_even_on_a_slow_disk_killed_at_once() {
    // Each commit of the journal takes 20 ms (a slow disk); the run is killed right after
    // it printed its k-th completed step. Whatever it printed must be in the journal, and
    // resuming must finish the run without running a completed step again.
    for kill_after in [1, 3, 5] {
        let dir = setup();
        let mut child = command(
            dir.path(),
            &["run", "chain.toml", "--input", "{}", "--journal", "j.db"],
        )
        .env("MUSTER_JOURNAL_COMMIT_DELAY", "20ms")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("muster starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut printed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("a line");
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.contains(&"completed") && words.first().is_some_and(|w| w.starts_with('s')) {
                printed.push(words[0].to_string());
                if printed.len() == kill_after {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "no progress within 60 s");
        }
        // SIGKILL: no flush, no shutdown, nothing after this line runs in muster.
        child.kill().expect("kill");
        let _ = child.wait();
        assert_eq!(printed.len(), kill_after, "the run printed {printed:?}");
        let journal = read_journal(dir.path().join("j.db"), 0).expect("the journal opens");
        let stored = completed_steps(&journal);
        for step in &printed {
            assert!(
                stored.contains(step),
                "step {step} was printed as completed but is not in the journal (kill after {kill_after}; journal has {stored:?})"
            );
        }
        let out = run(
            dir.path(),
            &[
                "resume",
                "--journal",
                "j.db",
                "--actors",
                "actors",
                "--schemas",
                "schemas",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let journal = read_journal(dir.path().join("j.db"), 0).expect("the journal opens");
        let mut stored = completed_steps(&journal);
        stored.sort();
        stored.dedup_by(|a, b| a == b);
        let all = completed_steps(&journal);
        assert_eq!(
            all.len(),
            STEPS,
            "every step completed exactly once: {all:?}"
        );
        assert_eq!(stored.len(), STEPS);
    }
}

#[test]
fn a_second_writer_is_refused_naming_the_journal_and_the_holders_pid() {
    let dir = setup();
    let path = dir.path().join("j.db");
    let holder = SqliteJournal::open(&path, Durability::Relaxed).expect("open");
    holder.append(
        0,
        Event::Note {
            text: "held".into(),
        },
    );
    holder.flush().expect("flush");
    for args in [
        vec!["run", "chain.toml", "--input", "{}", "--journal", "j.db"],
        vec!["resume", "--journal", "j.db"],
    ] {
        let out = run(dir.path(), &args);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(all.contains("j.db"), "names the journal: {all}");
        assert!(
            all.contains(&format!("pid {}", std::process::id())),
            "names the holder's pid: {all}"
        );
    }
    // Nothing was written by the refused processes.
    assert_eq!(holder.read_after(0).len(), 1);
    // In the same process too: a journal is opened for writing once.
    let again = SqliteJournal::open(&path, Durability::Relaxed);
    assert!(
        matches!(again, Err(muster::JournalError::Locked { .. })),
        "{again:?}"
    );
    drop(holder);
    SqliteJournal::open(&path, Durability::Relaxed).expect("free once the holder is gone");
}

#[test]
fn a_closed_journal_can_be_reopened_at_once_while_a_forked_child_still_holds_its_descriptors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let j = SqliteJournal::open(&path, Durability::Relaxed).expect("open");
    j.append(0, Event::Note { text: "x".into() });
    // What another thread spawning a process does: between fork and exec the child holds
    // a copy of every descriptor, the journal's lock file among them.
    // SAFETY: the child only calls async-signal-safe functions, then exits.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        unsafe {
            libc::sleep(30);
            libc::_exit(0);
        }
    }
    drop(j);
    let again = SqliteJournal::open(&path, Durability::Relaxed);
    // SAFETY: `child` is our own child's pid.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    let again = again.expect("the closed journal is free while the child lives");
    assert_eq!(again.read_after(0).len(), 1);
}

#[test]
fn racing_deciders_decide_a_gate_once_and_the_loser_is_told_what_stands() {
    for round in 0..4 {
        let dir = setup();
        let out = run(
            dir.path(),
            &[
                "run",
                "gated.toml",
                "--input",
                "{}",
                "--journal",
                "j.db",
                "--json",
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(3),
            "waits at the gate: {}",
            text(&out)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document on stdout");
        let run_id = doc["run"].as_str().expect("run id").to_string();
        let spawn = |reject: bool| {
            let mut args = vec!["approve", "--journal", "j.db", run_id.as_str(), "ask"];
            if reject {
                args.push("--reject");
            }
            command(dir.path(), &args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("approve starts")
        };
        let (a, b) = (spawn(round % 2 == 0), spawn(round % 2 == 1));
        let (a, b) = (finish(a, "approve"), finish(b, "approve"));
        let codes = [a.status.code(), b.status.code()];
        assert!(
            codes.contains(&Some(0)) && codes.contains(&Some(2)),
            "exactly one decision wins: {codes:?}\n{}\n{}",
            text(&a),
            text(&b)
        );
        let loser = if a.status.code() == Some(2) { &a } else { &b };
        assert!(
            text(loser).contains("already decided"),
            "the loser is told the decision that stands: {}",
            text(loser)
        );
        let journal = read_journal(dir.path().join("j.db"), 0).expect("journal");
        let decisions = journal
            .iter()
            .filter(|r| matches!(r.event, Event::GateDecided { .. }))
            .count();
        assert_eq!(decisions, 1);
    }
}

#[test]
fn a_kill_while_the_journal_is_being_created_never_leaves_it_unreadable() {
    // Kill `muster run` at moments spread over its start-up (when the journal file is
    // created); every later open of the journal must work, and a run on it completes.
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80] {
        let dir = setup();
        let mut child = command(
            dir.path(),
            &["run", "chain.toml", "--input", "{}", "--journal", "j.db"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("muster starts");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let path = dir.path().join("j.db");
        if path.exists() {
            read_journal(&path, 0).unwrap_or_else(|e| panic!("killed after {delay_ms} ms: {e}"));
        }
        let out = run(
            dir.path(),
            &["run", "chain.toml", "--input", "{}", "--journal", "j.db"],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "killed after {delay_ms} ms, then: {}",
            text(&out)
        );
    }
}

#[test]
fn a_hot_rollback_journal_left_by_a_killed_writer_is_recovered_on_open() {
    let dir = setup();
    let path = dir.path().join("j.db");
    {
        let j = SqliteJournal::open(&path, Durability::Sync).expect("open");
        j.append(
            0,
            Event::Note {
                text: "kept".into(),
            },
        );
        j.flush().expect("flush");
    }
    // Another SQLite client switches the file to rollback-journal mode, starts writing
    // and is SIGKILLed mid-transaction: a hot `-journal` is left beside the file.
    let script = r#"
import os, signal, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=DELETE")
c.execute("PRAGMA cache_size=1")
c.execute("BEGIN")
for i in range(20000):
    c.execute("INSERT INTO meta(key, value) VALUES (?, ?)", ("k%d" % i, "x" * 200))
os.kill(os.getpid(), signal.SIGKILL)
"#;
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .status()
        .expect("python3 runs");
    assert!(!status.success(), "the writer was killed");
    let hot = dir.path().join("j.db-journal");
    assert!(
        std::fs::metadata(&hot)
            .map(|m| m.len() > 0)
            .unwrap_or(false),
        "a hot journal is left"
    );
    let j = SqliteJournal::open(&path, Durability::Relaxed).expect("recovered on open");
    let records = j.read_after(0);
    assert_eq!(
        records.len(),
        1,
        "the committed record survives, the torn write does not"
    );
}

#[test]
fn records_nobody_waits_for_are_gathered_and_one_wait_commits_them_in_one_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = muster::journal::JournalConfig {
        commit_window: Duration::from_secs(3600),
        ..muster::journal::JournalConfig::default()
    };
    let j = SqliteJournal::open_with(dir.path().join("j.db"), Durability::Relaxed, config)
        .expect("open");
    for i in 0..3 {
        j.append(
            i,
            Event::Note {
                text: i.to_string(),
            },
        );
    }
    let stats = |j: &SqliteJournal| j.write_stats().expect("sqlite counts its commits");
    assert_eq!(stats(&j).commits, 0, "nobody waits: nothing committed yet");
    j.wait_durable(3).expect("written");
    let s = stats(&j);
    assert_eq!(
        (s.commits, s.records),
        (1, 3),
        "one group commit for all three"
    );
}

#[test]
fn a_record_nobody_waits_for_is_still_written_within_the_commit_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let config = muster::journal::JournalConfig {
        commit_window: Duration::from_millis(20),
        ..muster::journal::JournalConfig::default()
    };
    let j = SqliteJournal::open_with(&path, Durability::Relaxed, config).expect("open");
    j.append(
        0,
        Event::Note {
            text: "unwaited".into(),
        },
    );
    // Read from another connection, which waits for nothing: the writer commits on its
    // own once the window is over (bounded here by wall time, not asserted as a timing).
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if read_journal(&path, 0).map(|r| r.len()).unwrap_or(0) == 1 {
            break;
        }
        assert!(Instant::now() < until, "the record was never written");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(j);
}

#[test]
fn closing_commits_every_queued_record_beyond_one_batch_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let config = muster::journal::JournalConfig {
        commit_window: Duration::from_secs(3600),
        ..muster::journal::JournalConfig::default()
    };
    let j = SqliteJournal::open_with(&path, Durability::Relaxed, config).expect("open");
    // More than two of the writer's batches (8,192 records), nobody waiting for any.
    const N: u64 = 20_000;
    for i in 0..N {
        j.append(
            i,
            Event::Note {
                text: i.to_string(),
            },
        );
    }
    j.close().expect("closed with every record committed");
    assert_eq!(
        j.append(
            0,
            Event::Note {
                text: "late".into()
            }
        ),
        N + 1,
        "an append after close is numbered and refused, not queued"
    );
    let records = read_journal(&path, 0).expect("readable");
    assert_eq!(
        records.len() as u64,
        N,
        "every queued record is in the file"
    );
    assert!(
        records
            .iter()
            .enumerate()
            .all(|(k, r)| r.seq == k as u64 + 1
                && r.event
                    == Event::Note {
                        text: k.to_string()
                    }),
        "in order, gap-free, each record its own"
    );
}
