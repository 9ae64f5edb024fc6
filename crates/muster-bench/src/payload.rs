//! The benchmark payload and the hop every benchmark agent performs, shared by muster's
//! workloads and the raw tokio and actix baselines so all run the same work.

use serde_json::{Value, json};

/// The 5-field payload of task `i`.
pub fn payload(i: u64) -> Value {
    json!({"task_id": i, "hops": 0, "last": "", "data": "hello world", "score": 0.5})
}

/// What every agent does: copy the payload, `hops += 1`, `last = name`.
pub fn hop(mut v: Value, name: &str) -> Value {
    let h = v["hops"].as_i64().unwrap_or(0) + 1;
    v["hops"] = json!(h);
    v["last"] = json!(name);
    v
}
