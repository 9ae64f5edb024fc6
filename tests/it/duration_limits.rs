//! Durations beyond 100 years in a scenario or a manifest are refused at load naming the
//! file and the field (exit 2), instead of overflowing the clock's arithmetic at run
//! time: a scenario's `backoff = "500000000000y"` panicked with "overflow when
//! multiplying duration by scalar", its `timeout` or `horizon` with "overflow when adding
//! duration to instant". Every child process here runs under a watchdog.

use crate::support::common;

use std::path::Path;
use std::process::Output;

use muster::SchemaStore;
use muster::cast::Manifest;

fn muster_within(secs: u64, args: &[&str]) -> Output {
    common::muster_within(secs, args, Path::new("."))
}

const SCENARIO: &str = r#"
name = "t"
capability = "code.test"
input = { workspace = "/tmp/w" }
tasks = 3
timeout = "10s"
backoff = "100ms"
horizon = "1d"
[[agents]]
name = "tester"
replicas = 2
[[agents.capabilities]]
name = "code.test"
input = "test-request"
output = "test-report"
[[faults]]
at = "1s"
drop = "tester"
rejoin_after = "1s"
"#;

#[test]
fn a_scenario_duration_beyond_the_limit_exits_2_instead_of_panicking() {
    let d = tempfile::tempdir().unwrap();
    let schemas = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("schemas");
    for (from, to, field) in [
        (
            "backoff = \"100ms\"",
            "backoff = \"500000000000y\"",
            "backoff",
        ),
        (
            "timeout = \"10s\"",
            "timeout = \"500000000000y\"",
            "timeout",
        ),
        ("horizon = \"1d\"", "horizon = \"500000000000y\"", "horizon"),
        ("at = \"1s\"", "at = \"500000000000y\"", "faults[0].at"),
        (
            "rejoin_after = \"1s\"",
            "rejoin_after = \"500000000000y\"",
            "faults[0].rejoin_after",
        ),
    ] {
        let p = d.path().join("s.toml");
        std::fs::write(&p, SCENARIO.replace(from, to)).unwrap();
        let out = muster_within(
            120,
            &[
                "sim",
                p.to_str().unwrap(),
                "--schemas",
                schemas.to_str().unwrap(),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{to}: {err}");
        assert!(
            err.contains("s.toml") && err.contains(&format!("{field}:")),
            "{to}: {err}"
        );
    }
}

#[test]
fn a_manifest_duration_beyond_the_limit_is_refused_naming_the_field() {
    let d = tempfile::tempdir().unwrap();
    let store = SchemaStore::new();
    store
        .add("any", serde_json::json!({"type": "object"}))
        .unwrap();
    let base = r#"name = "tester"
LIVENESS
[supervision]
period = "10s"
[[capabilities]]
name = "code.test"
input = "any"
output = "any"
heartbeat = "1s"
[backend]
kind = "function"
name = "echo"
"#;
    for (from, to, field) in [
        (
            "period = \"10s\"",
            "period = \"1000y\"",
            "/supervision/period",
        ),
        (
            "[supervision]",
            "[supervision]\nshutdown = \"1000y\"",
            "/supervision/shutdown",
        ),
        (
            "heartbeat = \"1s\"",
            "heartbeat = \"1000y\"",
            "/capabilities/0/heartbeat",
        ),
        ("LIVENESS", "liveness = \"1000y\"", "/liveness"),
    ] {
        let p = d.path().join("tester.toml");
        std::fs::write(&p, base.replace(from, to).replace("LIVENESS", "")).unwrap();
        let e = Manifest::load(&p, &store, Some(Default::default())).unwrap_err();
        assert!(e.iter().any(|e| e.field == field), "{to}: {e:?}");
    }
    // Within the limit, and `liveness` is a field the manifest schema knows.
    let schemas = SchemaStore::new();
    schemas
        .load_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("schemas"))
        .unwrap();
    schemas
        .add("any", serde_json::json!({"type": "object"}))
        .unwrap();
    let p = d.path().join("tester.toml");
    std::fs::write(&p, base.replace("LIVENESS", "liveness = \"30s\"")).unwrap();
    Manifest::load(&p, &schemas, Some(Default::default())).unwrap();
}
