//! A simulation ends at its horizon, in virtual time, whatever the scenario's numbers:
//! arrivals due past the horizon are never scheduled (they are lost), a vanishing, zero or
//! subnormal arrival rate ends at the horizon instead of waiting for ever, and durations of
//! billions of years (timeouts, backoffs, fault times, the horizon itself) neither overflow
//! the clock nor stretch the run. Only virtual time is asserted. Each simulation runs on its
//! own thread and the test waits for it with a generous bound, so that a regression fails
//! instead of hanging the suite.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use muster::SchemaStore;
use muster::scenario::{Arrival, RuntimeFault, Scenario, SimOptions, SimReport, run};

const HOUR_MS: u64 = 3_600_000;

/// A capability scenario for the `code.test` capability of one agent type; `top` goes at
/// the top level of the file, `agent` into the agent's table, `tail` at the end.
fn scenario(top: &str, agent: &str, tail: &str) -> Scenario {
    let text = format!(
        r#"
name = "horizon"
capability = "code.test"
input = {{ workspace = "/tmp/w" }}
{top}
[[agents]]
name = "t"
replicas = 2
{agent}
[[agents.capabilities]]
name = "code.test"
input = "test-request"
output = "test-report"
{tail}
"#
    );
    let schemas = SchemaStore::new();
    schemas.load_dir("schemas").unwrap();
    Scenario::parse(&text, Path::new("horizon.toml"), &schemas).unwrap()
}

/// Runs `s` on a thread of its own; fails (rather than hangs) if it does not end.
fn run_bounded(s: Scenario) -> SimReport {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(&s, SimOptions::default()).map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(r) => r.unwrap(),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("the simulation did not end: it ran past its horizon")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the simulation panicked"),
    }
}

#[test]
fn poisson_arrivals_due_past_the_horizon_are_never_scheduled() {
    // 20 arrivals at one per ~21 virtual minutes: about 7 hours of them, a 1-hour horizon.
    let s = scenario(
        "tasks = 20\nhorizon = \"1h\"\narrival = { kind = \"poisson\", rate = 0.0008 }",
        "latency = { kind = \"fixed\", value = \"1s\" }",
        "",
    );
    let r = run_bounded(s);
    assert!(r.hit_horizon, "{r:?}");
    assert!(r.virtual_ms <= HOUR_MS, "ran {} virtual ms", r.virtual_ms);
    assert!(r.tasks.total < 20, "{r:?}");
    // Every task is either finished or lost; the ones never submitted are lost.
    assert_eq!(r.tasks.completed + r.tasks.lost, 20, "{r:?}");
    assert!(r.failed());
}

#[test]
fn a_vanishing_arrival_rate_ends_at_the_horizon() {
    for rate in ["1e-300", "5e-324"] {
        let s = scenario(
            &format!(
                "tasks = 3\nhorizon = \"1h\"\narrival = {{ kind = \"poisson\", rate = {rate} }}"
            ),
            "",
            "",
        );
        let r = run_bounded(s);
        assert!(r.hit_horizon, "rate {rate}: {r:?}");
        assert_eq!(r.virtual_ms, HOUR_MS, "rate {rate}");
        assert_eq!((r.tasks.total, r.tasks.lost), (0, 3), "rate {rate}: {r:?}");
    }
}

#[test]
fn a_zero_negative_or_nan_rate_set_from_rust_ends_at_the_horizon() {
    for rate in [0.0, -1.0, f64::NAN, f64::MIN_POSITIVE / 1e10] {
        let mut s = scenario("tasks = 3\nhorizon = \"1h\"", "", "");
        s.arrival = Arrival::Poisson { rate };
        let r = run_bounded(s);
        assert!(r.hit_horizon, "rate {rate}: {r:?}");
        assert_eq!(r.virtual_ms, HOUR_MS, "rate {rate}");
        assert_eq!(r.tasks.lost, 3, "rate {rate}: {r:?}");
    }
}

#[test]
fn durations_of_billions_of_years_neither_overflow_nor_stretch_the_run() {
    // In a file they are refused at load, naming the field.
    const AEONS: &str = "\"500000000000y\"";
    let text = format!(
        "name = \"horizon\"\ncapability = \"code.test\"\ninput = {{ workspace = \"/tmp/w\" }}\ntasks = 1\ntimeout = {AEONS}\n[[agents]]\nname = \"t\"\n[[agents.capabilities]]\nname = \"code.test\"\ninput = \"test-request\"\noutput = \"test-report\"\n"
    );
    let schemas = SchemaStore::new();
    schemas.load_dir("schemas").unwrap();
    let errs = Scenario::parse(&text, Path::new("horizon.toml"), &schemas).unwrap_err();
    assert!(errs.iter().any(|e| e.field.contains("timeout")), "{errs:?}");

    // Set from Rust (no file check), the runner still bounds them. A timeout and a
    // backoff that overflow an `Instant`: the first attempt fails, the retry is due long
    // after the horizon.
    let aeons = Duration::from_secs(500_000_000_000 * 365 * 24 * 3600);
    let mut s = scenario(
        "tasks = 1\nhorizon = \"1h\"\nattempts = 2",
        "error = 1.0",
        "",
    );
    s.timeout = aeons;
    s.backoff = aeons;
    let r = run_bounded(s);
    assert!(r.hit_horizon, "{r:?}");
    assert_eq!(r.virtual_ms, HOUR_MS);
    assert_eq!((r.failed_attempts, r.tasks.lost), (1, 1), "{r:?}");

    // A horizon and a fault time that overflow: the work ends first, the fault never comes.
    let mut s = scenario(
        "tasks = 2",
        "latency = { kind = \"fixed\", value = \"1s\" }",
        "[[faults]]\nat = \"99y\"\nkill = \"t#0\"\n",
    );
    s.horizon = aeons;
    for f in &mut s.faults {
        if let RuntimeFault::Kill { at, .. } = f {
            *at = aeons;
        }
    }
    let r = run_bounded(s);
    assert!(!r.hit_horizon, "{r:?}");
    assert_eq!((r.tasks.completed, r.faults_applied), (2, 0), "{r:?}");
    assert!(r.virtual_ms < HOUR_MS, "{r:?}");
}
