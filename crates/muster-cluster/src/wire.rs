//! The cluster's wire: subjects, buckets, keys, and the messages a control node and its
//! workers exchange over NATS (each described by a JSON Schema in `schemas/cluster-*`).
//!
//! Owns naming and encoding only: it opens no connection and keeps no state.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use muster_core::agents::effects::{Claim, EffectEntry};
use muster_core::agents::{AgentState, Failure};
use muster_core::journal::Usage;
use muster_core::messaging::{
    Capability, ContractDifference, ContractTerms, Envelope, SchemaStore,
};

/// The key-value bucket of agent instances: one key per instance, kept alive by its
/// worker's heartbeats, gone when the bucket's age limit (the TTL) passes without one.
pub const AGENTS_BUCKET: &str = "muster_agents";

/// The key-value bucket of the cluster's contracts: one key per capability, written by
/// the control node, read by every worker when it joins.
pub const CONTRACTS_BUCKET: &str = "muster_contracts";

/// The longest node name.
pub const MAX_NODE_NAME: usize = 64;

/// Checks a node name: 1 to [`MAX_NODE_NAME`] characters of `A-Z a-z 0-9 _ -` (it is a
/// NATS subject token and a key-value key segment).
///
/// # Example
/// ```
/// use muster_cluster::wire::check_node_name;
///
/// assert!(check_node_name("worker-1").is_ok());
/// assert!(check_node_name("a.b").is_err());
/// ```
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NODE_NAME {
        return Err(format!(
            "node name `{name}` must have 1 to {MAX_NODE_NAME} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "node name `{name}` has `{c}`; use only letters, digits, `_` and `-`"
        ));
    }
    Ok(())
}

/// The subject a worker node reads its assignments from.
pub fn assign_subject(node: &str) -> String {
    format!("muster.assign.{node}")
}

/// The subject a worker node reads cancellations and kills from.
pub fn control_subject(node: &str) -> String {
    format!("muster.control.{node}")
}

/// The subject a control node reads attempt reports from.
pub fn report_subject(control: &str) -> String {
    format!("muster.report.{control}")
}

/// The subject a control node reads task heartbeats from.
pub fn beat_subject(control: &str) -> String {
    format!("muster.beat.{control}")
}

/// The subject a control node reads its workers' effect records from
/// ([`EffectMsg`]).
pub fn effect_subject(control: &str) -> String {
    format!("muster.effect.{control}")
}

/// The subject a worker node reads the answers to its effect records from
/// ([`EffectAckMsg`]).
pub fn effect_ack_subject(node: &str) -> String {
    format!("muster.effect_ack.{node}")
}

/// Escapes `s` into the key alphabet (`A-Z a-z 0-9 _ -`, anything else as `=XX`).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// The key of capability `name` in [`CONTRACTS_BUCKET`].
pub fn contract_key(name: &str) -> String {
    escape(name)
}

/// The id a control node gives an instance of another node: `id@node`.
pub fn remote_id(node: &str, id: &str) -> String {
    format!("{id}@{node}")
}

/// A capability's contract as the cluster compares it: its name and its
/// [`ContractTerms`] (version, schema names, idempotence, acceptance rule and a digest of
/// both schema documents), compared by the one definition of "same contract".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractRecord {
    /// Capability name.
    pub name: String,
    /// What must agree.
    #[serde(flatten)]
    pub terms: ContractTerms,
}

impl ContractRecord {
    /// The record of a compiled capability.
    pub fn of(c: &Capability) -> Self {
        ContractRecord {
            name: c.name.to_string(),
            terms: ContractTerms::of(c),
        }
    }

    /// `Err` says how `other` (a worker's) differs from this one (the cluster's).
    pub fn differs(&self, other: &ContractRecord) -> Result<(), String> {
        let (ours, theirs) = (&self.terms, &other.terms);
        other.terms.differs(&self.terms).map_err(|d| match d {
            ContractDifference::Version {
                ours: here,
                theirs: cluster,
            } => {
                format!("version {here} here, {cluster} in the cluster")
            }
            ContractDifference::Input { .. } | ContractDifference::Output { .. } => format!(
                "schemas {} -> {} here, {} -> {} in the cluster",
                theirs.input, theirs.output, ours.input, ours.output
            ),
            ContractDifference::Idempotent {
                ours: here,
                theirs: cluster,
            } => {
                format!("idempotent {here} here, {cluster} in the cluster")
            }
            ContractDifference::Accept { .. } | ContractDifference::Documents { .. } => {
                let schemas = if ours.input == ours.output {
                    format!("schema `{}`", ours.input)
                } else {
                    format!("schema `{}` or `{}`", ours.input, ours.output)
                };
                format!(
                    "{schemas} (or the acceptance rule) differs from the cluster's \
                     (digest {} here, {} in the cluster)",
                    theirs.digest, ours.digest
                )
            }
        })
    }
}

/// The version of the wire between control nodes and workers. Version 2 writes one key
/// per worker ([`WorkerRecord`]) where version 1 wrote one per instance, and a worker holds
/// an assignment for a full instance until a slot frees where version 1 refused it.
/// Version 3 (this one) carries the task's effect ledger in an assignment and the
/// attempt's effect records back to the control node ([`EffectMsg`], [`EffectAckMsg`]),
/// where a version-2 worker journaled none. A peer of another version is refused by name
/// ([`version_of`]).
pub const WIRE_VERSION: u32 = 3;

/// The key of part `part` of worker `node`'s record in [`AGENTS_BUCKET`]:
/// `<node>.=W<part>`. The `=W` cannot begin an escaped instance id (escapes are `=`
/// and two hex digits), so no key of a version-1 worker (`<node>.<escaped id>`) has this
/// form.
///
/// # Example
/// ```
/// use muster_cluster::wire::{parse_worker_key, worker_key};
///
/// assert_eq!(worker_key("w1", 0), "w1.=W0");
/// assert_eq!(parse_worker_key("w1.=W0"), Some(("w1", 0)));
/// assert_eq!(parse_worker_key("w1.echo=230"), None); // a version-1 instance key
/// ```
pub fn worker_key(node: &str, part: usize) -> String {
    format!("{node}.=W{part}")
}

/// The node and part of a worker key of [`AGENTS_BUCKET`]; `None` for any other key (a
/// version-1 worker's per-instance key).
pub fn parse_worker_key(key: &str) -> Option<(&str, usize)> {
    let (node, part) = key.split_once(".=W")?;
    check_node_name(node).ok()?;
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((node, part.parse().ok()?))
}

/// The node of a key of [`AGENTS_BUCKET`] (what precedes the first `.`), for messages.
pub fn key_node(key: &str) -> &str {
    key.split('.').next().unwrap_or(key)
}

/// The wire version a peer's record declares (its `wire` field); 1 when it has none (a
/// record of a version-1 peer, which had no such field), 0 when it is not a JSON object.
///
/// # Example
/// ```
/// use muster_cluster::wire::version_of;
///
/// assert_eq!(version_of(br#"{"wire": 2, "node": "w1"}"#), 2);
/// assert_eq!(version_of(b"{}"), 1);
/// assert_eq!(version_of(b"nonsense"), 0);
/// ```
pub fn version_of(bytes: &[u8]) -> u32 {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default = "one")]
        wire: u32,
    }
    fn one() -> u32 {
        1
    }
    serde_json::from_slice::<Peek>(bytes).map_or(0, |p| p.wire)
}

/// The refusal of a peer that speaks another wire version: who, which version, and what
/// to do.
pub fn version_refusal(peer: &str, theirs: u32) -> String {
    let what = match theirs {
        0 => "an unreadable record".to_string(),
        1 => "wire version 1 (one key per instance; a full instance refuses work)".to_string(),
        2 => "wire version 2 (a worker's attempts journal no effects)".to_string(),
        n => format!("wire version {n}"),
    };
    format!(
        "{peer} speaks {what}; this node speaks wire version {WIRE_VERSION}: run the same \
         muster version on every control node and worker"
    )
}

/// One part of a worker node's live instances as it publishes them in
/// [`AGENTS_BUCKET`], under [`worker_key`]: one write per part every quarter TTL, however
/// many instances it holds. A worker whose instances fit the server's payload limit has
/// one part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// [`WIRE_VERSION`].
    pub wire: u32,
    /// The worker node.
    pub node: String,
    /// Which part of the worker's instances this is (its key's suffix).
    pub part: usize,
    /// The contract of each capability the part's instances serve, once each.
    pub contracts: Vec<ContractRecord>,
    /// The instances.
    pub instances: Vec<InstanceRecord>,
}

/// One agent instance in its worker's [`WorkerRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The instance id on its node, e.g. `echo#0`.
    pub id: String,
    /// The agent type.
    pub agent: String,
    /// Start generation on its node.
    pub generation: u64,
    /// Tasks at once.
    pub concurrency: usize,
    /// Tasks held at once (running and queued).
    pub capacity: usize,
    /// Lifecycle state.
    pub state: AgentState,
    /// Tasks the worker holds for it now, from every control node: running, queued, and
    /// waiting at the worker for a slot. Control nodes count the part that is not theirs
    /// against its capacity (docs/distributed.md, "Capacity across control nodes").
    pub load: usize,
    /// The names of its capabilities (each one's contract is in the record's
    /// `contracts`).
    pub capabilities: Vec<String>,
}

/// The value of a control node's key in the `muster_controls` bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRecord {
    /// The wire version the control node speaks ([`WIRE_VERSION`]).
    pub wire: u32,
}

/// A task handed to an instance of a worker node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssignMsg {
    /// The instance id on its node.
    pub instance: String,
    /// The envelope carrying the input; its task id and epoch identify the attempt.
    pub envelope: Arc<Envelope>,
    /// How long the owner waits, from when the worker reads this.
    pub timeout_ms: u64,
    /// Where the report goes.
    pub report_to: String,
    /// Where heartbeats go.
    pub beat_to: String,
    /// How often the worker tells that the attempt is still running (milliseconds): the
    /// control node gives an attempt up as lost after four such intervals of silence.
    pub alive_every_ms: u64,
    /// Where the attempt's effect records go ([`effect_subject`] of the control node
    /// that sent it); absent for a plain message, which has no task and so no ledger (its
    /// agent's effects run unrecorded, as on the control node itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect_to: Option<String>,
    /// The task's effect ledger as its owner holds it when it assigns (empty: no attempt
    /// started an effect yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<EffectEntry>,
    /// The prefix of the task's effect keys when it is not made from the task id (a
    /// delegated tool call keeps its parent's), or when the owner has made it already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect_prefix: Option<String>,
}

/// One effect record of an attempt running on a worker, sent to the task's control node on
/// the assignment's `effect_to` subject and answered on `ack_to` with an [`EffectAckMsg`]
/// naming `seq` (docs/distributed.md, "Effects across nodes").
///
/// # Example
/// ```
/// use muster_cluster::wire::{decode, EffectMsg, EffectRecord};
///
/// let text = br#"{"instance":"pay#0@w1","task_id":"01900000-0000-7000-8000-000000000001",
///   "epoch":2,"seq":7,"ack_to":"muster.effect_ack.w1","record":"started",
///   "name":"refund:A-1","key":"muster:01900000-0000-7000-8000-000000000001:refund:A-1",
///   "claim":"once"}"#;
/// let m = decode::<EffectMsg>(text).unwrap();
/// assert!(matches!(m.record, EffectRecord::Started { claim: Some(_), .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectMsg {
    /// The instance, as the control node names it (`id@node`).
    pub instance: String,
    /// The task.
    pub task_id: Uuid,
    /// The lease epoch the attempt runs under (a stale one's records are journaled too).
    pub epoch: u64,
    /// The worker's number for this record, echoed in its answer.
    pub seq: u64,
    /// Where the answer goes ([`effect_ack_subject`] of the worker).
    pub ack_to: String,
    /// The record.
    #[serde(flatten)]
    pub record: EffectRecord,
}

/// What an [`EffectMsg`] records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum EffectRecord {
    /// `effect_started`.
    Started {
        /// The effect.
        name: String,
        /// Its idempotency key.
        #[serde(default)]
        key: Option<String>,
        /// `Some`: the attempt asks for the effect (`ctx.effect`, `ctx.reconcile`), and
        /// the task's ledger may refuse; `None`: a declaration (a command agent's line).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim: Option<Claim>,
    },
    /// `effect_done`.
    Done {
        /// The effect.
        name: String,
        /// Its idempotency key.
        #[serde(default)]
        key: Option<String>,
        /// What it returned.
        result: Value,
    },
}

/// A control node's answer to one [`EffectMsg`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectAckMsg {
    /// The task.
    pub task_id: Uuid,
    /// The epoch of the record.
    pub epoch: u64,
    /// The record's `seq`.
    pub seq: u64,
    /// `true` once the record is in the control node's journal (SQLite: its group
    /// commit).
    pub written: bool,
    /// Why it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A refused claim: the effect's entry in the task's ledger (done, or started by
    /// another attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<EffectEntry>,
}

/// How an attempt on a worker node ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportMsg {
    /// The task.
    pub task_id: Uuid,
    /// The lease epoch the instance worked under.
    pub epoch: u64,
    /// The instance, as the control node names it (`id@node`).
    pub instance: String,
    /// The output, or how it failed.
    pub result: Result<Value, Failure>,
    /// What the attempt spent on models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A task heartbeat from a worker node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BeatMsg {
    /// The instance, as the control node names it (`id@node`).
    pub instance: String,
    /// The task.
    pub task_id: Uuid,
    /// The lease epoch.
    pub epoch: u64,
    /// `true`: the agent's own heartbeat (it renews the capability's heartbeat bound);
    /// `false`: the worker's word that the attempt is still running.
    #[serde(default)]
    pub agent: bool,
}

/// What a control node asks of a worker's instance outside an assignment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMsg {
    /// Cancel the attempt of `task_id` under `epoch`.
    Cancel {
        /// The instance id on its node.
        instance: String,
        /// The task.
        task_id: Uuid,
        /// The lease epoch.
        epoch: u64,
    },
    /// Stop the instance abruptly.
    Kill {
        /// The instance id on its node.
        instance: String,
        /// Why.
        reason: String,
    },
}

/// A message of the wire, with the name of the JSON Schema it is published with
/// (`schemas/<SCHEMA>.schema.json`); [`decode`] reads one from a peer's bytes.
pub trait WireMessage: serde::de::DeserializeOwned {
    /// The schema's name.
    const SCHEMA: &'static str;
    /// Parts checked against a schema of their own: (JSON pointer, schema name).
    const PARTS: &'static [(&'static str, &'static str)] = &[];
}

impl WireMessage for AssignMsg {
    const SCHEMA: &'static str = "cluster-assign";
    const PARTS: &'static [(&'static str, &'static str)] = &[("/envelope", "envelope")];
}
impl WireMessage for ReportMsg {
    const SCHEMA: &'static str = "cluster-report";
}
impl WireMessage for BeatMsg {
    const SCHEMA: &'static str = "cluster-beat";
}
impl WireMessage for ControlMsg {
    const SCHEMA: &'static str = "cluster-control";
}
impl WireMessage for EffectMsg {
    const SCHEMA: &'static str = "cluster-effect";
}
impl WireMessage for EffectAckMsg {
    const SCHEMA: &'static str = "cluster-effect-ack";
}
impl WireMessage for WorkerRecord {
    const SCHEMA: &'static str = "cluster-worker";
}
impl WireMessage for ControlRecord {
    const SCHEMA: &'static str = "cluster-control-node";
}
impl WireMessage for ContractRecord {
    const SCHEMA: &'static str = "cluster-contract";
}

/// The wire's published schemas, compiled once (they are part of this crate's source).
pub fn schemas() -> &'static SchemaStore {
    static STORE: OnceLock<SchemaStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let store = SchemaStore::new();
        for (name, text) in [
            (
                "cluster-assign",
                include_str!("../../../schemas/cluster-assign.schema.json"),
            ),
            (
                "cluster-report",
                include_str!("../../../schemas/cluster-report.schema.json"),
            ),
            (
                "cluster-beat",
                include_str!("../../../schemas/cluster-beat.schema.json"),
            ),
            (
                "cluster-control",
                include_str!("../../../schemas/cluster-control.schema.json"),
            ),
            (
                "cluster-worker",
                include_str!("../../../schemas/cluster-worker.schema.json"),
            ),
            (
                "cluster-effect",
                include_str!("../../../schemas/cluster-effect.schema.json"),
            ),
            (
                "cluster-effect-ack",
                include_str!("../../../schemas/cluster-effect-ack.schema.json"),
            ),
            (
                "cluster-control-node",
                include_str!("../../../schemas/cluster-control-node.schema.json"),
            ),
            (
                "cluster-contract",
                include_str!("../../../schemas/cluster-contract.schema.json"),
            ),
            (
                "cluster-run-lease",
                include_str!("../../../schemas/cluster-run-lease.schema.json"),
            ),
            (
                "cluster-api-request",
                include_str!("../../../schemas/cluster-api-request.schema.json"),
            ),
            (
                "cluster-api-reply",
                include_str!("../../../schemas/cluster-api-reply.schema.json"),
            ),
            (
                "envelope",
                include_str!("../../../schemas/envelope.schema.json"),
            ),
        ] {
            // Checked by the test `every_published_schema_compiles`.
            if let Ok(doc) = serde_json::from_str(text) {
                let _ = store.add(name, doc);
            }
        }
        store
    })
}

/// A peer's message that was refused: which kind, and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a `{schema}` message was refused: {problem}")]
pub struct WireError {
    /// The schema it was read against.
    pub schema: &'static str,
    /// What was wrong.
    pub problem: String,
}

/// Reads a message of the wire from a peer's bytes: JSON, checked against its published
/// schema and its parts against theirs ([`WireMessage::PARTS`]: an assignment's envelope
/// against `envelope.schema.json`), as every envelope is checked at a boundary, then
/// decoded. A
/// message its schema refuses is refused here, with the schema's words, whatever the
/// decoder would have made of it.
///
/// # Example
/// ```
/// use muster_cluster::wire::{decode, BeatMsg};
///
/// let ok = br#"{"instance":"echo#0@w1","task_id":"01900000-0000-7000-8000-000000000001","epoch":2}"#;
/// assert_eq!(decode::<BeatMsg>(ok).unwrap().epoch, 2);
/// let empty = br#"{"instance":"","task_id":"01900000-0000-7000-8000-000000000001","epoch":2}"#;
/// let e = decode::<BeatMsg>(empty).unwrap_err();
/// assert_eq!(e.schema, "cluster-beat");
/// assert!(e.problem.contains("/instance"), "{e}");
/// ```
pub fn decode<T: WireMessage>(bytes: &[u8]) -> Result<T, WireError> {
    let refused = |problem: String| WireError {
        schema: T::SCHEMA,
        problem,
    };
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| refused(format!("not JSON: {e}")))?;
    schemas()
        .validate(T::SCHEMA, &value)
        .map_err(|e| refused(e.to_string()))?;
    for (at, schema) in T::PARTS {
        if let Some(part) = value.pointer(at) {
            schemas()
                .validate(schema, part)
                .map_err(|e| refused(format!("at {at}: {e}")))?;
        }
    }
    serde_json::from_value(value).map_err(|e| refused(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_stay_in_the_key_alphabet() {
        let k = contract_key("code review#12");
        assert_eq!(k, "code=20review=2312");
        assert!(
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=.".contains(c))
        );
        let w = worker_key("n-1", 12);
        assert_eq!(parse_worker_key(&w), Some(("n-1", 12)));
        // A version-1 worker's instance key never reads as a worker key, whatever the id.
        for id in ["W0", "=W0", "x=W1", "code review#12"] {
            let old = format!("n-1.{}", escape(id));
            assert_eq!(parse_worker_key(&old), None, "{old}");
            assert_eq!(key_node(&old), "n-1");
        }
        assert!(check_node_name(&"x".repeat(MAX_NODE_NAME + 1)).is_err());
        assert!(check_node_name("").is_err());
    }

    #[test]
    fn a_changed_schema_changes_the_digest_and_is_named() {
        let store = muster_core::messaging::SchemaStore::new();
        store.add("in", json!({"type": "object"})).unwrap();
        store.add("out", json!({"type": "object"})).unwrap();
        let spec = muster_core::messaging::CapabilitySpec::new("echo", "in", "out");
        let a = ContractRecord::of(&spec.compile(&store).unwrap());
        let other = muster_core::messaging::SchemaStore::new();
        other.add("in", json!({"type": "object"})).unwrap();
        other
            .add("out", json!({"type": "object", "required": ["x"]}))
            .unwrap();
        let b = ContractRecord::of(&spec.compile(&other).unwrap());
        assert_eq!(a.differs(&a), Ok(()));
        let why = a.differs(&b).unwrap_err();
        assert!(why.contains("`in` or `out`"), "{why}");
    }

    /// Each message as encoded satisfies its schema in `schemas/` (the documented format).
    #[test]
    fn every_wire_message_satisfies_its_published_schema() {
        // Each example also reads back through `decode`, schema and parts checked.
        let check = |name: &str, text: &str, v: Value| {
            let store = muster_core::messaging::SchemaStore::shipped(name, text);
            assert!(store.contains(name), "{name} compiles");
            if let Err(e) = store.validate(name, &v) {
                panic!("{name}: {e}: {v}");
            }
            let bytes = serde_json::to_vec(&v).unwrap();
            let read = match name {
                "cluster-contract" => decode::<ContractRecord>(&bytes).map(drop),
                "cluster-worker" => decode::<WorkerRecord>(&bytes).map(drop),
                "cluster-control-node" => decode::<ControlRecord>(&bytes).map(drop),
                "cluster-assign" => decode::<AssignMsg>(&bytes).map(drop),
                "cluster-report" => decode::<ReportMsg>(&bytes).map(drop),
                "cluster-beat" => decode::<BeatMsg>(&bytes).map(drop),
                "cluster-control" => decode::<ControlMsg>(&bytes).map(drop),
                "cluster-effect" => decode::<EffectMsg>(&bytes).map(drop),
                "cluster-effect-ack" => decode::<EffectAckMsg>(&bytes).map(drop),
                "cluster-run-lease" => decode::<crate::failover::RunLease>(&bytes).map(drop),
                "cluster-api-request" => decode::<crate::peers::ApiRequest>(&bytes).map(drop),
                "cluster-api-reply" => decode::<crate::peers::ApiReply>(&bytes).map(drop),
                other => panic!("no decoder for {other}"),
            };
            if let Err(e) = read {
                panic!("{name}: {e}: {v}");
            }
        };
        let store = muster_core::messaging::SchemaStore::new();
        store.add("in", json!({"type": "object"})).unwrap();
        let contract = ContractRecord::of(
            &muster_core::messaging::CapabilitySpec::new("echo", "in", "in")
                .compile(&store)
                .unwrap(),
        );
        check(
            "cluster-contract",
            include_str!("../../../schemas/cluster-contract.schema.json"),
            serde_json::to_value(&contract).unwrap(),
        );
        let worker = WorkerRecord {
            wire: WIRE_VERSION,
            node: "w1".into(),
            part: 0,
            contracts: vec![contract],
            instances: vec![InstanceRecord {
                id: "echo#0".into(),
                agent: "echo".into(),
                generation: 0,
                concurrency: 1,
                capacity: 2,
                state: AgentState::Ready,
                load: 0,
                capabilities: vec!["echo".into()],
            }],
        };
        check(
            "cluster-worker",
            include_str!("../../../schemas/cluster-worker.schema.json"),
            serde_json::to_value(&worker).unwrap(),
        );
        check(
            "cluster-control-node",
            include_str!("../../../schemas/cluster-control-node.schema.json"),
            serde_json::to_value(ControlRecord { wire: WIRE_VERSION }).unwrap(),
        );
        let task = Uuid::now_v7();
        let mut env = Envelope::new(
            "echo",
            muster_core::messaging::Recipient::Agent("echo#0".into()),
            "in",
            json!({"x": 1}),
        );
        env.task_id = Some(task);
        env.epoch = 2;
        let assign = AssignMsg {
            instance: "echo#0".into(),
            envelope: Arc::new(env),
            timeout_ms: 1000,
            report_to: report_subject("c1"),
            beat_to: beat_subject("c1"),
            alive_every_ms: 375,
            effect_to: Some(effect_subject("c1")),
            effects: vec![
                EffectEntry::started("mail", None, 1),
                EffectEntry {
                    result: Some(json!({"charge": "ch_1"})),
                    ..EffectEntry::started("refund:A-1", Some("k".into()), 1)
                },
            ],
            effect_prefix: Some("muster:parent:tool:".into()),
        };
        check(
            "cluster-assign",
            include_str!("../../../schemas/cluster-assign.schema.json"),
            serde_json::to_value(&assign).unwrap(),
        );
        for result in [
            Ok(json!({"x": 1})),
            Err(Failure::AgentGone("gone".into())),
            Err(Failure::Timeout),
        ] {
            let r = ReportMsg {
                task_id: task,
                epoch: 2,
                instance: "echo#0@w1".into(),
                result,
                usage: None,
            };
            check(
                "cluster-report",
                include_str!("../../../schemas/cluster-report.schema.json"),
                serde_json::to_value(&r).unwrap(),
            );
        }
        check(
            "cluster-beat",
            include_str!("../../../schemas/cluster-beat.schema.json"),
            serde_json::to_value(BeatMsg {
                instance: "echo#0@w1".into(),
                task_id: task,
                epoch: 2,
                agent: false,
            })
            .unwrap(),
        );
        for m in [
            ControlMsg::Cancel {
                instance: "echo#0".into(),
                task_id: task,
                epoch: 2,
            },
            ControlMsg::Kill {
                instance: "echo#0".into(),
                reason: "liveness".into(),
            },
        ] {
            check(
                "cluster-control",
                include_str!("../../../schemas/cluster-control.schema.json"),
                serde_json::to_value(&m).unwrap(),
            );
        }
        for record in [
            EffectRecord::Started {
                name: "refund:A-1".into(),
                key: Some("k".into()),
                claim: Some(Claim::Once),
            },
            EffectRecord::Started {
                name: "mail".into(),
                key: None,
                claim: None,
            },
            EffectRecord::Done {
                name: "refund:A-1".into(),
                key: Some("k".into()),
                result: Value::Null,
            },
        ] {
            check(
                "cluster-effect",
                include_str!("../../../schemas/cluster-effect.schema.json"),
                serde_json::to_value(EffectMsg {
                    instance: "pay#0@w1".into(),
                    task_id: task,
                    epoch: 2,
                    seq: 1,
                    ack_to: effect_ack_subject("w1"),
                    record,
                })
                .unwrap(),
            );
        }
        for (written, entry) in [
            (true, None),
            (false, Some(EffectEntry::started("refund:A-1", None, 1))),
        ] {
            check(
                "cluster-effect-ack",
                include_str!("../../../schemas/cluster-effect-ack.schema.json"),
                serde_json::to_value(EffectAckMsg {
                    task_id: task,
                    epoch: 2,
                    seq: 1,
                    written,
                    error: (!written).then(|| "claimed first".to_string()),
                    entry,
                })
                .unwrap(),
            );
        }
        check(
            "cluster-run-lease",
            include_str!("../../../schemas/cluster-run-lease.schema.json"),
            serde_json::to_value(crate::failover::RunLease {
                owner: "c1".into(),
                workflow: "code-change".into(),
            })
            .unwrap(),
        );
        check(
            "cluster-api-request",
            include_str!("../../../schemas/cluster-api-request.schema.json"),
            serde_json::to_value(crate::peers::ApiRequest {
                from: "c1".into(),
                method: "POST".into(),
                path: "/v1/runs/01900000-0000-7000-8000-000000000001/gates/ship".into(),
                headers: vec![("authorization".into(), "Bearer t".into())],
                body: r#"{"decision":"approve"}"#.into(),
            })
            .unwrap(),
        );
        check(
            "cluster-api-reply",
            include_str!("../../../schemas/cluster-api-reply.schema.json"),
            serde_json::to_value(crate::peers::ApiReply::error(409, "already decided")).unwrap(),
        );
    }

    #[test]
    fn every_published_schema_compiles() {
        for name in [
            AssignMsg::SCHEMA,
            ReportMsg::SCHEMA,
            BeatMsg::SCHEMA,
            ControlMsg::SCHEMA,
            EffectMsg::SCHEMA,
            EffectAckMsg::SCHEMA,
            WorkerRecord::SCHEMA,
            ControlRecord::SCHEMA,
            ContractRecord::SCHEMA,
            crate::failover::RunLease::SCHEMA,
            crate::peers::ApiRequest::SCHEMA,
            crate::peers::ApiReply::SCHEMA,
            "envelope",
        ] {
            assert!(schemas().contains(name), "{name} compiles");
        }
    }

    #[test]
    fn reports_round_trip_with_failures() {
        let r = ReportMsg {
            task_id: Uuid::now_v7(),
            epoch: 3,
            instance: "echo#0@w1".into(),
            result: Err(Failure::AgentGone("gone".into())),
            usage: None,
        };
        let text = serde_json::to_string(&r).unwrap();
        let back: ReportMsg = serde_json::from_str(&text).unwrap();
        assert_eq!(back.result, r.result);
        assert_eq!(back.epoch, 3);
    }
}
