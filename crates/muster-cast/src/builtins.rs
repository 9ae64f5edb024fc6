//! Function agents a manifest can name with `backend = { kind = "function", name = "..." }`.

use serde_json::{Value, json};

use muster_core::agents::{AgentFactory, FnAgent};

/// The names of the built-in function agents.
pub const NAMES: &[&str] = &["echo", "hop"];

/// A built-in function agent by name:
/// - `echo`: answers with its input;
/// - `hop`: the benchmark hop of `docs/workloads.md`: copies the payload, `hops += 1`,
///   `last = <instance>`.
pub fn builtin(name: &str) -> Option<Box<dyn AgentFactory>> {
    match name {
        "echo" => Some(Box::new(FnAgent::new(|input: Value, _ctx| async move {
            Ok(input)
        }))),
        "hop" => Some(Box::new(FnAgent::new(
            |mut input: Value, ctx: muster_core::TaskContext| async move {
                let hops = input["hops"].as_i64().unwrap_or(0) + 1;
                input["hops"] = json!(hops);
                input["last"] = json!(ctx.agent.as_ref());
                Ok(input)
            },
        ))),
        _ => None,
    }
}
