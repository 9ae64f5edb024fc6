//! Shared helpers for the foundation tests: a paused-clock actix system and bounded waits.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

/// Runs `f` on an actix system whose tokio clock is paused (virtual time).
pub fn paused<F: Future>(f: F) -> F::Output {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("tokio runtime")
    })
    .block_on(f)
}

/// Runs `f` on an actix system with the real clock (for tests that drive real processes).
pub fn real<F: Future>(f: F) -> F::Output {
    actix::System::new().block_on(f)
}

/// Fails the test if `f` does not finish within `secs` seconds (virtual under `paused`).
pub async fn within<F: Future>(secs: u64, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {secs}s"),
    }
}

/// The 5-field benchmark payload schema.
pub fn payload_schema() -> serde_json::Value {
    serde_json::json!({"type": "object",
        "required": ["task_id", "hops", "last", "data", "score"],
        "properties": {"task_id": {"type": "integer"}, "hops": {"type": "integer"},
                       "last": {"type": "string"}, "data": {"type": "string"},
                       "score": {"type": "number"}}})
}
