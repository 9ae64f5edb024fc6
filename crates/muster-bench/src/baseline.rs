//! The floors every muster figure is measured beside: the same hop pattern on raw tokio
//! (an mpsc channel per agent, a oneshot per reply) and on raw actix (`Addr::send`
//! request-reply between plain actors), on the same payload, on the same thread.
//!
//! These do what a muster agent's *work* does (copy the payload, `hops += 1`, `last =
//! name`) and nothing of what muster adds (no owner, lease, contract check or journal), so
//! the difference between a muster figure and its baseline is the coordination alone. Must
//! not be tuned beyond what a user writing the plain version would write.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use actix::prelude::*;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::payload::{hop, payload};

type Request = (Value, oneshot::Sender<Value>);

/// Echo agents as plain tokio tasks: one mpsc receiver each, a oneshot per reply.
///
/// # Example
/// ```
/// # actix::System::new().block_on(async {
/// use muster_bench::baseline::TokioAgents;
/// let agents = TokioAgents::start(&["a", "b", "c"]);
/// let out = agents.chain(muster_bench::workloads::payload(1)).await;
/// assert_eq!(out.map(|v| v["hops"].clone()), Some(serde_json::json!(3)));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct TokioAgents {
    senders: Vec<mpsc::Sender<Request>>,
}

impl TokioAgents {
    /// Spawns one task per name on the current thread (inside an actix system or a
    /// `LocalSet`).
    pub fn start(names: &[&str]) -> Self {
        let senders = names
            .iter()
            .map(|name| {
                let (tx, mut rx) = mpsc::channel::<Request>(64);
                let name = name.to_string();
                actix::spawn(async move {
                    while let Some((v, reply)) = rx.recv().await {
                        let _ = reply.send(hop(v, &name));
                    }
                });
                tx
            })
            .collect();
        TokioAgents { senders }
    }

    /// `n` agents named `agent-0` ... `agent-{n-1}`.
    pub fn start_many(n: usize) -> Self {
        let names: Vec<String> = (0..n).map(|i| format!("agent-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        Self::start(&refs)
    }

    /// How many agents.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// One request-reply with agent `k` (modulo the count).
    pub async fn call(&self, k: usize, v: Value) -> Option<Value> {
        let (tx, rx) = oneshot::channel();
        self.senders
            .get(k % self.senders.len().max(1))?
            .send((v, tx))
            .await
            .ok()?;
        rx.await.ok()
    }

    /// The payload through every agent in order, one request-reply each (the W1 pattern:
    /// the caller hands each step's output to the next step).
    pub async fn chain(&self, mut v: Value) -> Option<Value> {
        for k in 0..self.senders.len() {
            v = self.call(k, v).await?;
        }
        Some(v)
    }
}

/// A plain actix echo actor.
#[derive(Debug)]
pub struct EchoActor {
    name: String,
}

impl Actor for EchoActor {
    type Context = Context<Self>;
}

/// A request to an [`EchoActor`].
#[derive(Debug, Message)]
#[rtype(result = "Value")]
pub struct Echo(pub Value);

impl Handler<Echo> for EchoActor {
    type Result = MessageResult<Echo>;

    fn handle(&mut self, m: Echo, _: &mut Self::Context) -> Self::Result {
        MessageResult(hop(m.0, &self.name))
    }
}

/// Echo agents as plain actix actors, reached with `Addr::send`.
///
/// # Example
/// ```
/// # actix::System::new().block_on(async {
/// use muster_bench::baseline::ActixAgents;
/// let agents = ActixAgents::start(&["a", "b", "c"]);
/// let out = agents.chain(muster_bench::workloads::payload(1)).await;
/// assert_eq!(out.map(|v| v["last"].clone()), Some(serde_json::json!("c")));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct ActixAgents {
    addrs: Vec<Addr<EchoActor>>,
}

impl ActixAgents {
    /// Starts one actor per name on the current arbiter.
    pub fn start(names: &[&str]) -> Self {
        let addrs = names
            .iter()
            .map(|n| {
                EchoActor {
                    name: n.to_string(),
                }
                .start()
            })
            .collect();
        ActixAgents { addrs }
    }

    /// `n` actors named `agent-0` ... `agent-{n-1}`.
    pub fn start_many(n: usize) -> Self {
        let addrs = (0..n)
            .map(|i| {
                EchoActor {
                    name: format!("agent-{i}"),
                }
                .start()
            })
            .collect();
        ActixAgents { addrs }
    }

    /// How many actors.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// One `send().await` to actor `k` (modulo the count).
    pub async fn call(&self, k: usize, v: Value) -> Option<Value> {
        self.addrs
            .get(k % self.addrs.len().max(1))?
            .send(Echo(v))
            .await
            .ok()
    }

    /// The payload through every actor in order, one request-reply each.
    pub async fn chain(&self, mut v: Value) -> Option<Value> {
        for k in 0..self.addrs.len() {
            v = self.call(k, v).await?;
        }
        Some(v)
    }
}

/// Instants recorded by the W4 baselines: when the failing worker was about to panic and
/// when the healthy one started the same request.
#[derive(Debug, Default, Clone)]
pub struct Stamps(Rc<RefCell<HashMap<u64, Instant>>>);

impl Stamps {
    fn put(&self, k: u64) {
        self.0.borrow_mut().insert(k, Instant::now());
    }
    fn take(&self, k: u64) -> Option<Instant> {
        self.0.borrow_mut().remove(&k)
    }
}

/// W4 floor on raw tokio: the request runs in a spawned task that panics; the caller sees
/// `JoinError::is_panic` and sends the request to a healthy worker over mpsc + oneshot.
/// Returns the time from just before the panic to the healthy worker starting it.
///
/// Install a silent panic hook around a loop of these, or each panic prints a message.
pub async fn tokio_recovery_once(i: u64) -> Option<std::time::Duration> {
    let crashed = Stamps::default();
    let started = Stamps::default();
    let (tx, mut rx) = mpsc::channel::<(Value, oneshot::Sender<Value>)>(1);
    let s = started.clone();
    let healthy = actix::spawn(async move {
        while let Some((v, reply)) = rx.recv().await {
            s.put(v["task_id"].as_u64().unwrap_or_default());
            let _ = reply.send(hop(v, "healthy"));
        }
    });
    let c = crashed.clone();
    let v = payload(i);
    let failing = actix::spawn(async move {
        c.put(i);
        panic!("bench: the failing worker panics on every request");
    });
    let mut result = None;
    if let Err(e) = failing.await
        && e.is_panic()
    {
        let (rt, rr) = oneshot::channel();
        if tx.send((v, rt)).await.is_ok()
            && rr.await.is_ok()
            && let (Some(a), Some(b)) = (crashed.take(i), started.take(i))
        {
            result = Some(b.duration_since(a));
        }
    }
    drop(tx);
    let _ = healthy.await;
    result
}

/// The W4 failing actor: panics in its handler, which kills it (actix does not restart an
/// actor after a panic).
struct Crashy(Stamps);

impl Actor for Crashy {
    type Context = Context<Self>;
}

impl Handler<Echo> for Crashy {
    type Result = MessageResult<Echo>;

    fn handle(&mut self, m: Echo, _: &mut Self::Context) -> Self::Result {
        self.0.put(m.0["task_id"].as_u64().unwrap_or_default());
        panic!("bench: the failing actor panics on every request");
    }
}

struct Healthy(Stamps);

impl Actor for Healthy {
    type Context = Context<Self>;
}

impl Handler<Echo> for Healthy {
    type Result = MessageResult<Echo>;

    fn handle(&mut self, m: Echo, _: &mut Self::Context) -> Self::Result {
        self.0.put(m.0["task_id"].as_u64().unwrap_or_default());
        MessageResult(hop(m.0, "healthy"))
    }
}

/// W4 floor on raw actix: `send` to an actor that panics (the mailbox closes, `send`
/// fails), then `send` to a healthy actor; a fresh failing actor is started for each
/// request, as a hand-written supervisor would. Returns the time from just before the
/// panic to the healthy actor starting it.
pub async fn actix_recovery_once(i: u64) -> Option<std::time::Duration> {
    let crashed = Stamps::default();
    let started = Stamps::default();
    let crashy = Crashy(crashed.clone()).start();
    let healthy = Healthy(started.clone()).start();
    let v = payload(i);
    if crashy.send(Echo(v.clone())).await.is_ok() {
        return None;
    }
    healthy.send(Echo(v)).await.ok()?;
    let (a, b) = (crashed.take(i)?, started.take(i)?);
    Some(b.duration_since(a))
}
