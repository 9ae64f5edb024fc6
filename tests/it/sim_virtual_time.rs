//! Simulations run on virtual time: an hour of agent latency passes without an hour of
//! waiting. Only virtual time is asserted (never wall time, which a busy machine bends).

use std::path::Path;

use muster::SchemaStore;
use muster::scenario::{Scenario, SimOptions, run};

#[test]
fn an_hour_of_latency_is_an_hour_of_virtual_time() {
    let text = r#"
name = "slow-agents"
capability = "code.test"
input = { workspace = "/tmp/w" }
tasks = 5
timeout = "2h"
attempts = 1
[[agents]]
name = "glacial"
replicas = 5
latency = { kind = "fixed", value = "1h" }
[[agents.capabilities]]
name = "code.test"
input = "test-request"
output = "test-report"
"#;
    let schemas = SchemaStore::new();
    schemas.load_dir("schemas").unwrap();
    let s = Scenario::parse(text, Path::new("slow.toml"), &schemas).unwrap();
    let r = run(&s, SimOptions::default()).unwrap();
    assert_eq!(r.tasks.completed, 5, "{r:?}");
    assert!(
        r.virtual_ms >= 3_600_000,
        "virtual time {} ms",
        r.virtual_ms
    );
    let l = r.task_latency.unwrap();
    assert!(l.p50_ms >= 3_600_000 && l.max_ms < 3_700_000, "{l:?}");
}
