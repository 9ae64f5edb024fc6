//! Swarm: 10,000 runs of a three-step pipeline (a → b → c, each a task step delegated to
//! function agents with several replicas, schemas on), 500 runs in flight at a time.
//! Prints runs/s, tasks/s, how many runs completed, and the process's resident memory
//! when 10 %, 50 % and 100 % of the runs had ended (memory must plateau: nothing is held
//! per finished run beyond the runtime's bounded retention).
//!
//! Run: `cargo run --release --example swarm` (add `-- RUNS IN_FLIGHT` to change the
//! sizes, e.g. `-- 1000000 500`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use muster::WorkflowExt;
use muster::workflow::{Workflow, check};
use muster::{AgentDef, CapabilitySpec, Muster};
use serde_json::{Value, json};

const PIPELINE: &str = r#"
name = "pipeline"
input = "item"
start = "a"

[steps.a]
capability = "stage.a"
timeout = "30s"
attempts = 2
on_exhausted = "fail"
next = "b"

[steps.b]
capability = "stage.b"
input = "steps.a.output"
timeout = "30s"
attempts = 2
on_exhausted = "fail"
next = "c"

[steps.c]
capability = "stage.c"
input = "steps.b.output"
timeout = "30s"
attempts = 2
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"
"#;

/// A stage: copies the item, counts the hop, names who did it.
fn stage(name: &str) -> AgentDef {
    AgentDef::function(
        name,
        |mut item: Value, ctx: muster::TaskContext| async move {
            let hops = item["hops"].as_i64().unwrap_or(0) + 1;
            item["hops"] = json!(hops);
            item["last"] = json!(ctx.agent.as_ref());
            Ok(item)
        },
    )
    .capability(CapabilitySpec::new(
        &format!("stage.{name}"),
        "item",
        "item",
    ))
    .replicas(4)
    .concurrency(64)
    .mailbox(1024)
}

/// The process's resident memory now, MiB (0 where `/proc/self/status` is not readable).
fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let in_flight: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let item = json!({"type": "object", "required": ["id", "hops"],
        "properties": {"id": {"type": "integer"}, "hops": {"type": "integer", "minimum": 0},
                       "last": {"type": "string"}}});
    let muster = Muster::builder()
        .schema("item", item)
        .agent(stage("a"))
        .agent(stage("b"))
        .agent(stage("c"))
        .start()
        .await?;
    let wf = Workflow::parse(PIPELINE, Path::new("swarm.toml"), &muster.schemas())
        .map_err(|e| format!("{e:?}"))?;
    // The same checks as `muster check`, before anything runs.
    let caps: Vec<CapabilitySpec> = ["a", "b", "c"]
        .iter()
        .map(|s| CapabilitySpec::new(&format!("stage.{s}"), "item", "item"))
        .collect();
    let findings = check(&wf, &caps, &muster.schemas());
    if !findings.is_empty() {
        for f in &findings {
            eprintln!("{f}");
        }
        return Err("the pipeline does not pass its checks".into());
    }
    let wf = Arc::new(wf);

    println!("{runs} runs of a → b → c, {in_flight} in flight, 3 agents × 4 replicas");
    let started = Instant::now();
    let mut marks = Vec::new();
    let mut ended = 0usize;
    let mut completed = 0usize;
    let mut outcomes = futures::stream::iter(0..runs)
        .map(|i| {
            let (m, wf) = (&muster, wf.clone());
            async move {
                match m.run_workflow(wf, json!({"id": i, "hops": 0})).await {
                    Ok(o) => o.is_completed() && o.outputs["c"]["hops"] == json!(3),
                    Err(_) => false,
                }
            }
        })
        .buffer_unordered(in_flight);
    while let Some(ok) = outcomes.next().await {
        ended += 1;
        completed += usize::from(ok);
        for percent in [10, 50, 100] {
            // The run that takes the count past `percent` of the total.
            if (ended - 1) * 100 < runs * percent && ended * 100 >= runs * percent {
                marks.push((percent, resident_mib()));
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{completed}/{runs} runs completed in {secs:.2} s: {:.0} runs/s, {:.0} tasks/s",
        completed as f64 / secs,
        (completed * 3) as f64 / secs
    );
    let marks: Vec<String> = marks
        .iter()
        .map(|(p, mb)| format!("{p}%: {mb:.0} MiB"))
        .collect();
    println!("resident memory at {}", marks.join(", "));
    muster.shutdown().await;
    if completed == runs {
        Ok(())
    } else {
        Err(format!("{} runs did not complete", runs - completed).into())
    }
}
