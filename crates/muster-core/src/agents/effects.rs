//! The effect ledger of one task: which effects on the outside world (a charge, an email,
//! a write) its attempts declared, which of them are done and with what result, and the
//! idempotency keys they used.
//!
//! A task's owner makes one [`Ledger`] per task and hands it, shared, to every attempt of
//! it; an attempt reads and extends it through its [`TaskContext`](super::TaskContext)
//! (`effect`, `effect_key`, `effects`). Every change is journaled first (`effect_started`,
//! `effect_done`), so after a crash recovery rebuilds the ledger from the journal alone
//! ([`EffectEntry::fold`]) and the resubmitted task starts from it. It must not decide
//! what an unknown outcome means: the agent reconciles it with the outside world.

use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::journal::{Event, Recorder, Unwritten};

/// Where one effect of a task stands, as the ledger hands it to an attempt.
///
/// # Example
/// ```
/// use muster_core::agents::effects::{EffectEntry, EffectState};
/// let e = EffectEntry::started("refund:17", Some("k".into()), 2);
/// assert_eq!(e.state(), EffectState::Unknown);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectEntry {
    /// The effect's name, unique within its task.
    pub name: String,
    /// The idempotency key it was started with, if any.
    pub key: Option<String>,
    /// The epoch of the attempt that started it (of the one that finished it, once done).
    pub epoch: u64,
    /// What it returned, once done; `None` while its outcome is unknown. (A done effect
    /// that returned nothing holds `Some(Value::Null)`: present and `null` reads back as
    /// done.)
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub result: Option<Value>,
    /// How many times it was started (more than once: an unknown outcome was retried).
    pub starts: u32,
}

/// A field that is present is `Some`, `null` included (serde's default reads `null` as
/// `None`, which would make an effect done with a `null` result unknown).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// What an attempt may assume of an effect in its task's ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectState {
    /// Done: its result is recorded; it must not run again.
    Done,
    /// Started and never reported done: it may or may not have happened. Ask the outside
    /// world by its key before doing it again.
    Unknown,
}

impl EffectEntry {
    /// An effect just started by epoch `epoch`.
    pub fn started(name: &str, key: Option<String>, epoch: u64) -> Self {
        EffectEntry {
            name: name.to_string(),
            key,
            epoch,
            result: None,
            starts: 1,
        }
    }

    /// Done or unknown.
    pub fn state(&self) -> EffectState {
        if self.result.is_some() {
            EffectState::Done
        } else {
            EffectState::Unknown
        }
    }

    /// Folds one journal event into a task's ledger `entries` (in journal order); events
    /// other than `effect_started` and `effect_done` change nothing. A second
    /// `effect_done` for a name keeps the first result.
    ///
    /// # Example
    /// ```
    /// use muster_core::agents::effects::EffectEntry;
    /// use muster_core::Event;
    /// let task = uuid::Uuid::nil();
    /// let mut ledger = Vec::new();
    /// EffectEntry::fold(&mut ledger, &Event::EffectStarted {
    ///     task, name: "mail".into(), key: None, epoch: 1, agent: "a#0".into() });
    /// EffectEntry::fold(&mut ledger, &Event::EffectDone {
    ///     task, name: "mail".into(), key: None, epoch: 1, agent: "a#0".into(),
    ///     result: serde_json::json!("sent") });
    /// assert_eq!(ledger[0].result, Some(serde_json::json!("sent")));
    /// ```
    pub fn fold(entries: &mut Vec<EffectEntry>, event: &Event) {
        match event {
            Event::EffectStarted {
                name, key, epoch, ..
            } => match entries.iter_mut().find(|e| e.name == *name) {
                Some(e) => {
                    e.starts += 1;
                    if e.result.is_none() {
                        e.epoch = *epoch;
                        if key.is_some() {
                            e.key = key.clone();
                        }
                    }
                }
                None => entries.push(EffectEntry::started(name, key.clone(), *epoch)),
            },
            Event::EffectDone {
                name,
                key,
                epoch,
                result,
                ..
            } => match entries.iter_mut().find(|e| e.name == *name) {
                Some(e) if e.result.is_some() => {}
                Some(e) => {
                    e.result = Some(result.clone());
                    e.epoch = *epoch;
                }
                None => entries.push(EffectEntry {
                    result: Some(result.clone()),
                    ..EffectEntry::started(name, key.clone(), *epoch)
                }),
            },
            _ => {}
        }
    }
}

/// Why [`TaskContext::effect`](super::TaskContext::effect) returned no result.
///
/// # Example
/// ```
/// use muster_core::agents::effects::EffectError;
/// use muster_core::AgentError;
/// let e = EffectError::Unknown { name: "refund".into(), key: Some("t/refund".into()), epoch: 1 };
/// let as_agent: AgentError = e.into(); // `?` in an agent turns it into a task error
/// assert!(as_agent.message.contains("unknown outcome"));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EffectError {
    /// An earlier attempt (or a concurrent stale one) started the effect and never reported
    /// it done: it may have happened. Reconcile with the outside world by `key` (query it,
    /// or repeat the call with the same idempotency key) and report what you found with
    /// [`TaskContext::effect_done`](super::TaskContext::effect_done).
    #[error(
        "effect `{name}` has an unknown outcome: started by epoch {epoch} with key {key:?} and never reported done"
    )]
    Unknown {
        /// The effect.
        name: String,
        /// The key it was started with.
        key: Option<String>,
        /// The epoch that started it.
        epoch: u64,
    },
    /// The effect's closure failed: its outcome is unknown from now on.
    #[error("effect `{name}` failed: {message}")]
    Failed {
        /// The effect.
        name: String,
        /// What the closure said.
        message: String,
    },
    /// Its recorded result (or the closure's) does not convert to or from the type asked
    /// for.
    #[error("effect `{name}`: its result does not fit the type asked for: {message}")]
    Result {
        /// The effect.
        name: String,
        /// The serde error.
        message: String,
    },
    /// Its `effect_started` is not in the task's journal (the journal stopped first, or
    /// the task's owner on another node did not journal it): the effect was not run.
    #[error("effect `{name}` was not run: {source}")]
    Unwritten {
        /// The effect.
        name: String,
        /// Why the record is not written.
        source: Unrecorded,
    },
}

/// Why an effect record is not in its task's journal.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unrecorded {
    /// This process's journal stopped before it wrote the record.
    #[error(transparent)]
    Journal(#[from] Unwritten),
    /// The task's journal is in another process (a cluster's control node), which did not
    /// journal the record: it was unreachable, or no longer holds the task.
    #[error("the task's owner did not journal it: {0}")]
    Remote(String),
    /// The task's owner refused a claim: another attempt of the task started (or
    /// finished) the effect first. Its entry as the owner's ledger holds it.
    #[error("effect `{}` was claimed first by epoch {}", .0.name, .0.epoch)]
    Claimed(EffectEntry),
}

/// What an `effect_started` asks of the task's ledger when its journal is in another
/// process ([`RemoteJournal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Claim {
    /// [`TaskContext::effect`](super::TaskContext::effect): the effect, if no attempt
    /// started it.
    Once,
    /// [`TaskContext::reconcile`](super::TaskContext::reconcile): the effect again if its
    /// outcome is unknown (never if it is done).
    Reconcile,
}

/// The journal of a task whose owner lives in another process: a cluster worker's attempt
/// sends its effect records to the control node that holds the task (muster-cluster
/// implements it). Records are sent in the order the ledger makes them.
pub trait RemoteJournal: Send + Sync + std::fmt::Debug {
    /// Sends `event` (an `effect_started` or `effect_done` of the ledger's task) to the
    /// task's journal. `claim`: the record asks the owner's ledger for the effect, which
    /// may refuse ([`Unrecorded::Claimed`]); `None`: a declaration, journaled whatever the
    /// ledger holds. Returns the record's number for [`RemoteJournal::written`].
    fn send(&self, event: &Event, claim: Option<Claim>) -> u64;

    /// Ends once record `seq` is in the task's journal, or with why it is not.
    fn written(&self, seq: u64) -> BoxFuture<'static, Result<(), Unrecorded>>;
}

/// Where a ledger's records go.
#[derive(Debug)]
enum Sink {
    /// Nowhere (a task run by hand, a plain message).
    Detached,
    /// This runtime's journal.
    Journal(Recorder),
    /// The journal of the task's owner in another process.
    Remote(Arc<dyn RemoteJournal>),
}

impl Sink {
    /// Records `event`; its number (0 when detached).
    fn record(&self, event: Event, claim: Option<Claim>) -> u64 {
        match self {
            Sink::Detached => 0,
            Sink::Journal(r) => r.record(event),
            Sink::Remote(r) => r.send(&event, claim),
        }
    }
}

/// One task's effect ledger, shared by all its attempts (see the module docs).
///
/// # Example
/// ```
/// use muster_core::agents::effects::Ledger;
/// let ledger = Ledger::detached(uuid::Uuid::nil());
/// assert!(ledger.entries().is_empty());
/// ```
#[derive(Debug)]
pub struct Ledger {
    task: Uuid,
    sink: Sink,
    /// The prefix of the task's effect keys: given (a delegated tool call's), or made
    /// from the task id when first asked for. Every task has a ledger and most never use
    /// it, so a task's hop does not format its id.
    prefix: std::sync::OnceLock<Arc<str>>,
    entries: Mutex<Vec<EffectEntry>>,
}

impl Ledger {
    /// The ledger of task `task`, journaling through `recorder`, starting from `prior` (the
    /// entries recovered from the journal, empty for a new task). `prefix` overrides the
    /// task's key prefix (a delegated tool call keeps its parent's key across the parent's
    /// attempts); `None`: the task id.
    pub fn new(
        task: Uuid,
        recorder: Recorder,
        prior: Vec<EffectEntry>,
        prefix: Option<Arc<str>>,
    ) -> Self {
        Ledger {
            task,
            sink: Sink::Journal(recorder),
            prefix: prefix.map(std::sync::OnceLock::from).unwrap_or_default(),
            entries: Mutex::new(prior),
        }
    }

    /// The ledger of task `task` for an attempt whose task's journal is in another process
    /// (a cluster worker's): it starts from `prior` (the entries as the task's owner held
    /// them when it assigned the attempt) and sends every record to `journal`; a claim is
    /// decided there, on the owner's ledger. `prefix` as for [`Ledger::new`].
    pub fn remote(
        task: Uuid,
        journal: Arc<dyn RemoteJournal>,
        prior: Vec<EffectEntry>,
        prefix: Option<Arc<str>>,
    ) -> Self {
        Ledger {
            task,
            sink: Sink::Remote(journal),
            prefix: prefix.map(std::sync::OnceLock::from).unwrap_or_default(),
            entries: Mutex::new(prior),
        }
    }

    /// Journals `event` through the task's recorder (nothing for a detached ledger, nor
    /// yet for a cluster worker's: the remote journal takes effect records only): the
    /// records an attempt makes about itself as it goes, such as its model calls.
    pub(crate) fn record(&self, event: Event) {
        if let Sink::Journal(r) = &self.sink {
            r.record(event);
        }
    }

    /// A ledger that journals nothing (a task run by hand, a plain message).
    pub fn detached(task: Uuid) -> Self {
        Ledger {
            task,
            sink: Sink::Detached,
            prefix: std::sync::OnceLock::new(),
            entries: Mutex::default(),
        }
    }

    /// The key prefix of task `task`'s effects: `muster:{task}:`.
    ///
    /// # Example
    /// ```
    /// use muster_core::agents::effects::Ledger;
    /// assert_eq!(&*Ledger::prefix_of(uuid::Uuid::nil()),
    ///     "muster:00000000-0000-0000-0000-000000000000:");
    /// ```
    pub fn prefix_of(task: Uuid) -> Arc<str> {
        Arc::from(format!("muster:{task}:"))
    }

    /// The task.
    pub fn task(&self) -> Uuid {
        self.task
    }

    /// The prefix of this task's effect keys.
    pub fn prefix(&self) -> &Arc<str> {
        self.prefix.get_or_init(|| Ledger::prefix_of(self.task))
    }

    /// The prefix if it was given or already made (`None`: the task id's, not made yet),
    /// for a host that hands the ledger to another process without making it.
    pub fn prefix_if_made(&self) -> Option<&Arc<str>> {
        self.prefix.get()
    }

    /// The effect key of `name`: the same for every attempt of the task, different
    /// between tasks.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }

    /// A copy of the entries.
    pub fn entries(&self) -> Vec<EffectEntry> {
        self.entries.lock().clone()
    }

    /// The entry of effect `name`, if any attempt started it.
    pub fn get(&self, name: &str) -> Option<EffectEntry> {
        self.entries.lock().iter().find(|e| e.name == name).cloned()
    }

    /// Claims effect `name` for epoch `epoch` of `agent`: `Ok(seq)` (the sequence number
    /// of its `effect_started`, 0 when detached) if nobody started it, else the entry
    /// that exists. With `retry`, an entry of unknown outcome is claimed again (the agent
    /// reconciles it by its key); a done one never is.
    pub fn claim(
        &self,
        name: &str,
        key: Option<&str>,
        epoch: u64,
        agent: &Arc<str>,
        retry: bool,
    ) -> Result<u64, EffectEntry> {
        let mut entries = self.entries.lock();
        let event = Event::EffectStarted {
            task: self.task,
            name: name.to_string(),
            key: key.map(str::to_string),
            epoch,
            agent: agent.clone(),
        };
        match entries.iter().find(|e| e.name == name) {
            Some(e) if e.result.is_some() || !retry => return Err(e.clone()),
            _ => {}
        }
        EffectEntry::fold(&mut entries, &event);
        // Journaled under the lock: two attempts racing for one effect journal in the
        // order they claimed it.
        let claim = if retry { Claim::Reconcile } else { Claim::Once };
        Ok(self.sink.record(event, Some(claim)))
    }

    /// Records that epoch `epoch` of `agent` started effect `name`, whatever the ledger
    /// holds (an agent that reports its effects itself, as command agents do, says what it
    /// does rather than asks); returns the record's sequence number (0 when detached).
    pub fn started(&self, name: &str, key: Option<&str>, epoch: u64, agent: &Arc<str>) -> u64 {
        let mut entries = self.entries.lock();
        let event = Event::EffectStarted {
            task: self.task,
            name: name.to_string(),
            key: key.map(str::to_string),
            epoch,
            agent: agent.clone(),
        };
        EffectEntry::fold(&mut entries, &event);
        self.sink.record(event, None)
    }

    /// Records that effect `name` is done with `result` (journaled `effect_done`); returns
    /// the record's sequence number (0 when detached).
    pub fn done(
        &self,
        name: &str,
        key: Option<&str>,
        epoch: u64,
        agent: &Arc<str>,
        result: Value,
    ) -> u64 {
        let mut entries = self.entries.lock();
        let event = Event::EffectDone {
            task: self.task,
            name: name.to_string(),
            key: key.map(str::to_string),
            epoch,
            agent: agent.clone(),
            result,
        };
        EffectEntry::fold(&mut entries, &event);
        self.sink.record(event, None)
    }

    /// Waits until record `seq` is written (SQLite: one group commit; another process's
    /// journal: its answer), at once for a journal whose `append` is the write. A claim
    /// the task's owner refused ([`Unrecorded::Claimed`]) puts the owner's entry in this
    /// ledger.
    pub async fn written(&self, seq: u64) -> Result<(), Unrecorded> {
        match &self.sink {
            Sink::Detached => Ok(()),
            Sink::Journal(r) => match r.until_written(seq) {
                Some(w) => w.await.map_err(Unrecorded::from),
                None => Ok(()),
            },
            Sink::Remote(r) => {
                let written = r.written(seq).await;
                if let Err(Unrecorded::Claimed(theirs)) = &written {
                    let mut entries = self.entries.lock();
                    match entries.iter_mut().find(|e| e.name == theirs.name) {
                        Some(e) => *e = theirs.clone(),
                        None => entries.push(theirs.clone()),
                    }
                }
                written
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::journal::{Journal, MemoryJournal};

    fn ledger() -> (Ledger, Arc<MemoryJournal>) {
        let j = Arc::new(MemoryJournal::default());
        let rec = Recorder::new(j.clone(), Clock::fixed(0));
        (Ledger::new(Uuid::nil(), rec, Vec::new(), None), j)
    }

    #[test]
    fn a_done_effect_is_never_claimed_again() {
        let (l, j) = ledger();
        let a: Arc<str> = Arc::from("a#0");
        assert!(l.claim("pay", Some("k"), 1, &a, false).is_ok());
        l.done("pay", Some("k"), 1, &a, Value::from(7));
        let again = l.claim("pay", Some("k"), 2, &a, true).unwrap_err();
        assert_eq!(again.result, Some(Value::from(7)));
        assert_eq!(j.len(), 2);
    }

    #[test]
    fn a_started_effect_is_unknown_until_retried() {
        let (l, j) = ledger();
        let a: Arc<str> = Arc::from("a#0");
        l.claim("pay", Some("k"), 1, &a, false).unwrap();
        let unknown = l.claim("pay", Some("k"), 2, &a, false).unwrap_err();
        assert_eq!(unknown.state(), EffectState::Unknown);
        assert!(l.claim("pay", Some("k"), 2, &a, true).is_ok());
        assert_eq!(l.get("pay").map(|e| e.starts), Some(2));
        assert_eq!(j.len(), 2);
    }

    #[test]
    fn an_effect_done_with_a_null_result_reads_back_as_done() {
        let done = EffectEntry {
            result: Some(Value::Null),
            ..EffectEntry::started("mail", None, 1)
        };
        let text = serde_json::to_string(&done).unwrap();
        let back: EffectEntry = serde_json::from_str(&text).unwrap();
        assert_eq!(back.state(), EffectState::Done, "{text}");
        let unknown: EffectEntry =
            serde_json::from_str(r#"{"name":"mail","key":null,"epoch":1,"starts":1}"#).unwrap();
        assert_eq!(unknown.state(), EffectState::Unknown);
    }

    #[test]
    fn the_ledger_folds_back_from_the_journal() {
        let (l, j) = ledger();
        let a: Arc<str> = Arc::from("a#0");
        l.claim("x", None, 1, &a, false).unwrap();
        l.claim("y", Some("ky"), 1, &a, false).unwrap();
        l.done("y", Some("ky"), 1, &a, Value::from("ok"));
        let mut folded = Vec::new();
        for r in j.read_after(0) {
            EffectEntry::fold(&mut folded, &r.event);
        }
        assert_eq!(folded, l.entries());
        assert_eq!(folded[0].state(), EffectState::Unknown);
        assert_eq!(folded[1].state(), EffectState::Done);
    }
}
