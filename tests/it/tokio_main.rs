//! The runtime is usable from a plain `#[tokio::main]` program: it starts its own thread and
//! the handle talks to it.

use muster::{AgentDef, CapabilitySpec, Muster, Task};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tokio_program_registers_delegates_and_lists() {
    let m = Muster::builder()
        .schema("any", json!({"type": "object"}))
        .agent(
            AgentDef::function("echo", |v, _| async move { Ok(v) })
                .capability(CapabilitySpec::new("echo", "any", "any")),
        )
        .start()
        .await
        .expect("starts on its own thread");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        m.delegate(Task::new("echo", json!({"from": "tokio"}))),
    )
    .await
    .expect("bounded")
    .expect("accepted");
    assert_eq!(out.output.as_deref(), Some(&json!({"from": "tokio"})));
    assert_eq!(m.agents().len(), 1);
    m.shutdown().await;
}
