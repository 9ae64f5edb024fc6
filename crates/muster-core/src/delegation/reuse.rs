//! Completed work, discoverable: the accepted results of idempotent capabilities, and the
//! identical tasks in flight.
//!
//! A capability that declares `idempotent = true` promises that the same input gives an
//! equally good output. A task of it whose capability, contract version and canonical
//! input (a hash of the JSON with sorted keys, then compared in full, so a hash collision
//! never returns another input's result) match an accepted result younger than the
//! capability's `reuse_for` returns that result, journaled `task_reused` with the original
//! task's id, instead of running again; a task identical to one in flight attaches to it
//! and ends with its result. Only accepted results are kept: a rejected output, an
//! escalated or cancelled task, or a result older than `reuse_for` is never reused, and
//! when the task a follower attached to ends without a result, the follower runs itself.
//! It must not lease or journal: the owner does both.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::Value;
use uuid::Uuid;

/// The most accepted results kept; past it, expired ones are dropped, and if none has
/// expired the newest is not kept (it is still returned to its own caller).
pub const MAX_KEPT: usize = 10_000;

/// What identifies identical work: capability, contract version, canonical input hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReuseKey {
    capability: Arc<str>,
    version: Arc<str>,
    hash: u64,
}

impl ReuseKey {
    /// The key of `input` for `capability` at contract `version`.
    pub fn new(capability: &str, version: &str, input: &Value) -> Self {
        ReuseKey {
            capability: Arc::from(capability),
            version: Arc::from(version),
            hash: canonical_hash(input),
        }
    }
}

/// A hash of the canonical JSON of `v`: object keys in sorted order, whatever order they
/// were written in.
///
/// # Example
/// ```
/// use muster_core::delegation::reuse::canonical_hash;
/// use serde_json::json;
/// assert_eq!(canonical_hash(&json!({"a": 1, "b": [true]})), canonical_hash(&json!({"b": [true], "a": 1})));
/// assert_ne!(canonical_hash(&json!({"a": 1})), canonical_hash(&json!({"a": 2})));
/// ```
pub fn canonical_hash(v: &Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    hash_value(v, &mut h);
    h.finish()
}

fn hash_value(v: &Value, h: &mut impl Hasher) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => (2u8, n.to_string()).hash(h),
        Value::String(s) => (3u8, s).hash(h),
        Value::Array(a) => {
            (4u8, a.len()).hash(h);
            for x in a {
                hash_value(x, h);
            }
        }
        Value::Object(m) => {
            (5u8, m.len()).hash(h);
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                k.hash(h);
                hash_value(&m[k], h);
            }
        }
    }
}

/// The result an identical task ended with, sent to the tasks attached to it.
#[derive(Debug, Message, Clone)]
#[rtype(result = "()")]
pub struct Reused {
    /// The task attached to it, to which this is sent.
    pub follower: Uuid,
    /// The task that ran.
    pub original: Uuid,
    /// Its accepted output (shared with the original's records, not copied), or `None`
    /// when it ended without one (the follower runs).
    pub output: Option<Arc<Value>>,
}

struct Done {
    task: Uuid,
    input: Arc<Value>,
    output: Arc<Value>,
    until: tokio::time::Instant,
}

struct InFlight {
    task: Uuid,
    input: Arc<Value>,
    followers: Vec<(Uuid, Recipient<Reused>)>,
}

/// What a task finds when it looks for identical work.
#[derive(Debug)]
pub enum Found {
    /// An accepted result it returns.
    Done {
        /// The task that produced it.
        task: Uuid,
        /// The output (the one the original task's records hold).
        output: Arc<Value>,
    },
    /// An identical task in flight; the caller is attached and gets a [`Reused`].
    InFlight(Uuid),
    /// Nothing: the caller runs, and reports its end with [`Reuse::finish`].
    Run,
}

/// The table of reusable results and identical tasks in flight.
#[derive(Default)]
pub struct Reuse {
    done: DashMap<ReuseKey, Vec<Done>>,
    inflight: Mutex<std::collections::HashMap<ReuseKey, Vec<InFlight>>>,
}

impl std::fmt::Debug for Reuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reuse")
            .field("kept", &self.done.len())
            .finish()
    }
}

impl Reuse {
    /// Looks for an accepted result, then for a task in flight, of the same `key` and
    /// `input`; finding neither, enters `task` as in flight.
    pub fn find_or_run(
        &self,
        key: &ReuseKey,
        input: &Arc<Value>,
        task: Uuid,
        me: Recipient<Reused>,
    ) -> Found {
        let now = tokio::time::Instant::now();
        if let Some(done) = self.done.get(key)
            && let Some(d) = done.iter().find(|d| d.input == *input && d.until > now)
        {
            return Found::Done {
                task: d.task,
                output: d.output.clone(),
            };
        }
        let mut inflight = self.inflight.lock();
        let entries = inflight.entry(key.clone()).or_default();
        if let Some(f) = entries.iter_mut().find(|f| f.input == *input) {
            f.followers.push((task, me));
            return Found::InFlight(f.task);
        }
        entries.push(InFlight {
            task,
            input: Arc::clone(input),
            followers: Vec::new(),
        });
        Found::Run
    }

    /// `task`, entered by [`find_or_run`](Self::find_or_run), ended: with its accepted
    /// `output` (kept for `keep`, handed to every task attached), or without one (each
    /// attached task runs itself).
    pub fn finish(&self, key: &ReuseKey, task: Uuid, output: Option<&Arc<Value>>, keep: Duration) {
        let entry = {
            let mut inflight = self.inflight.lock();
            let Some(entries) = inflight.get_mut(key) else {
                return;
            };
            let Some(i) = entries.iter().position(|f| f.task == task) else {
                return;
            };
            let entry = entries.swap_remove(i);
            if entries.is_empty() {
                inflight.remove(key);
            }
            entry
        };
        if let Some(output) = output {
            let now = tokio::time::Instant::now();
            if self.done.len() >= MAX_KEPT {
                self.done.retain(|_, v| {
                    v.retain(|d| d.until > now);
                    !v.is_empty()
                });
            }
            if self.done.len() < MAX_KEPT {
                let mut v = self.done.entry(key.clone()).or_default();
                v.retain(|d| d.input != entry.input && d.until > now);
                v.push(Done {
                    task,
                    input: entry.input,
                    output: Arc::clone(output),
                    until: now + keep,
                });
            }
        }
        for (follower, f) in entry.followers {
            f.do_send(Reused {
                follower,
                original: task,
                output: output.cloned(),
            });
        }
    }
}
