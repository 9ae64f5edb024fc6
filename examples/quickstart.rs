//! Quickstart: register two function agents, list them, route a message by capability,
//! delegate a task, print the replies.
//!
//! Run: `cargo run --example quickstart`

use muster_core::{AgentDef, CapabilitySpec, Envelope, Muster, Recipient, Task};
use serde_json::json;

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let text = json!({"type": "object", "required": ["text"],
                      "properties": {"text": {"type": "string"}}, "additionalProperties": false});
    let count = json!({"type": "object", "required": ["words"],
                       "properties": {"words": {"type": "integer", "minimum": 0}}});
    let muster = Muster::builder()
        .schema("text", text)
        .schema("word-count", count)
        .agent(
            AgentDef::function("shouter", |input, _ctx| async move {
                let t = input["text"].as_str().unwrap_or_default().to_uppercase();
                Ok(json!({ "text": t }))
            })
            .capability(CapabilitySpec::new("text.shout", "text", "text"))
            .replicas(2),
        )
        .agent(
            AgentDef::function("counter", |input, _ctx| async move {
                let n = input["text"]
                    .as_str()
                    .unwrap_or_default()
                    .split_whitespace()
                    .count();
                Ok(json!({ "words": n }))
            })
            .capability(
                CapabilitySpec::new("text.count", "text", "word-count").accept("output.words >= 0"),
            ),
        )
        .start()
        .await?;

    for a in muster.agents() {
        let caps: Vec<_> = a.capabilities.iter().map(|c| c.name.as_str()).collect();
        println!("{:<10} {:<8} {}", a.id, a.state, caps.join(", "));
    }

    // Messaging: route an envelope by capability and wait for the reply.
    let env = Envelope::new(
        "text.shout",
        Recipient::Capability("text.shout".into()),
        "text",
        json!({"text": "hello, muster"}),
    )
    .from("quickstart");
    let reply = muster.send(env).await?;
    println!("reply from {}: {}", reply.sender, reply.payload);

    // An invalid payload never reaches an agent: it fails with the validator's paths.
    let bad = Envelope::new(
        "text.shout",
        Recipient::Capability("text.shout".into()),
        "text",
        json!({"text": 42}),
    );
    let err = muster.send(bad).await.unwrap_err();
    println!("refused: {} ({})", err.reason, err.detail);

    // Delegation: a task with one owner at a time, a time bound and an attempt budget.
    let outcome = muster
        .delegate(Task::new(
            "text.count",
            json!({"text": "one owner at a time"}),
        ))
        .await?;
    println!(
        "{} words, counted by {} in {} attempt(s)",
        outcome.output.clone().unwrap_or_default()["words"],
        outcome.owner().unwrap_or("?"),
        outcome.attempts()
    );
    muster.shutdown().await;
    Ok(())
}
