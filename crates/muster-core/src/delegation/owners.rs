//! [`Owners`], the runtime's handle on its task owners, and the owner supervisor: the
//! root's child under which every task owner lives.
//!
//! Owners are OTP `temporary` children: never restarted (a task is never run twice behind
//! its owner's back). They are started directly by `submit`, in the [`OwnerShard`] of the
//! submitter's [shard](crate::shards), so that starting one costs no hop through this
//! actor and a task stays on its submitter's thread; an
//! owner that goes away before its task ended escalates the task from its `Drop` (nothing
//! is lost silently). What this actor adds is the place in the tree: it is the root's last
//! child, so a shutdown (reverse start order) cancels every live task first, and they end
//! `cancelled` before the agents they ran on stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::dev::SendError;
use actix::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use super::protocol::{Accepted, CancelAll, CancelTask, StartOwner};
use super::scope_table::Restore;
use super::shard::OwnerShard;
use super::shared::Shared;
use super::stats::{Stats, StatsSnapshot};
use crate::agents::AttemptReport;
use crate::discovery::Registry;
use crate::messaging::Scope;
use crate::routing::Router;
use crate::shards::Shards;
use crate::supervision::{ChildLink, Exit, Named, StopActor};

/// The task owners of a runtime: starts each accepted task's owner on its submitter's
/// shard, and reaches a live task's owner (cancel, a result from outside).
pub struct Owners {
    shared: Arc<Shared>,
    shards: Arc<Shards>,
    /// One owner shard per runtime shard, each started on its arbiter with its first task
    /// (`None`: the slot was closed by [`Owners::cancel_all`] before any task needed it).
    owner_shards: Box<[std::sync::OnceLock<Option<Addr<OwnerShard>>>]>,
    /// Set by [`Owners::cancel_all`]: no owner shard is started from then on.
    closed: AtomicBool,
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owners")
            .field("live", &self.shared.table.len())
            .finish()
    }
}

impl Owners {
    /// The owners of a runtime: they route through `router`, wait for agents on
    /// `registry`, let an attempt run `grace` past its deadline and run on `shards`.
    pub(crate) fn new(
        router: Router,
        registry: Named<Registry>,
        grace: Duration,
        shards: Arc<Shards>,
    ) -> Self {
        Owners {
            shared: Arc::new(Shared::new(router, registry, grace)),
            owner_shards: (0..shards.len())
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            shards,
            closed: AtomicBool::new(false),
        }
    }

    /// Gives back the scopes held before a restart (see
    /// [`held_at`](super::scope_table::held_at)) to the tasks that held them, before any
    /// other task can take them. Call it on the runtime's thread before resubmitting.
    pub fn restore_scopes(&self, held: Vec<(Uuid, Scope)>) {
        if !held.is_empty() {
            self.shared.scope_table().do_send(Restore { held });
        }
    }

    /// The router owners deliver through.
    pub fn router(&self) -> &Router {
        &self.shared.router
    }

    /// The task counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The owner shard of runtime shard `i`, started on its arbiter the first time it is
    /// needed; `None` once the owners are closed ([`Owners::cancel_all`]) if it was not
    /// started before.
    fn shard(&self, i: usize) -> Option<&Addr<OwnerShard>> {
        self.owner_shards[i]
            .get_or_init(|| {
                if self.closed.load(Ordering::SeqCst) {
                    return None;
                }
                let shared = self.shared.clone();
                Some(if self.shards.here() == Some(i) {
                    // On its own thread at once: the first owner runs in the order it was
                    // started in, as every later one does.
                    OwnerShard::new(shared).start()
                } else {
                    OwnerShard::start_in_arbiter(self.shards.arbiter(i), move |_| {
                        OwnerShard::new(shared)
                    })
                })
            })
            .as_ref()
    }

    /// The owner shard of a live task.
    fn shard_of(&self, task: Uuid) -> Option<&Addr<OwnerShard>> {
        let i = *self.shared.table.get(&task)?;
        self.owner_shards.get(i)?.get()?.as_ref()
    }

    /// Enters a task being accepted in the table of live tasks, owned on the calling
    /// thread's shard; `None` if a task with this id is live already (a task has one
    /// owner at a time).
    pub(super) fn claim(&self, task: Uuid) -> Option<usize> {
        match self.shared.table.entry(task) {
            dashmap::Entry::Occupied(_) => None,
            dashmap::Entry::Vacant(v) => {
                let shard = self.shards.for_submitter();
                v.insert(shard);
                Some(shard)
            }
        }
    }

    /// Starts an accepted task's owner on the shard claimed for it (from any thread); the
    /// task is in the table of live tasks since its acceptance. False when that shard's
    /// owners have stopped (the runtime is shutting down). Whenever the owner does not
    /// start (refused here, or the message is lost behind a shutdown), the message ends
    /// the task itself as it is dropped ([`StartOwner`]): it leaves the table, is
    /// journaled `task_cancelled` and its handle says `cancelled`, so no accepted task is
    /// left without an end.
    pub(super) fn start(&self, a: Accepted) -> bool {
        let shard = self.shard(a.shard);
        let msg = StartOwner::new(a, self.shared.clone());
        let Some(shard) = shard else {
            return false; // `msg` ends the task as it drops
        };
        match shard.try_send(msg) {
            Ok(()) => true,
            // Senders never wait on a shard's mailbox: past its bound, as `do_send` does
            // (which drops a message to a closed mailbox, and so ends the task).
            Err(SendError::Full(msg)) => {
                shard.do_send(msg);
                true
            }
            Err(SendError::Closed(_)) => false,
        }
    }

    /// Cancels a live task; false if it had already ended (or is unknown).
    pub async fn cancel(&self, task: Uuid, reason: &str) -> bool {
        let Some(shard) = self.shard_of(task).cloned() else {
            return false;
        };
        shard
            .send(CancelTask {
                task,
                reason: reason.into(),
            })
            .await
            .unwrap_or(false)
    }

    /// Cancels every live task (a shutdown) and stops the owner shards; returns when they
    /// have. From then on no task is accepted: a submission racing with it is either
    /// cancelled by it or refused, and ends `cancelled` either way.
    pub async fn cancel_all(&self, reason: &str) {
        self.closed.store(true, Ordering::SeqCst);
        // A shard being started by a submission now is waited for (and then cancelled);
        // a slot never started is closed, so none starts later.
        let sent = self
            .owner_shards
            .iter()
            .filter_map(|s| s.get_or_init(|| None).as_ref())
            .map(|s| {
                s.send(CancelAll {
                    reason: reason.into(),
                })
            });
        futures::future::join_all(sent).await;
    }

    /// Hands a result from outside this runtime's instances to the owner of a live task,
    /// fenced like any other answer (G2). False when no live task has this id.
    pub fn deliver_result(&self, task: Uuid, agent: &str, epoch: u64, output: Value) -> bool {
        match self.shard_of(task) {
            Some(shard) => {
                shard.do_send(AttemptReport::new(
                    task,
                    epoch,
                    Arc::from(agent),
                    Ok(output),
                ));
                true
            }
            None => false,
        }
    }

    /// The task counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Live tasks (owners not yet ended).
    pub fn live(&self) -> usize {
        self.shared.table.len()
    }
}

/// The owner supervisor actor.
pub(crate) struct OwnerSupervisor {
    owners: Arc<Owners>,
    link: Option<ChildLink>,
}

impl OwnerSupervisor {
    /// The supervisor of `owners`, reporting its exit through `link`.
    pub(crate) fn new(owners: Arc<Owners>, link: ChildLink) -> Self {
        OwnerSupervisor {
            owners,
            link: Some(link),
        }
    }
}

impl Actor for OwnerSupervisor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(l) = self.link.take() {
            l.exit(Exit::Shutdown);
        }
    }
}

impl Handler<StopActor> for OwnerSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: StopActor, _: &mut Self::Context) -> Self::Result {
        let owners = self.owners.clone();
        Box::pin(
            async move { owners.cancel_all("the runtime is shutting down").await }
                .into_actor(self)
                .map(|(), _, ctx| ctx.stop()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::delegation::{SubmitError, Task};
    use crate::discovery::CapabilityIndex;
    use crate::ids::IdGen;
    use crate::journal::{Event, Journal, MemoryJournal, Recorder};
    use crate::messaging::{DeadLetters, SchemaStore};

    #[test]
    fn a_task_accepted_after_the_owners_stopped_is_refused_and_journaled_cancelled() {
        actix::System::new().block_on(async {
            let journal = Arc::new(MemoryJournal::default());
            let router = Router::new(
                Arc::new(SchemaStore::new()),
                Arc::new(CapabilityIndex::default()),
                Recorder::new(journal.clone(), Clock::system()),
                Arc::new(IdGen::Random),
                Arc::new(DeadLetters::with_capacity(8)),
            );
            let shards = Arc::new(Shards::start(1).expect("one shard"));
            let owners = Arc::new(Owners::new(
                router,
                Named::new(),
                Duration::from_secs(1),
                shards,
            ));
            let task = || Task::new("nobody", serde_json::json!({}));
            let first = owners.submit(task()).expect("accepted: the owners run");
            owners.cancel_all("a shutdown").await;
            assert_eq!(
                first.outcome().await.status,
                crate::delegation::TaskStatus::Cancelled
            );
            // The shutdown stopped the owner shard: a task accepted now has no owner to go
            // to, and is refused instead of being left live for ever.
            let late = Uuid::from_u128(7);
            let refused = owners.submit(Task {
                id: Some(late),
                ..task()
            });
            assert!(matches!(refused, Err(SubmitError::Stopped(_))), "refused");
            assert_eq!(owners.live(), 0);
            assert_eq!(owners.snapshot().cancelled, 2);
            let ended = journal
                .read_after(0)
                .into_iter()
                .any(|r| matches!(r.event, Event::TaskCancelled { task, .. } if task == late));
            assert!(ended, "its submission has an end in the journal");
        });
    }
}
