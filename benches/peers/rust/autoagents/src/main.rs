//! W1, W2 and W3 of muster's docs/workloads.md on autoagents-core 0.4.0, the way it
//! connects agents: each agent a ractor actor subscribed to a typed `Topic` of a
//! `SingleThreadedRuntime`, messages published to topics with `TypedRuntime::publish`.
//!
//! - W1: actors A, B, C on topics `a`, `b`, `c`; the caller publishes the payload to `a`,
//!   A publishes its hop to `b`, B to `c`, and C hands the result to the caller's inbox
//!   (a tokio channel). Microseconds per handoff = task time / 3.
//! - W2: `--agents` echo actors, each on a topic of its own; task i is published to topic
//!   i % agents; `--in-flight` tasks are published, then their echoes awaited.
//! - W3: one echo actor; each publish-and-reply timed alone.
//!
//! One-thread tokio runtime, like muster's bench. Prints one JSON line.

#[path = "../../peer_common.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use autoagents_core::actor::{ActorMessage, CloneableMessage, Topic};
use autoagents_core::ractor::{Actor, ActorProcessingErr, ActorRef};
use autoagents_core::runtime::{Runtime, SingleThreadedRuntime, TypedRuntime};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

const PEER: &str = "autoagents-core";
const VERSION: &str = "0.4.0";

/// The message on every topic: the payload.
#[derive(Debug, Clone)]
struct PayloadMsg(Value);

impl ActorMessage for PayloadMsg {}
impl CloneableMessage for PayloadMsg {}

/// An agent: hops, then publishes to the next topic, or hands the result to the caller.
struct Hop {
    name: String,
    next: Option<Topic<PayloadMsg>>,
    runtime: Arc<SingleThreadedRuntime>,
    done: UnboundedSender<Value>,
}

#[async_trait::async_trait]
impl Actor for Hop {
    type Msg = PayloadMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let out = common::hop(message.0, &self.name);
        match &self.next {
            Some(topic) => self.runtime.publish(topic, PayloadMsg(out)).await?,
            None => self.done.send(out)?,
        }
        Ok(())
    }
}

/// A runtime with its event loop running, the caller's inbox, and a way to add agents.
struct Fixture {
    runtime: Arc<SingleThreadedRuntime>,
    done: UnboundedSender<Value>,
    inbox: UnboundedReceiver<Value>,
    actors: Vec<ActorRef<PayloadMsg>>,
}

impl Fixture {
    fn new() -> Fixture {
        let runtime = SingleThreadedRuntime::new(None);
        let r = runtime.clone();
        tokio::spawn(async move { r.run().await });
        let (done, inbox) = unbounded_channel();
        Fixture {
            runtime,
            done,
            inbox,
            actors: Vec::new(),
        }
    }

    /// Spawns an agent named `name` subscribed to `topic`, publishing to `next`.
    async fn agent(
        &mut self,
        name: &str,
        topic: &Topic<PayloadMsg>,
        next: Option<Topic<PayloadMsg>>,
    ) {
        let hop = Hop {
            name: name.to_string(),
            next,
            runtime: self.runtime.clone(),
            done: self.done.clone(),
        };
        let (actor, _) = Actor::spawn(None, hop, ())
            .await
            .unwrap_or_else(|e| common::fail(&format!("spawn {name}: {e}")));
        self.runtime
            .subscribe(topic, actor.clone())
            .await
            .unwrap_or_else(|e| common::fail(&format!("subscribe {name}: {e}")));
        self.actors.push(actor);
    }

    async fn publish(&self, topic: &Topic<PayloadMsg>, v: Value) {
        if let Err(e) = self.runtime.publish(topic, PayloadMsg(v)).await {
            common::fail(&format!("publish to {}: {e}", topic.name()));
        }
    }

    async fn reply(&mut self) -> Value {
        self.inbox
            .recv()
            .await
            .unwrap_or_else(|| common::fail("the caller's inbox closed"))
    }

    async fn stop(self) {
        for a in &self.actors {
            a.stop(None);
        }
        let _ = self.runtime.stop().await;
    }
}

async fn w1(a: &common::Args) -> Value {
    let mut f = Fixture::new();
    let topics: Vec<Topic<PayloadMsg>> = ["a", "b", "c"].iter().map(|t| Topic::new(*t)).collect();
    f.agent("A", &topics[0], Some(topics[1].clone())).await;
    f.agent("B", &topics[1], Some(topics[2].clone())).await;
    f.agent("C", &topics[2], None).await;
    for i in 0..a.warmup as u64 {
        f.publish(&topics[0], common::payload(i)).await;
        f.reply().await;
    }
    let t = Instant::now();
    for i in 0..a.tasks as u64 {
        f.publish(&topics[0], common::payload(a.warmup as u64 + i))
            .await;
        let out = f.reply().await;
        if common::hops(&out) != 3 {
            common::fail(&format!("W1 task {i}: ended with {out}"));
        }
    }
    let d = t.elapsed().as_secs_f64();
    f.stop().await;
    json!({"us_per_handoff": d * 1e6 / a.tasks as f64 / 3.0, "tasks_per_s": a.tasks as f64 / d})
}

async fn w2(a: &common::Args) -> Value {
    let mut f = Fixture::new();
    let t = Instant::now();
    let topics: Vec<Topic<PayloadMsg>> = (0..a.agents)
        .map(|k| Topic::new(format!("echo-{k}")))
        .collect();
    for (k, topic) in topics.iter().enumerate() {
        f.agent(&format!("echo-{k}"), topic, None).await;
    }
    let register_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let mut i = 0usize;
    while i < a.tasks {
        let end = (i + a.in_flight).min(a.tasks);
        for k in i..end {
            f.publish(&topics[k % a.agents], common::payload(k as u64))
                .await;
        }
        for _ in i..end {
            if common::hops(&f.reply().await) != 1 {
                common::fail(&format!("W2 batch at {i}: an echo without its hop"));
            }
        }
        i = end;
    }
    let d = t.elapsed().as_secs_f64();
    f.stop().await;
    json!({"tasks_per_s": a.tasks as f64 / d, "register_agents_ms": register_ms, "peak_rss_mb": common::peak_rss_mb()})
}

async fn w3(a: &common::Args) -> Value {
    let mut f = Fixture::new();
    let topic = Topic::new("echo");
    f.agent("echo", &topic, None).await;
    for i in 0..a.warmup as u64 {
        f.publish(&topic, common::payload(i)).await;
        f.reply().await;
    }
    let mut v = Vec::with_capacity(a.tasks);
    for i in 0..a.tasks as u64 {
        let t = Instant::now();
        f.publish(&topic, common::payload(i)).await;
        let out = f.reply().await;
        v.push(t.elapsed().as_secs_f64() * 1e6);
        if common::hops(&out) != 1 {
            common::fail(&format!("W3 task {i}: ended with {out}"));
        }
    }
    f.stop().await;
    common::latency_figures(v)
}

fn main() {
    let a = common::parse_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| common::fail(&format!("tokio runtime: {e}")));
    let figures = rt.block_on(async {
        match a.workload.as_str() {
            "W1" => w1(&a).await,
            "W2" => w2(&a).await,
            _ => w3(&a).await,
        }
    });
    common::emit(PEER, VERSION, &a, figures);
}
