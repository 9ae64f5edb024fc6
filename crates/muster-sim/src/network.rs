//! The simulated network: what lies between the runtime and agents that run on other
//! nodes (issue 13's worker processes), as a [`MailboxLayer`] in front of each
//! instance's mailbox.
//!
//! Owns [`NetworkModel`] (delay, loss and node partitions, as a scenario's `[network]`
//! table writes them) and [`SimNetwork`], which acts it out: an assignment to the
//! instance, a cancellation, the attempt's report back and each task heartbeat is a
//! message that may be delayed (by the model's distribution, on tokio's clock), lost (with
//! the model's probability), or caught in a partition of the node (lost, or held until
//! the partition heals when the partition says `hold`). A lost message is silent, as on
//! a real network: a lost assignment's reply is taken out and dropped (not answered
//! `agent_gone`, which only an instance that saw the assignment can say), so the owner
//! learns of it by its lease timer and reassigns; a report that arrives after the lease
//! moved on is fenced by its epoch and journaled stale by the owner (G2). Kills pass
//! straight through: a node's supervisor is on the node.
//!
//! Determinism (G6): each message's fate is drawn from a PRNG seeded by (network seed,
//! task, epoch, kind of message), and partitions are windows of virtual time, so the same
//! seed gives the same journal whatever the scheduling. It must not read the wall clock
//! or a global RNG, and must not reach around the runtime (no journal writes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

use super::distribution::secs;
use super::{Distribution, InvalidModel, SimRng};
use muster_core::agents::{Assign, Cancel, InstanceHandle, Kill, Mailbox, MailboxLayer, ReplyTo};
use muster_core::ids::splitmix64;

/// The most partitions a network model may declare.
pub const MAX_PARTITIONS: usize = 10_000;

/// The longest partition, start time or drop-out time a model may name (366 days, the
/// runtime's own limit on durations).
pub(crate) const MAX_SPAN: Duration = Duration::from_secs(366 * 24 * 3600);

/// A node cut off from the runtime for a while.
///
/// ```toml
/// [[network.partitions]]
/// node = "n2"
/// at = "60s"      # virtual time from the start
/// for = "30s"
/// hold = false    # true: messages wait for the heal instead of being lost
/// ttl = "10s"     # optional: the node's agents drop out of the registry after this
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// The node.
    pub node: String,
    /// When it starts, from the start of the simulation (a humantime string or seconds).
    #[serde(with = "secs")]
    pub at: f64,
    /// How long it lasts.
    #[serde(rename = "for", with = "secs")]
    pub lasts: f64,
    /// When true, messages to and from the node wait for the heal (a connection that
    /// buffers) instead of being lost.
    #[serde(default)]
    pub hold: bool,
    /// When set, the node's agents drop out of the registry this long into the
    /// partition (as keys with a time to live expire) and register again when it heals.
    #[serde(default, with = "opt_secs", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<f64>,
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::secs")] f64);
        Ok(Some(Wrap::deserialize(d)?.0))
    }
}

impl Partition {
    /// When it starts, from the start of the simulation.
    pub fn start(&self) -> Duration {
        Duration::from_secs_f64(self.at.clamp(0.0, MAX_SPAN.as_secs_f64()))
    }

    /// When it heals, from the start of the simulation.
    pub fn end(&self) -> Duration {
        self.start() + Duration::from_secs_f64(self.lasts.clamp(0.0, MAX_SPAN.as_secs_f64()))
    }

    /// When the node's agents drop out, from the start (none without a `ttl`, or with one
    /// that the heal comes before).
    pub fn drop_out(&self) -> Option<Duration> {
        let ttl = self.ttl?;
        (ttl < self.lasts).then(|| self.start() + Duration::from_secs_f64(ttl.max(0.0)))
    }
}

/// How the network between the runtime and its agents' nodes behaves: a delay per
/// message, a probability of losing each, and partitions of nodes. Agents on no node
/// (the runtime's own) are not behind it.
///
/// In a scenario file:
/// ```toml
/// [network]
/// delay = { kind = "uniform", min = "1ms", max = "20ms" }
/// loss = 0.01             # per message, each direction
/// heartbeat_loss = 0.05   # per task heartbeat (default: `loss`)
/// ```
///
/// # Example
/// ```
/// use muster_sim::NetworkModel;
///
/// let m: NetworkModel = serde_json::from_value(serde_json::json!({
///     "delay": {"kind": "uniform", "min": "1ms", "max": "20ms"}, "loss": 0.01})).unwrap();
/// assert!(m.problems().is_empty());
/// let bad: NetworkModel = serde_json::from_value(serde_json::json!({"loss": 2})).unwrap();
/// assert_eq!(bad.problems()[0].to_string(), "loss: 2 is not a probability (0..=1)");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NetworkModel {
    /// Time each message spends on the wire (default none).
    #[serde(default)]
    pub delay: Distribution,
    /// Probability that a message is lost.
    #[serde(default)]
    pub loss: f64,
    /// Probability that a task heartbeat is lost (default: `loss`).
    #[serde(default)]
    pub heartbeat_loss: Option<f64>,
    /// Partitions of nodes.
    #[serde(default)]
    pub partitions: Vec<Partition>,
}

impl NetworkModel {
    /// Every problem with the model, each naming its field (`delay.std_dev`, `loss`,
    /// `partitions[0].for`). Node names are checked by whoever knows the nodes.
    pub fn problems(&self) -> Vec<InvalidModel> {
        let mut out = Vec::new();
        if let Err(e) = self.delay.validate() {
            out.push(InvalidModel::new(&format!("delay.{}", e.field), e.message));
        }
        let probability = |field: &str, p: f64, out: &mut Vec<InvalidModel>| {
            if !(0.0..=1.0).contains(&p) {
                out.push(InvalidModel::new(
                    field,
                    format!("{p} is not a probability (0..=1)"),
                ));
            }
        };
        probability("loss", self.loss, &mut out);
        if let Some(p) = self.heartbeat_loss {
            probability("heartbeat_loss", p, &mut out);
        }
        if self.partitions.len() > MAX_PARTITIONS {
            out.push(InvalidModel::new(
                "partitions",
                format!(
                    "{} partitions are above the limit of {MAX_PARTITIONS}",
                    self.partitions.len()
                ),
            ));
        }
        let max = MAX_SPAN.as_secs_f64();
        for (i, p) in self.partitions.iter().enumerate() {
            let mut span = |name: &str, v: f64, positive: bool| {
                let field = format!("partitions[{i}].{name}");
                if !v.is_finite() || v < 0.0 || (positive && v == 0.0) {
                    let bound = if positive { "above 0" } else { ">= 0" };
                    out.push(InvalidModel::new(
                        &field,
                        format!("must be {bound} (got {v} s)"),
                    ));
                } else if v > max {
                    out.push(InvalidModel::new(
                        &field,
                        format!("{v} s is above the limit of {max} s (366 days)"),
                    ));
                }
            };
            span("at", p.at, false);
            span("for", p.lasts, true);
            if let Some(ttl) = p.ttl {
                span("ttl", ttl, true);
            }
        }
        // Two partitions of one node must not overlap: each heal would end the other.
        for (i, p) in self.partitions.iter().enumerate() {
            if let Some((j, _)) = self.partitions[..i]
                .iter()
                .enumerate()
                .find(|(_, q)| q.node == p.node && q.at < p.at + p.lasts && p.at < q.at + q.lasts)
            {
                out.push(InvalidModel::new(
                    &format!("partitions[{i}]"),
                    format!(
                        "overlaps partitions[{j}] of the same node `{}`; merge them",
                        p.node
                    ),
                ));
            }
        }
        out
    }

    fn heartbeat_loss(&self) -> f64 {
        self.heartbeat_loss.unwrap_or(self.loss)
    }
}

/// Messages that crossed a [`SimNetwork`], by what happened to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NetworkCounts {
    /// Messages sent (assignments, cancellations, reports; heartbeats apart).
    pub messages: u64,
    /// Delivered after a delay above zero.
    pub delayed: u64,
    /// Lost at random (the model's `loss`).
    pub lost: u64,
    /// Lost because their node was partitioned.
    pub lost_in_partitions: u64,
    /// Held by a partition with `hold` and delivered after it healed.
    pub held_in_partitions: u64,
    /// Task heartbeats sent.
    pub heartbeats: u64,
    /// Task heartbeats lost (at random or in a partition).
    pub heartbeats_lost: u64,
}

#[derive(Debug, Default)]
struct Counters {
    messages: AtomicU64,
    delayed: AtomicU64,
    lost: AtomicU64,
    lost_in_partitions: AtomicU64,
    held_in_partitions: AtomicU64,
    heartbeats: AtomicU64,
    heartbeats_lost: AtomicU64,
}

/// Which way a message goes (mixed into its PRNG seed).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Assign = 1,
    Report = 2,
    Cancel = 3,
    Heartbeat = 4,
}

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Arrives this long after it was sent.
    After(Duration),
    /// Never arrives.
    Lost,
}

#[derive(Debug)]
struct Shared {
    model: NetworkModel,
    seed: u64,
    /// Node names; a partition's node is an index in this list.
    nodes: Vec<String>,
    /// Per node, its partitions as (start, end, hold), from the origin.
    windows: Vec<Vec<(Duration, Duration, bool)>>,
    origin: OnceLock<Instant>,
    counts: Counters,
}

/// The network between the runtime and its agents' nodes, acting out a
/// [`NetworkModel`]; [`SimNetwork::node`] gives the [`MailboxLayer`] of one node, for the
/// agent types that run there.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use muster_sim::{NetworkModel, SimNetwork};
/// use muster_core::AgentDef;
/// use serde_json::json;
///
/// let model = NetworkModel { loss: 0.01, ..NetworkModel::default() };
/// let net = SimNetwork::new(model, 7, &["n1".to_string()]);
/// let def = AgentDef::function("echo", |input, _ctx| async move { Ok(json!(input)) })
///     .layer(net.node("n1").unwrap());
/// assert!(def.layer.is_some());
/// assert_eq!(net.counts().messages, 0);
/// ```
#[derive(Debug, Clone)]
pub struct SimNetwork {
    shared: Arc<Shared>,
}

impl SimNetwork {
    /// A network acting out `model` with this `seed`, between the runtime and `nodes`.
    /// Partitions of nodes not in the list are ignored (the scenario file refuses them).
    pub fn new(model: NetworkModel, seed: u64, nodes: &[String]) -> Self {
        let windows = nodes
            .iter()
            .map(|n| {
                model
                    .partitions
                    .iter()
                    .filter(|p| &p.node == n)
                    .map(|p| (p.start(), p.end(), p.hold))
                    .collect()
            })
            .collect();
        SimNetwork {
            shared: Arc::new(Shared {
                model,
                seed: splitmix64(seed ^ 0x6e65_7477_6f72_6b00),
                nodes: nodes.to_vec(),
                windows,
                origin: OnceLock::new(),
                counts: Counters::default(),
            }),
        }
    }

    /// Sets virtual time zero, from which partitions are timed (the first call wins;
    /// before it, the first message sets it).
    pub fn start_clock(&self, at: Instant) {
        let _ = self.shared.origin.set(at);
    }

    /// The layer of node `name` (none if it is not a node of this network).
    pub fn node(&self, name: &str) -> Option<Arc<dyn MailboxLayer>> {
        let index = self.shared.nodes.iter().position(|n| n == name)?;
        Some(Arc::new(NodeLayer {
            shared: self.shared.clone(),
            node: index,
        }))
    }

    /// What happened to the messages so far.
    pub fn counts(&self) -> NetworkCounts {
        let c = &self.shared.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NetworkCounts {
            messages: get(&c.messages),
            delayed: get(&c.delayed),
            lost: get(&c.lost),
            lost_in_partitions: get(&c.lost_in_partitions),
            held_in_partitions: get(&c.held_in_partitions),
            heartbeats: get(&c.heartbeats),
            heartbeats_lost: get(&c.heartbeats_lost),
        }
    }
}

impl Shared {
    fn rng(&self, task: Uuid, epoch: u64, kind: Kind, extra: u64) -> SimRng {
        let (hi, lo) = task.as_u64_pair();
        SimRng::new(splitmix64(
            self.seed
                ^ splitmix64(
                    hi ^ splitmix64(lo ^ splitmix64(epoch ^ splitmix64((kind as u64) ^ extra))),
                ),
        ))
    }

    /// The fate of one message of `task`/`epoch` to or from `node`, sent now. Every draw
    /// is made, in a fixed order, whatever the outcome.
    fn fate(&self, node: usize, task: Uuid, epoch: u64, kind: Kind) -> Fate {
        let mut rng = self.rng(task, epoch, kind, 0);
        let lost = rng.chance(self.model.loss);
        let delay = self.model.delay.sample(&mut rng);
        let c = &self.counts;
        c.messages.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let origin = *self.origin.get_or_init(|| now);
        let sent = now.saturating_duration_since(origin);
        let mut wait = delay;
        let windows = self.windows.get(node).map_or(&[][..], Vec::as_slice);
        for &(start, end, hold) in windows {
            // Sent into a partition, or arriving while one is on.
            let during = |t: Duration| start <= t && t < end;
            let arrives = sent + wait;
            if !during(sent) && !during(arrives) {
                continue;
            }
            if !hold {
                c.lost_in_partitions.fetch_add(1, Ordering::Relaxed);
                return Fate::Lost;
            }
            // Held: one sent during the partition crosses once it heals; one already on
            // the wire arrives at the heal.
            let arrival = if during(sent) { end + delay } else { end };
            wait = arrival - sent;
            c.held_in_partitions.fetch_add(1, Ordering::Relaxed);
        }
        if lost {
            c.lost.fetch_add(1, Ordering::Relaxed);
            return Fate::Lost;
        }
        if !wait.is_zero() {
            c.delayed.fetch_add(1, Ordering::Relaxed);
        }
        Fate::After(wait)
    }

    /// Whether heartbeat number `beat` of `task`/`epoch` gets through.
    fn heartbeat_arrives(&self, node: usize, task: Uuid, epoch: u64, beat: u64) -> bool {
        let mut rng = self.rng(task, epoch, Kind::Heartbeat, beat);
        let lost = rng.chance(self.model.heartbeat_loss());
        let c = &self.counts;
        c.heartbeats.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let sent = now.saturating_duration_since(*self.origin.get_or_init(|| now));
        let cut = self
            .windows
            .get(node)
            .is_some_and(|w| w.iter().any(|&(start, end, _)| start <= sent && sent < end));
        if lost || cut {
            c.heartbeats_lost.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// The layer of one node.
struct NodeLayer {
    shared: Arc<Shared>,
    node: usize,
}

impl MailboxLayer for NodeLayer {
    fn wrap(&self, handle: Weak<InstanceHandle>, inner: Box<dyn Mailbox>) -> Box<dyn Mailbox> {
        Box::new(NodeMailbox {
            shared: self.shared.clone(),
            node: self.node,
            handle,
            inner: Arc::from(inner),
        })
    }
}

/// An instance's mailbox as the runtime reaches it across the network.
struct NodeMailbox {
    shared: Arc<Shared>,
    node: usize,
    handle: Weak<InstanceHandle>,
    inner: Arc<dyn Mailbox>,
}

impl Mailbox for NodeMailbox {
    fn assign(&self, mut a: Assign) {
        let task = a.envelope.task_id.unwrap_or(a.envelope.id);
        let epoch = a.envelope.epoch;
        let shared = &self.shared;
        let wait = match shared.fate(self.node, task, epoch, Kind::Assign) {
            Fate::Lost => {
                // Never arrives: nobody answers (the owner's lease timer will), and the
                // slot reserved for it on the instance is free again.
                drop(a.take_reply());
                let handle = self.handle.clone();
                actix_rt::spawn(async move {
                    if let Some(h) = handle.upgrade() {
                        h.release();
                    }
                });
                return;
            }
            Fate::After(wait) => wait,
        };
        // The report comes back across the network too.
        let reply = a.take_reply();
        let (tx, rx) = oneshot::channel();
        a.reply = ReplyTo::Once(tx);
        let back = shared.clone();
        let node = self.node;
        actix_rt::spawn(async move {
            // No report (the reply was dropped unanswered): nothing crosses.
            let Ok(report) = rx.await else { return };
            match back.fate(node, report.task_id, report.epoch, Kind::Report) {
                Fate::Lost => {}
                Fate::After(wait) => {
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    reply.send(report);
                }
            }
        });
        if let Some(beat) = a.heartbeat.take() {
            let shared = shared.clone();
            let beats = AtomicU64::new(0);
            a.heartbeat = Some(Arc::new(move || {
                let n = beats.fetch_add(1, Ordering::Relaxed);
                if shared.heartbeat_arrives(node, task, epoch, n) {
                    beat();
                }
            }));
        }
        if wait.is_zero() {
            self.inner.assign(a);
        } else {
            let inner = self.inner.clone();
            actix_rt::spawn(async move {
                tokio::time::sleep(wait).await;
                inner.assign(a);
            });
        }
    }

    fn cancel(&self, c: Cancel) {
        match self
            .shared
            .fate(self.node, c.task_id, c.epoch, Kind::Cancel)
        {
            Fate::Lost => {}
            Fate::After(wait) if wait.is_zero() => self.inner.cancel(c),
            Fate::After(wait) => {
                let inner = self.inner.clone();
                actix_rt::spawn(async move {
                    tokio::time::sleep(wait).await;
                    inner.cancel(c);
                });
            }
        }
    }

    fn kill(&self, k: Kill) {
        // The node's own supervisor kills: nothing crosses the network.
        self.inner.kill(k)
    }

    fn connected(&self) -> bool {
        self.inner.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_paused as run;

    fn partition(node: &str, at: f64, lasts: f64, hold: bool) -> Partition {
        Partition {
            node: node.into(),
            at,
            lasts,
            hold,
            ttl: None,
        }
    }

    #[test]
    fn problems_name_the_field() {
        let m = NetworkModel {
            loss: -0.1,
            heartbeat_loss: Some(1.5),
            delay: Distribution::Uniform { min: 2.0, max: 1.0 },
            partitions: vec![
                partition("n1", 0.0, 0.0, false),
                partition("n1", 1.0, 5.0, false),
                partition("n1", 2.0, 1.0, false),
            ],
        };
        let fields: Vec<String> = m.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "delay.min",
                "loss",
                "heartbeat_loss",
                "partitions[0].for",
                "partitions[2]"
            ]
        );
    }

    #[test]
    fn partitions_lose_or_hold_messages_by_virtual_time() {
        run(async {
            let model = NetworkModel {
                delay: Distribution::fixed(Duration::from_millis(10)),
                partitions: vec![
                    partition("a", 1.0, 2.0, false),
                    partition("b", 1.0, 2.0, true),
                ],
                ..NetworkModel::default()
            };
            let net = SimNetwork::new(model, 1, &["a".into(), "b".into()]);
            net.start_clock(Instant::now());
            let s = &net.shared;
            let t = Uuid::from_u128(1);
            let ms = Duration::from_millis;
            assert_eq!(s.fate(0, t, 1, Kind::Assign), Fate::After(ms(10)));
            tokio::time::advance(ms(995)).await;
            // Arrives inside the partition: lost; the held node's message waits.
            assert_eq!(s.fate(0, t, 1, Kind::Report), Fate::Lost);
            assert_eq!(s.fate(1, t, 1, Kind::Report), Fate::After(ms(2_005)));
            tokio::time::advance(ms(1000)).await;
            assert_eq!(s.fate(0, t, 1, Kind::Report), Fate::Lost);
            assert_eq!(s.fate(1, t, 1, Kind::Report), Fate::After(ms(1_005 + 10)));
            assert!(!s.heartbeat_arrives(0, t, 1, 0));
            tokio::time::advance(ms(1010)).await;
            assert_eq!(s.fate(0, t, 1, Kind::Report), Fate::After(ms(10)));
            assert!(s.heartbeat_arrives(0, t, 1, 1));
            let c = net.counts();
            assert_eq!(
                (
                    c.messages,
                    c.lost_in_partitions,
                    c.held_in_partitions,
                    c.heartbeats_lost
                ),
                (6, 2, 2, 1)
            );
        });
    }

    /// An instance's own mailbox that keeps what reaches it.
    #[derive(Default, Clone)]
    struct Inbox(Arc<parking_lot::Mutex<Vec<Assign>>>);

    impl Mailbox for Inbox {
        fn assign(&self, a: Assign) {
            self.0.lock().push(a);
        }
        fn cancel(&self, _: Cancel) {}
        fn kill(&self, _: Kill) {}
        fn connected(&self) -> bool {
            true
        }
    }

    fn assignment(task: u128, reply: ReplyTo, beat: Arc<AtomicU64>) -> Assign {
        let mut env = muster_core::messaging::Envelope::new(
            "cap",
            muster_core::messaging::Recipient::Agent("a#0".into()),
            "",
            serde_json::json!({}),
        );
        env.task_id = Some(Uuid::from_u128(task));
        env.epoch = 1;
        Assign {
            envelope: Arc::new(env),
            deadline: Instant::now() + Duration::from_secs(60),
            reply,
            heartbeat: Some(Arc::new(move || {
                beat.fetch_add(1, Ordering::Relaxed);
            })),
            effects: None,
        }
    }

    #[test]
    fn the_mailbox_delays_assignments_and_reports_and_a_lost_one_is_never_answered() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let model = NetworkModel {
                delay: Distribution::fixed(Duration::from_millis(10)),
                heartbeat_loss: Some(1.0),
                ..NetworkModel::default()
            };
            let net = SimNetwork::new(model, 1, &["n".into()]);
            let inbox = Inbox::default();
            let mailbox = net
                .node("n")
                .unwrap()
                .wrap(Weak::new(), Box::new(inbox.clone()));
            let beats = Arc::new(AtomicU64::new(0));
            let (tx, rx) = oneshot::channel();
            let start = Instant::now();
            mailbox.assign(assignment(1, ReplyTo::Once(tx), beats.clone()));
            assert!(inbox.0.lock().is_empty(), "delivered before its delay");
            // (A moment later than the delivery's own timer, which was set after this one's.)
            tokio::time::sleep(Duration::from_millis(11)).await;
            let mut a = inbox.0.lock().pop().expect("delivered after 10 ms");
            // Every heartbeat is lost at heartbeat_loss = 1.
            if let Some(h) = &a.heartbeat {
                h();
            }
            assert_eq!(beats.load(Ordering::Relaxed), 0);
            // The report crosses back in 10 ms too.
            a.take_reply()
                .send(muster_core::agents::AttemptReport::gone(
                    Uuid::from_u128(1),
                    1,
                    "a#0".into(),
                    "x".into(),
                ));
            let report = rx.await.unwrap();
            assert_eq!(report.epoch, 1);
            assert_eq!(start.elapsed(), Duration::from_millis(21));

            // At loss 1 the assignment never arrives and its reply is never answered
            // (not even `agent_gone`: the owner's lease timer is what notices).
            let lossy = SimNetwork::new(
                NetworkModel {
                    loss: 1.0,
                    ..NetworkModel::default()
                },
                1,
                &["n".into()],
            );
            let mailbox = lossy
                .node("n")
                .unwrap()
                .wrap(Weak::new(), Box::new(inbox.clone()));
            let (tx, mut rx) = oneshot::channel();
            mailbox.assign(assignment(2, ReplyTo::Once(tx), beats));
            tokio::time::sleep(Duration::from_secs(3600)).await;
            assert!(inbox.0.lock().is_empty());
            assert!(matches!(
                rx.try_recv(),
                Err(oneshot::error::TryRecvError::Closed)
            ));
            assert_eq!(lossy.counts().lost, 1);
        });
    }

    #[test]
    fn fates_depend_on_seed_task_epoch_and_kind_only() {
        run(async {
            let model = NetworkModel {
                delay: Distribution::Uniform { min: 0.0, max: 1.0 },
                loss: 0.3,
                ..NetworkModel::default()
            };
            let fates = |seed: u64| {
                let net = SimNetwork::new(model.clone(), seed, &["n".into()]);
                (0..200u128)
                    .map(|t| net.shared.fate(0, Uuid::from_u128(t), 1, Kind::Report))
                    .collect::<Vec<_>>()
            };
            let a = fates(5);
            assert_eq!(a, fates(5));
            assert_ne!(a, fates(6));
            let lost = a.iter().filter(|f| **f == Fate::Lost).count();
            assert!((30..90).contains(&lost), "{lost} of 200 lost at 30 %");
        });
    }
}
