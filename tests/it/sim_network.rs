//! The failure simulator's network model (`[network]`, agents on nodes): on virtual time,
//! lost messages are noticed by the owner's lease timer and reassigned, reports that
//! arrive after their lease moved on (delayed, or held by a partition until it heals) are
//! fenced as stale and never accepted, nothing is lost or duplicated, the same seed gives
//! the same journal, and a bad `[network]` is a clear error naming the file and the field.
//! Each simulation runs on its own thread with a generous bound, so a regression fails
//! instead of hanging the suite.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use muster::SchemaStore;
use muster::journal::{Durability, Event, Journal, Record, SqliteJournal};
use muster::scenario::{Scenario, ScenarioError, SimOptions, SimReport, run};

/// Two agent types: `near` on node n1 (100 ms a task), `far` on node n2 (300 ms a task),
/// 60 tasks arriving at 20 a second, a 1 s lease and 6 attempts; `network` goes at the end.
fn text(network: &str) -> String {
    format!(
        r#"
name = "net"
capability = "code.test"
input = {{ workspace = "/tmp/w" }}
tasks = 60
seed = 3
arrival = {{ kind = "poisson", rate = 20.0 }}
timeout = "1s"
attempts = 6

[[agents]]
name = "near"
node = "n1"
replicas = 2
concurrency = 4
latency = {{ kind = "fixed", value = "100ms" }}
[[agents.capabilities]]
name = "code.test"
input = "test-request"
output = "test-report"

[[agents]]
name = "far"
node = "n2"
replicas = 2
concurrency = 4
latency = {{ kind = "fixed", value = "300ms" }}
[[agents.capabilities]]
name = "code.test"
input = "test-request"
output = "test-report"
{network}
"#
    )
}

fn schemas() -> SchemaStore {
    let s = SchemaStore::new();
    s.load_dir("schemas").unwrap();
    s
}

fn parse(network: &str) -> Result<Scenario, Vec<ScenarioError>> {
    Scenario::parse(&text(network), Path::new("net.toml"), &schemas())
}

/// Runs `s` on a thread of its own; fails (rather than hangs) if it does not end.
fn run_bounded(s: Scenario, opts: SimOptions) -> SimReport {
    let (tx, rx) = mpsc::channel();
    let journal = opts.journal.clone();
    let (seed, count) = (opts.seed, opts.count);
    std::thread::spawn(move || {
        let opts = SimOptions {
            journal,
            seed,
            count,
            ..SimOptions::default()
        };
        let _ = tx.send(run(&s, opts).map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(r) => r.unwrap(),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the simulation did not end"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the simulation panicked"),
    }
}

fn simulate(network: &str) -> SimReport {
    run_bounded(parse(network).unwrap(), SimOptions::default())
}

/// Simulates with a SQLite journal and reads it back.
fn simulate_journaled(network: &str) -> (SimReport, Vec<Record>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let r = run_bounded(
        parse(network).unwrap(),
        SimOptions {
            journal: Some(path.clone()),
            ..SimOptions::default()
        },
    );
    let records = SqliteJournal::open(&path, Durability::Relaxed)
        .unwrap()
        .read_after(0);
    (r, records)
}

/// The virtual time of the first note saying `what`.
fn note_at(records: &[Record], what: &str) -> u64 {
    records
        .iter()
        .find_map(|r| match &r.event {
            Event::Note { text } if text.contains(what) => Some(r.at_ms),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no `{what}` note in the journal"))
}

/// G1 and G2 as the tally checks them from the journal.
fn assert_nothing_lost_or_duplicated(r: &SimReport) {
    let t = r.tasks;
    assert_eq!((t.lost, t.duplicates), (0, 0), "{t:?}");
    assert_eq!(t.total, 60);
    assert_eq!(t.completed + t.escalated + t.cancelled, t.total, "{t:?}");
    assert_eq!(r.accepted_superseded, 0, "a fenced result was accepted");
    assert!(!r.hit_horizon);
}

#[test]
fn lost_messages_are_reassigned_by_the_lease_timer_and_nothing_is_lost_or_duplicated() {
    let (r, records) = simulate_journaled(
        r#"
[network]
delay = { kind = "uniform", min = "1ms", max = "20ms" }
loss = 0.15
"#,
    );
    assert_nothing_lost_or_duplicated(&r);
    let net = r.network.expect("a network report").counts;
    assert!(net.lost > 0, "{net:?}");
    // The agents never fail: every failed attempt is a lease timer noticing a lost
    // message (a lost assignment is not answered `agent_gone`).
    let reasons: std::collections::BTreeSet<String> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::AttemptFailed { reason, .. } => Some(reason.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, ["timeout".to_string()].into(), "{reasons:?}");
    assert!(net.delayed > 0, "{net:?}");
    // Every lost message is noticed by a lease timer: as many timeouts as losses at least
    // (a lost assignment or a lost report each cost one attempt).
    assert!(r.failed_attempts >= net.lost, "{r:?}");
    assert!(r.reassignments > 0);
    assert!(r.tasks.completed > 50, "{:?}", r.tasks);
}

#[test]
fn delayed_reports_that_miss_their_lease_are_fenced_as_stale() {
    // Up to 1.5 s each way against a 1 s lease: many reports come back too late.
    let r = simulate(
        r#"
[network]
delay = { kind = "uniform", min = "100ms", max = "1500ms" }
"#,
    );
    assert_nothing_lost_or_duplicated(&r);
    assert!(r.stale_rejected > 0, "{r:?}");
    assert_eq!(r.network.unwrap().counts.lost, 0);
}

/// The partition of `far`'s node n2 from 0.5 s to 2.5 s (longer than the 1 s lease).
const PARTITION: &str = r#"
[network]
[[network.partitions]]
node = "n2"
at = "500ms"
for = "2s"
"#;

#[test]
fn a_partition_longer_than_the_lease_reassigns_its_tasks_and_they_still_complete() {
    let r = simulate(PARTITION);
    assert_nothing_lost_or_duplicated(&r);
    let net = r.network.unwrap();
    assert!(net.counts.lost_in_partitions > 0, "{net:?}");
    assert_eq!((net.partitions, net.healed), (1, 1));
    assert!(r.reassignments > 0);
    // Reports sent into the partition are lost, not late: nothing to fence.
    assert_eq!(r.stale_rejected, 0);
    assert_eq!(r.tasks.completed, 60);
}

#[test]
fn results_held_by_a_partition_arrive_after_the_heal_and_are_stale_never_accepted() {
    // Without the partition every report is in time.
    let calm = simulate("[network]\nloss = 0.0\n");
    assert_nothing_lost_or_duplicated(&calm);
    assert_eq!(calm.stale_rejected, 0);

    let held = PARTITION.replace("for = \"2s\"", "for = \"2s\"\nhold = true");
    let (r, records) = simulate_journaled(&held);
    assert_nothing_lost_or_duplicated(&r);
    assert!(r.network.unwrap().counts.held_in_partitions > 0);
    assert!(r.stale_rejected > 0, "{r:?}");

    // From the journal: every result of `far` journaled during the partition or at its heal
    // came from a lease the owner had already given up; none of them was accepted.
    let (cut_ms, heal_ms) = (
        note_at(&records, "partitioned"),
        note_at(&records, "healed"),
    );
    assert_eq!(heal_ms - cut_ms, 2_000);
    let mut stale_after_heal = 0;
    for rec in &records {
        match &rec.event {
            Event::ResultStale { agent, .. } if agent.starts_with("far#") => {
                assert!(
                    rec.at_ms >= heal_ms,
                    "a held report arrived before the heal"
                );
                stale_after_heal += 1;
            }
            Event::ResultAccepted { agent, .. } if agent.starts_with("far#") => {
                assert!(
                    rec.at_ms < cut_ms || rec.at_ms > heal_ms,
                    "a result of the partitioned node was accepted during the partition"
                );
            }
            _ => {}
        }
    }
    assert!(stale_after_heal > 0);
}

#[test]
fn a_partitioned_nodes_agents_drop_out_after_the_ttl_and_rejoin_at_the_heal() {
    let (r, records) =
        simulate_journaled(&PARTITION.replace("for = \"2s\"", "for = \"2s\"\nttl = \"1s\""));
    assert_nothing_lost_or_duplicated(&r);
    assert_eq!(r.tasks.completed, 60);
    // far#0 and far#1 left the registry a second into the partition ...
    let (cut_ms, heal_ms) = (
        note_at(&records, "partitioned"),
        note_at(&records, "healed"),
    );
    let far = |rec: &&Record| match &rec.event {
        Event::AgentDroppedOut { agent, .. } => agent.starts_with("far#"),
        _ => false,
    };
    let dropped: Vec<u64> = records.iter().filter(far).map(|r| r.at_ms).collect();
    assert_eq!(dropped.len(), 2, "{r:?}");
    assert!(dropped.iter().all(|t| *t >= cut_ms + 1_000 && *t < heal_ms));
    // ... and registered again when it healed.
    let back = records
        .iter()
        .filter(|r| {
            r.at_ms >= heal_ms
                && matches!(&r.event, Event::AgentRegistered { agent, .. } if agent.starts_with("far#"))
        })
        .count();
    assert_eq!(back, 2);
}

#[test]
fn the_same_seed_gives_the_same_journal_with_the_network_on() {
    let network = r#"
[network]
delay = { kind = "exponential", mean = "300ms" }
loss = 0.1
[[network.partitions]]
node = "n2"
at = "1s"
for = "1500ms"
hold = true
"#;
    let a = simulate(network);
    let b = simulate(network);
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.deterministic(), b.deterministic());
    assert!(a.network.unwrap().counts.lost > 0);
    let other = run_bounded(
        parse(network).unwrap(),
        SimOptions {
            seed: Some(4),
            ..SimOptions::default()
        },
    );
    assert_ne!(a.digest, other.digest);
}

#[test]
fn a_bad_network_is_an_error_naming_the_field() {
    let cases = [
        ("[network]\nloss = 1.5\n", "network.loss"),
        ("[network]\nloss = -0.1\n", "network.loss"),
        ("[network]\nheartbeat_loss = 2\n", "network.heartbeat_loss"),
        ("[network]\nlossy = 0.1\n", "network.lossy"),
        (
            "[network]\ndelay = { kind = \"normal\", mean = \"1s\", std_dev = -1 }\n",
            "network.delay.std_dev",
        ),
        (
            "[network]\n[[network.partitions]]\nnode = \"n9\"\nat = \"1s\"\nfor = \"1s\"\n",
            "network.partitions[0].node",
        ),
        (
            "[network]\n[[network.partitions]]\nnode = \"n2\"\nat = \"1s\"\nfor = \"0s\"\n",
            "network.partitions[0].for",
        ),
        (
            "[network]\n[[network.partitions]]\nnode = \"n2\"\nat = \"1s\"\nfor = \"1s\"\nttl = \"0s\"\n",
            "network.partitions[0].ttl",
        ),
        (
            "[network]\n[[network.partitions]]\nnode = \"n2\"\nat = \"1s\"\nfor = \"9999d\"\n",
            "network.partitions[0].for",
        ),
        (
            "[network]\n[[network.partitions]]\nnode = \"n2\"\nat = \"1s\"\nfor = \"5s\"\n\
             [[network.partitions]]\nnode = \"n2\"\nat = \"2s\"\nfor = \"1s\"\n",
            "network.partitions[1]",
        ),
    ];
    for (network, field) in cases {
        let e = parse(network).expect_err(network);
        assert_eq!(e[0].field, field, "{network}: {e:?}");
        assert_eq!(e[0].file, Path::new("net.toml"));
    }
    // A bad node name, and a network that no agent is behind.
    let e = Scenario::parse(
        &text("").replace("node = \"n1\"", "node = \"N 1\""),
        Path::new("net.toml"),
        &schemas(),
    )
    .unwrap_err();
    assert_eq!(e[0].field, "agents[0].node", "{e:?}");
    let e = Scenario::parse(
        &text("[network]\nloss = 0.1\n")
            .replace("node = \"n1\"\n", "")
            .replace("node = \"n2\"\n", ""),
        Path::new("net.toml"),
        &schemas(),
    )
    .unwrap_err();
    assert_eq!(e[0].field, "network", "{e:?}");
}

#[test]
fn muster_sim_exits_2_on_a_bad_network_and_reports_the_network_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, text("[network]\nloss = 1.5\n")).unwrap();
    let out = crate::support::common::muster()
        .args(["sim", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("network.loss"),
        "{err}"
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, text(PARTITION)).unwrap();
    let out = crate::support::common::muster()
        .args(["sim", good.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["network"]["lost_in_partitions"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert_eq!(v["network"]["partitions"], 1);
    assert_eq!(v["accepted_superseded"], 0);
}
