//! The scope table: which task holds which scope, and who waits for one.
//!
//! One actor per runtime, started with the first task that declares a scope (a task
//! without one never talks to it). A task's owner asks for its whole scope before its
//! first lease (`AcquireScope`) and frees it when the task ends (`ReleaseScope`).
//! Write patterns are exclusive against overlapping writes and reads; reads share.
//!
//! Deadlock-free by construction: a scope is granted all at once or not at all (a task
//! never holds part of its scope while it waits for the rest), and the table is one actor,
//! so there is no lock order to get wrong; patterns are kept in canonical order so the
//! same scope always reads the same. First come, first served: a waiting task is granted
//! as soon as its scope overlaps nothing held and nothing asked for before it, so a later
//! task never overtakes an earlier one it conflicts with (no starvation), while tasks that
//! conflict with nobody pass. Every grant, wait and release is journaled
//! (`scope_acquired`, `scope_waiting`, `scope_released`), and [`held_at`] rebuilds the
//! table from a journal. It upholds the scope half of G2 (one writer per resource at a
//! time) and must not lease, check outputs or end tasks: that is the owner's.
//!
//! ```text
//!  acquire ──free?──yes──▶ held ──release──▶ (next waiters in FIFO order re-checked)
//!              │
//!              no ──on_conflict = fail──▶ refused (holder + overlapping patterns)
//!              └────on_conflict = wait──▶ queue (FIFO) ──free──▶ held
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::protocol::{AcquireScope, ReleaseScope, ScopeRefused};
use crate::journal::{Event, Record, Recorder};
use crate::messaging::Scope;

struct Waiting {
    task: Uuid,
    scope: Arc<Scope>,
    granted: oneshot::Sender<Result<(), ScopeRefused>>,
}

/// The scope table actor (see the module docs).
pub struct ScopeTable {
    recorder: Recorder,
    held: Vec<(Uuid, Arc<Scope>)>,
    queue: VecDeque<Waiting>,
}

impl std::fmt::Debug for ScopeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeTable")
            .field("held", &self.held)
            .field("waiting", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl ScopeTable {
    /// An empty table that journals through `recorder`.
    pub fn new(recorder: Recorder) -> Self {
        ScopeTable {
            recorder,
            held: Vec::new(),
            queue: VecDeque::new(),
        }
    }

    /// The first task ahead of `scope` (holding, or waiting before position `before` of
    /// the queue) it conflicts with.
    fn blocker(&self, scope: &Scope, before: usize) -> Option<ScopeRefused> {
        let held = self.held.iter().map(|(t, s)| (*t, s));
        let queued = self.queue.iter().take(before).map(|w| (w.task, &w.scope));
        held.chain(queued).find_map(|(holder, theirs)| {
            scope
                .conflict_with(theirs)
                .map(|overlap| ScopeRefused { holder, overlap })
        })
    }

    fn grant(
        &mut self,
        task: Uuid,
        scope: Arc<Scope>,
        granted: oneshot::Sender<Result<(), ScopeRefused>>,
    ) {
        if granted.is_closed() {
            return; // its owner is gone (and releases, which finds nothing)
        }
        self.recorder.record(Event::ScopeAcquired {
            task,
            scope: Scope::clone(&scope),
        });
        self.held.push((task, scope));
        let _ = granted.send(Ok(()));
    }

    /// Grants every waiter, in order, whose scope is now free. Only a waiter whose scope
    /// overlaps the one just freed can have become free (the others are blocked by what
    /// blocked them before, or by a waiter now granted), so only those are looked at.
    fn wake(&mut self, freed: &Scope) {
        let mut k = 0;
        while k < self.queue.len() {
            if self.queue[k].granted.is_closed() {
                // Its owner has ended and its release is on the way: that release takes
                // it out of the queue and wakes whoever it blocked.
                k += 1;
                continue;
            }
            let w = &self.queue[k].scope;
            let touched = w.conflict_with(freed).is_some() || freed.conflict_with(w).is_some();
            if touched && self.blocker(w, k).is_none() {
                if let Some(w) = self.queue.remove(k) {
                    self.grant(w.task, w.scope, w.granted);
                }
                continue;
            }
            k += 1;
        }
    }
}

impl Actor for ScopeTable {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1 << 20);
    }
}

impl Handler<AcquireScope> for ScopeTable {
    type Result = ();

    fn handle(&mut self, m: AcquireScope, _: &mut Self::Context) {
        if self.held.iter().any(|(t, _)| *t == m.task) {
            let _ = m.granted.send(Ok(()));
            return;
        }
        match self.blocker(&m.scope, self.queue.len()) {
            None => self.grant(m.task, m.scope, m.granted),
            Some(refused) if m.fail => {
                let _ = m.granted.send(Err(refused));
            }
            Some(refused) => {
                self.recorder.record(Event::ScopeWaiting {
                    task: m.task,
                    holder: refused.holder,
                    overlap: refused.overlap.to_string(),
                });
                self.queue.push_back(Waiting {
                    task: m.task,
                    scope: m.scope,
                    granted: m.granted,
                });
            }
        }
    }
}

impl Handler<ReleaseScope> for ScopeTable {
    type Result = ();

    fn handle(&mut self, m: ReleaseScope, _: &mut Self::Context) {
        let freed = match self.held.iter().position(|(t, _)| *t == m.task) {
            Some(i) => Some(self.held.swap_remove(i).1),
            None => self
                .queue
                .iter()
                .position(|w| w.task == m.task)
                .and_then(|i| self.queue.remove(i))
                .map(|w| w.scope),
        };
        if let Some(freed) = freed {
            self.recorder.record(Event::ScopeReleased { task: m.task });
            self.wake(&freed);
        }
    }
}

/// The scopes held at the end of a journal (a crash): every `scope_acquired` without a
/// later `scope_released` whose task has not ended, in the order they were granted.
///
/// # Example
/// ```
/// use muster_core::delegation::scope_table::held_at;
/// use muster_core::journal::Record;
/// use muster_core::{Event, Scope};
///
/// let task = uuid::Uuid::now_v7();
/// let scope = Scope::new(["src/**"], Vec::<&str>::new()).unwrap();
/// let records = vec![Record { seq: 1, at_ms: 0, event: Event::ScopeAcquired { task, scope: scope.clone() } }];
/// assert_eq!(held_at(&records), vec![(task, scope)]);
/// ```
pub fn held_at(records: &[Record]) -> Vec<(Uuid, Scope)> {
    let mut held: Vec<(Uuid, Scope)> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    let mut ended = std::collections::HashSet::new();
    for r in records {
        match &r.event {
            Event::ScopeAcquired { task, scope } => {
                index.insert(*task, held.len());
                held.push((*task, scope.clone()));
            }
            Event::ScopeReleased { task } => {
                index.remove(task);
            }
            Event::ResultAccepted { task, .. }
            | Event::TaskEscalated { task, .. }
            | Event::TaskCancelled { task, .. }
            | Event::TaskReused { task, .. } => {
                ended.insert(*task);
            }
            _ => {}
        }
    }
    let live: std::collections::HashSet<usize> = index
        .iter()
        .filter(|(t, _)| !ended.contains(*t))
        .map(|(_, i)| *i)
        .collect();
    held.into_iter()
        .enumerate()
        .filter(|(i, _)| live.contains(i))
        .map(|(_, h)| h)
        .collect()
}

/// Seeds the table with scopes held before a restart ([`held_at`]), so the tasks that held
/// them (resubmitted with the same id) get them back first and no other task takes them
/// in the meantime.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Restore {
    /// The scopes, in the order they were granted.
    pub held: Vec<(Uuid, Scope)>,
}

impl Handler<Restore> for ScopeTable {
    type Result = ();

    fn handle(&mut self, m: Restore, _: &mut Self::Context) {
        for (task, scope) in m.held {
            if !self.held.iter().any(|(t, _)| *t == task) {
                self.held.push((task, Arc::new(scope)));
            }
        }
    }
}
