//! The runtime's waits are woken by what they wait for, never by polling (issue 27, item
//! 16): on tokio's paused clock, where a poll would have to let virtual time pass,
//! `Muster::register` returns as its instances register and a `send` waiting for a full
//! agent goes on as its slot frees, with no time passing at all.

use crate::support::common;

use std::sync::Arc;

use common::{agent, builder, input, paused, within};
use futures::future::LocalBoxFuture;
use muster::{Agent, AgentDef, AgentError, AgentLink, Envelope, Recipient, TaskContext};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// An agent whose start takes a few turns of the executor (a handshake), but no time: its
/// instances register after `register` first looks.
struct Handshaking;

impl Agent for Handshaking {
    fn handle(&self, input: Value, _ctx: TaskContext) -> LocalBoxFuture<'static, AgentResult> {
        Box::pin(async move { Ok(json!({"value": input["n"].as_i64().unwrap_or(0)})) })
    }

    fn start(&self, _link: AgentLink) -> LocalBoxFuture<'static, Result<(), AgentError>> {
        Box::pin(async {
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            Ok(())
        })
    }
}

type AgentResult = Result<Value, AgentError>;

#[test]
fn register_returns_as_the_instances_register_with_no_time_passing() {
    paused(async {
        let m = builder().start().await.expect("runtime starts");
        let def = AgentDef::new("shaking", |_: &str| Box::new(Handshaking) as Box<dyn Agent>)
            .capability(common::cap())
            .replicas(3);
        let t0 = Instant::now();
        let ids = within(10, "register", m.register(def))
            .await
            .expect("registers");
        assert_eq!(ids.len(), 3);
        assert_eq!(
            Instant::now(),
            t0,
            "woken by the registry's events: no virtual time passed"
        );
        m.shutdown().await;
    })
}

/// A runtime with one instance holding one task at a time; its first task waits until the
/// returned sender is fired (or dropped).
async fn one_slot() -> (muster::Muster, oneshot::Sender<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let first = Arc::new(Mutex::new(Some(rx)));
    let m = builder()
        .agent(
            agent("holder", move |input, _ctx| {
                let held = first.lock().take();
                async move {
                    if let Some(rx) = held {
                        let _ = rx.await;
                    }
                    Ok(json!({"value": input["n"].as_i64().unwrap_or(0)}))
                }
            })
            .concurrency(1)
            .mailbox(0),
        )
        .start()
        .await
        .expect("runtime starts");
    (m, tx)
}

/// Sends a second envelope to `to` while the one slot is held by a first, frees the slot,
/// and checks the second went through with no virtual time passing.
async fn second_send_is_woken(to: Recipient) {
    let (m, release) = one_slot().await;
    let env = |n| Envelope::new(common::CAP, to.clone(), "in", input(n));
    let holder = m.instance("holder#0").expect("the instance");
    let first = actix::spawn({
        let m = m.clone();
        let e = env(1);
        async move { m.send(e).await }
    });
    for _ in 0..1000 {
        if holder.load() == holder.capacity {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        holder.load(),
        holder.capacity,
        "the first send holds the slot"
    );
    let t0 = Instant::now();
    let second = actix::spawn({
        let m = m.clone();
        let e = env(2);
        async move { m.send(e).await }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!second.is_finished(), "the second send waits for the slot");
    release.send(()).expect("the first attempt waits");
    let reply = within(10, "the second send", second)
        .await
        .expect("the send task")
        .expect("delivered once the slot freed");
    assert_eq!(*reply.payload, json!({"value": 2}));
    assert_eq!(
        Instant::now(),
        t0,
        "woken by the freed slot: no virtual time passed"
    );
    within(10, "the first send", first)
        .await
        .expect("the send task")
        .expect("the first delivered");
    m.shutdown().await;
}

#[test]
fn a_send_to_a_full_capability_is_woken_when_a_slot_frees_with_no_time_passing() {
    paused(second_send_is_woken(Recipient::Capability(
        common::CAP.into(),
    )));
}

#[test]
fn a_send_to_a_full_agent_is_woken_when_its_slot_frees_with_no_time_passing() {
    paused(second_send_is_woken(Recipient::Agent("holder#0".into())));
}
