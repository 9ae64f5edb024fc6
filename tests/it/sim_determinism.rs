//! G6: a simulation with the same seed produces the same journal, byte for byte, on
//! virtual time; another seed another one. Runs the shipped heavy-faults workflow scenario
//! (crashes, hangs, late answers, violations, an instance killed, an agent type dropping
//! out and rejoining, agents with concurrency 2) twice in one process.

use muster::SchemaStore;
use muster::scenario::{Scenario, SimOptions, SimReport, run};

fn simulate(seed: Option<u64>, count: u64) -> SimReport {
    let schemas = SchemaStore::new();
    schemas.load_dir("schemas").unwrap();
    let s = Scenario::load(
        "examples/scenarios/code-review-heavy-faults.toml".as_ref(),
        &schemas,
    )
    .unwrap();
    run(
        &s,
        SimOptions {
            seed,
            count: Some(count),
            ..SimOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn one_seed_one_report_and_one_digest() {
    let a = simulate(None, 40);
    let b = simulate(None, 40);
    assert_eq!(a.deterministic(), b.deterministic());
    assert_eq!(a.digest, b.digest);
    assert!(a.events > 500, "the scenario did something: {a:?}");
    assert!(
        a.failed_attempts > 0 && a.restarts > 0,
        "faults happened: {a:?}"
    );
    let c = simulate(Some(a.seed + 1), 40);
    assert_ne!(a.digest, c.digest);
}

#[test]
fn the_same_seed_gives_the_same_sqlite_journal() {
    let schemas = SchemaStore::new();
    schemas.load_dir("schemas").unwrap();
    let s = Scenario::load("examples/scenarios/all-agents-fail.toml".as_ref(), &schemas).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    let mut records = Vec::new();
    for i in 0..2 {
        let path = dir.path().join(format!("j{i}.db"));
        let r = run(
            &s,
            SimOptions {
                journal: Some(path.clone()),
                ..SimOptions::default()
            },
        )
        .unwrap();
        digests.push(r.digest);
        let recs = muster::journal::sqlite::read_journal(&path, 0).unwrap();
        assert_eq!(recs.len() as u64, r.events);
        records.push(serde_json::to_string(&recs).unwrap());
    }
    assert_eq!(digests[0], digests[1]);
    assert_eq!(records[0], records[1]);
}

/// A scenario whose tasks arrive one at a time (each done before the next arrives) on two
/// idle instances: only the pick's rotation spreads them.
const ONE_AT_A_TIME: &str = r#"
name = "one-at-a-time"
capability = "code.test"
input = { workspace = "/tmp/sim-workspace" }
tasks = 20
seed = 7
arrival = { kind = "poisson", rate = 0.5 }
timeout = "10s"
attempts = 1

[[agents]]
name = "tester"
replicas = 2
concurrency = 1
latency = { kind = "fixed", value = "10ms" }
[[agents.capabilities]]
name = "code.test"
input = "test-request"
output = "test-report"
"#;

#[test]
fn equally_idle_instances_take_turns_and_the_same_seed_still_gives_the_same_journal() {
    let schemas = SchemaStore::new();
    schemas.load_dir("schemas").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one-at-a-time.toml");
    std::fs::write(&file, ONE_AT_A_TIME).unwrap();
    let s = Scenario::load(&file, &schemas).unwrap();
    let mut digests = Vec::new();
    for i in 0..2 {
        let path = dir.path().join(format!("j{i}.db"));
        let r = run(
            &s,
            SimOptions {
                journal: Some(path.clone()),
                ..SimOptions::default()
            },
        )
        .unwrap();
        assert_eq!(r.tasks.completed, 20, "{r:?}");
        digests.push(r.digest);
        let mut per_instance = std::collections::BTreeMap::<String, u32>::new();
        for rec in muster::journal::sqlite::read_journal(&path, 0).unwrap() {
            if let muster::journal::Event::ResultAccepted { agent, .. } = &rec.event {
                *per_instance.entry(agent.to_string()).or_default() += 1;
            }
        }
        // Each task ran alone, on two idle instances: they took turns, 10 each.
        assert_eq!(
            per_instance.values().copied().collect::<Vec<_>>(),
            [10, 10],
            "results per instance: {per_instance:?}"
        );
    }
    assert_eq!(digests[0], digests[1]);
}
