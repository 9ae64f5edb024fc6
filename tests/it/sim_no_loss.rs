//! G1 and G2 under simulated failure: whatever the seed, a scenario with high fault rates
//! (crashes, hangs, errors, contract violations, late answers, an instance killed, an
//! agent type dropping out and rejoining) ends with every task in exactly one terminal
//! state (lost = 0) and no task accepted twice (duplicates = 0), both computed from the
//! journal's records.

use std::path::Path;

use muster::SchemaStore;
use muster::scenario::{Scenario, SimOptions, run};
use proptest::prelude::*;

const SCENARIO: &str = r#"
name = "no-loss"
capability = "code.test"
input = { workspace = "/tmp/w" }
tasks = 120
arrival = { kind = "poisson", rate = 20.0 }
timeout = "5s"
attempts = 4
backoff = "50ms"

[[agents]]
name = "flaky"
replicas = 3
concurrency = 3
crash = 0.15
hang = 0.1
error = 0.1
violate = 0.1
late = 0.1
latency = { kind = "exponential", mean = "1s" }
[agents.supervision]
intensity = 20
period = "10s"
[[agents.capabilities]]
name = "code.test"
input = "test-request"
output = "test-report"

[[agents]]
name = "slow"
replicas = 2
concurrency = 2
crash = 0.1
late = 0.2
late_by = "300ms"
latency = { kind = "normal", mean = "3s", std_dev = "2s" }
[[agents.capabilities]]
name = "code.test"
input = "test-request"
output = "test-report"

[[faults]]
at = "2s"
kill = "flaky#1"

[[faults]]
at = "3s"
drop = "slow"
rejoin_after = "2s"
"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]

    #[test]
    fn nothing_is_lost_or_duplicated_whatever_the_seed(seed in any::<u64>()) {
        let schemas = SchemaStore::new();
        schemas.load_dir("schemas").unwrap();
        let s = Scenario::parse(SCENARIO, Path::new("no-loss.toml"), &schemas).unwrap();
        let r = run(&s, SimOptions { seed: Some(seed), ..SimOptions::default() }).unwrap();
        prop_assert_eq!(r.tasks.total, 120);
        prop_assert_eq!(r.tasks.lost, 0, "{:?}", r);
        prop_assert_eq!(r.tasks.duplicates, 0, "{:?}", r);
        prop_assert_eq!(r.tasks.completed + r.tasks.escalated + r.tasks.cancelled, 120);
        prop_assert!(!r.hit_horizon);
        prop_assert!(r.failed_attempts > 0);
    }
}
