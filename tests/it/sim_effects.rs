//! Exactly-once effects in the simulator (issue 26, item 4): the shipped scenario
//! `effects-crash-after.toml` makes every task do one effect through the effect ledger,
//! and 10% of attempts crash right after it, before their result. Every crashed task is
//! reassigned, and its next attempt finds the effect done: effects run = tasks, 0 repeated,
//! 0 of unknown outcome, and the same seed gives the same digest twice. (The issue's
//! 10^6 tasks are a measurement, `muster sim ... --tasks 1000000`; here 10^4.)

use muster::SchemaStore;
use muster::scenario::{Scenario, SimOptions, SimReport, run};

use crate::support::common::muster;

fn simulate(count: u64) -> SimReport {
    let schemas = SchemaStore::new();
    schemas.load_dir("schemas").expect("the schemas load");
    let s = Scenario::load(
        "examples/scenarios/effects-crash-after.toml".as_ref(),
        &schemas,
    )
    .expect("the scenario loads");
    run(
        &s,
        SimOptions {
            count: Some(count),
            ..SimOptions::default()
        },
    )
    .expect("the simulation runs")
}

#[test]
fn a_crash_after_the_effect_never_repeats_it_and_one_seed_gives_one_digest() {
    let a = simulate(10_000);
    assert_eq!(a.tasks.total, 10_000);
    assert_eq!(a.tasks.completed, 10_000, "{a:?}");
    assert!(
        a.failed_attempts > 500,
        "about 10% of attempts crashed after their effect: {a:?}"
    );
    assert_eq!(a.effects.run, 10_000, "every task did its effect");
    assert_eq!(a.effects.repeated, 0, "no effect was done twice");
    assert_eq!(a.effects.unknown, 0);
    let b = simulate(10_000);
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.effects, b.effects);
}

/// Every simulated crash is a panic taken on the runtime's real path, and each kind of
/// them (a plain crash and a crash after the effect) stays out of stderr: 10^6 tasks at
/// 10 % faults would otherwise print 10^5 panic messages.
#[test]
fn the_cli_prints_no_panic_message_for_simulated_crashes_of_either_kind() {
    let out = muster()
        .args([
            "sim",
            "examples/scenarios/effects-crash-after.toml",
            "--tasks",
            "300",
            "--json",
        ])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("muster sim starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON document on stdout");
    assert!(
        v["failed_attempts"].as_u64().unwrap_or(0) > 0,
        "some attempts crashed after their effect: {v}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
