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
