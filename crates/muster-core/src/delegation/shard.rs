//! The owner shard: one actor on the runtime's thread that drives the owner of every live
//! task started there.
//!
//! Owns the map of live owners, their [`Timers`] (one runtime timer armed, for the
//! earliest), and the routing of what reaches an owner: attempt reports, heartbeats,
//! cancellations, the end of identical work, and the end of waits it spawned. A task's
//! owner is a [`TaskOwner`] state machine here, not an actor of its own: starting one
//! costs a map entry. It must not decide anything about a task itself: every decision is
//! the owner's (see [`owner`](super::owner)).
//!
//! An owner leaves the map when its task ended and every lease it granted has answered
//! (or its lingering ran out). A report for a task no longer in the map is an answer to
//! an ended task: journaled `result_stale` (G2). If the shard stops with owners whose task
//! has not ended, each escalates its task as it is dropped (G1: nothing is lost silently).

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::owner::{Cx, TaskOwner, Unavailable};
use super::protocol::{
    AcquireScope, CancelAll, CancelTask, LeaseHeartbeat, StartOwner, Wake, Woken,
};
use super::reuse::{Found, ReuseKey, Reused};
use super::shared::Shared;
use super::timers::{Due, TimerKey, Timers};
use super::written::{Acknowledgements, Pending};
use crate::agents::{AttemptReport, InstanceHandle, Ledger, ReplyTo};
use crate::discovery::{LinePlace, PickError, WaitFor};
use crate::journal::Watermark;
use crate::messaging::{Capability, Envelope, Scope};

/// The actor driving the owners of the tasks started on its thread.
pub(super) struct OwnerShard {
    owners: Arc<Shared>,
    /// Boxed: the map moves pointers, not owners, when it grows.
    live: HashMap<Uuid, Box<TaskOwner>, foldhash::fast::RandomState>,
    timers: Timers,
    /// The runtime timer armed for the earliest of `timers`, and when it fires.
    armed: Option<(tokio::time::Instant, SpawnHandle)>,
    /// Where answers to its owners go: this actor (set when it starts).
    me: Option<Me>,
    /// Set by [`CancelAll`]: the shard is stopping, and starts no owner any more.
    closing: bool,
    /// Outcomes waiting for their records to be written.
    written: Acknowledgements,
}

/// This shard as each kind of answer's recipient.
#[derive(Clone)]
struct Me {
    reply: Arc<Recipient<AttemptReport>>,
    woken: Recipient<Woken>,
    beat: Arc<Recipient<LeaseHeartbeat>>,
    reused: Recipient<Reused>,
}

impl std::fmt::Debug for OwnerShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerShard")
            .field("live", &self.live.len())
            .finish()
    }
}

impl OwnerShard {
    /// The shard of `owners` (start it on the thread whose tasks it drives).
    pub(super) fn new(owners: Arc<Shared>) -> Self {
        OwnerShard {
            owners,
            live: HashMap::default(),
            timers: Timers::default(),
            armed: None,
            me: None,
            closing: false,
            written: Acknowledgements::default(),
        }
    }

    /// Runs `f` on the owner of `task` (if it is live), then drops the owner if it is done.
    fn drive<R>(
        &mut self,
        task: Uuid,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut TaskOwner, &mut dyn Cx) -> R,
    ) -> Option<R> {
        let me = self.me.as_ref()?;
        let owner = self.live.get_mut(&task)?;
        let mut cx = ShardCx {
            timers: &mut self.timers,
            me,
            shared: &self.owners,
            written: &self.written,
        };
        let r = f(owner, &mut cx);
        if owner.stopped() {
            if let Some(mut o) = self.live.remove(&task) {
                o.cancel_timers(&mut self.timers);
            }
            // Memory follows the live set down after a burst.
            if self.live.capacity() > 4096 && self.live.len() < self.live.capacity() / 8 {
                self.live.shrink_to(self.live.len() * 2);
            }
        }
        self.arm(ctx);
        Some(r)
    }

    /// Arms the runtime timer for the earliest owner timer, unless it is armed for that
    /// or earlier already.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(next) = self.timers.earliest() else {
            return;
        };
        if let Some((at, handle)) = self.armed {
            if at <= next {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = next.saturating_duration_since(tokio::time::Instant::now());
        let handle = ctx.run_later(wait, |act, ctx| {
            act.armed = None;
            act.fire(ctx);
        });
        self.armed = Some((next, handle));
    }

    /// Hands every due timer to its owner, earliest first, then arms for the next.
    fn fire(&mut self, ctx: &mut Context<Self>) {
        let now = tokio::time::Instant::now();
        while let Some((task, due)) = self.timers.pop_due(now) {
            self.drive(task, ctx, |o, cx| o.on_timer(due, cx));
        }
        self.arm(ctx);
    }
}

/// The shard as an owner's surroundings while the owner handles one message: its timer
/// queue, the runtime's clock, the router, and futures spawned on its arbiter whose end
/// comes back as a [`Woken`].
struct ShardCx<'a> {
    timers: &'a mut Timers,
    me: &'a Me,
    shared: &'a Shared,
    written: &'a Acknowledgements,
}

impl Cx for ShardCx<'_> {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn arm(&mut self, at: Instant, task: Uuid, due: Due) -> TimerKey {
        self.timers.at(at, task, due)
    }

    fn disarm(&mut self, key: TimerKey) {
        self.timers.cancel(key);
    }

    fn find_agent(
        &mut self,
        capability: &Arc<str>,
        exclude: &[Arc<str>],
        shard: usize,
        woken: Option<u32>,
    ) -> Result<(Arc<Capability>, Arc<InstanceHandle>), Unavailable> {
        let index = self.shared.router.index();
        let picked = match index.pick(capability, exclude, shard) {
            Err(PickError::AllFull) => {
                // Look again with a place in line, atomically: a slot freed since the
                // first look is taken now, and one freed later wakes this owner.
                let Some((tx, line)) = index.join_line(capability) else {
                    return Err(Unavailable::Nobody);
                };
                match index.pick_or_wait(capability, exclude, shard, tx, woken) {
                    Err(PickError::AllFull) => return Err(Unavailable::Full(line)),
                    other => other,
                }
            }
            other => other,
        };
        // Nobody serves it (a full capability waits in line above); nobody will, if every
        // type serving it dropped out.
        picked.map_err(|_| match index.abandoned(capability) {
            Some(gone) => Unavailable::Abandoned(gone),
            None => Unavailable::Nobody,
        })
    }

    fn assign(
        &mut self,
        agent: &Arc<InstanceHandle>,
        envelope: Arc<Envelope>,
        deadline: Instant,
        heartbeat: bool,
        effects: Arc<Ledger>,
    ) {
        let beat = match (heartbeat, envelope.task_id) {
            (true, Some(task)) => {
                let (to, epoch) = (self.me.beat.clone(), envelope.epoch);
                let beat: Arc<dyn Fn() + Send + Sync> =
                    Arc::new(move || to.do_send(LeaseHeartbeat { task, epoch }));
                Some(beat)
            }
            _ => None,
        };
        // Journaled by the owner, whole, in `lease_granted`.
        self.shared.router.hand_over(
            agent,
            envelope,
            deadline,
            ReplyTo::Owner(self.me.reply.clone()),
            beat,
            Some(effects),
        );
    }

    fn cancel_attempt(&mut self, agent: &InstanceHandle, task: Uuid, epoch: u64) {
        agent.cancel(task, epoch);
    }

    fn find_or_run(&mut self, key: &ReuseKey, input: &Arc<Value>, task: Uuid) -> Found {
        self.shared
            .reuse
            .find_or_run(key, input, task, self.me.reused.clone())
    }

    fn ask_scope(&mut self, task: Uuid, scope: Arc<Scope>, fail: bool, deadline: Instant) {
        let (tx, rx) = oneshot::channel();
        self.shared.scope_table().do_send(AcquireScope {
            task,
            scope,
            fail,
            granted: tx,
        });
        let shard = self.me.woken.clone();
        actix::spawn(async move {
            let answer = match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(refused))) => Err(refused.to_string()),
                Ok(Err(_)) => Err("the scope table stopped".into()),
                Err(_) => Err("its scope stayed held by another task until the deadline".into()),
            };
            shard.do_send(Woken {
                task,
                wake: Wake::Scope(answer),
            });
        });
    }

    fn wait_in_line(
        &mut self,
        task: Uuid,
        generation: u32,
        mut line: LinePlace,
        backstop: std::time::Duration,
    ) {
        let shard = self.me.woken.clone();
        actix::spawn(async move {
            line.woken(backstop).await;
            shard.do_send(Woken {
                task,
                wake: Wake::Line {
                    generation,
                    slot: line,
                },
            });
        });
    }

    fn when_written(&mut self, outcome: Pending, watermark: &watch::Receiver<Watermark>) {
        self.written.push(outcome, watermark);
    }

    fn wait_for_agent(&mut self, task: Uuid, capability: Arc<str>, deadline: Instant) {
        let (tx, rx) = oneshot::channel();
        self.shared
            .registry
            .get()
            .do_send(WaitFor { capability, tx });
        let shard = self.me.woken.clone();
        actix::spawn(async move {
            tokio::select! {
                _ = rx => {},
                _ = tokio::time::sleep_until(deadline) => {},
            }
            shard.do_send(Woken {
                task,
                wake: Wake::Agent,
            });
        });
    }
}

impl Actor for OwnerShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Senders never wait on a shard's mailbox (`do_send` ignores the bound); `send`
        // (cancellations) does, so it is large.
        ctx.set_mailbox_capacity(1 << 20);
        let addr = ctx.address();
        self.me = Some(Me {
            reply: Arc::new(addr.clone().recipient()),
            woken: addr.clone().recipient(),
            beat: Arc::new(addr.clone().recipient()),
            reused: addr.recipient(),
        });
    }
}

impl Handler<StartOwner> for OwnerShard {
    type Result = ();

    fn handle(&mut self, mut start: StartOwner, ctx: &mut Self::Context) {
        // A start behind a `CancelAll` (handled in the same turn of the mailbox, before the
        // shard stops): the message ends its task `cancelled` as it drops.
        if self.closing {
            return;
        }
        let Some(a) = start.take() else {
            return;
        };
        let owner = TaskOwner::new(self.owners.clone(), a, Instant::now());
        let id = owner.id();
        // Acceptance claims the id atomically, so no second owner of a live task arrives.
        debug_assert!(!self.live.contains_key(&id), "two owners of task {id}");
        self.live.insert(id, Box::new(owner));
        self.drive(id, ctx, |o, cx| o.begin(cx));
    }
}

impl Handler<AttemptReport> for OwnerShard {
    type Result = ();

    fn handle(&mut self, r: AttemptReport, ctx: &mut Self::Context) {
        let task = r.task_id;
        let mut r = Some(r);
        self.drive(task, ctx, |o, cx| {
            if let Some(r) = r.take() {
                o.on_report(r, cx)
            }
        });
        if let Some(r) = r {
            // No owner holds the task any more.
            self.owners.stale_after_end(&r);
        }
    }
}

impl Handler<LeaseHeartbeat> for OwnerShard {
    type Result = ();

    fn handle(&mut self, h: LeaseHeartbeat, _: &mut Self::Context) {
        if let Some(o) = self.live.get_mut(&h.task) {
            o.on_heartbeat(h.epoch, Instant::now());
        }
    }
}

impl Handler<CancelTask> for OwnerShard {
    type Result = bool;

    fn handle(&mut self, c: CancelTask, ctx: &mut Self::Context) -> bool {
        self.drive(c.task, ctx, |o, cx| o.cancel(c.reason, cx))
            .unwrap_or(false)
    }
}

impl Handler<CancelAll> for OwnerShard {
    type Result = ();

    fn handle(&mut self, c: CancelAll, ctx: &mut Self::Context) {
        self.closing = true;
        // In the order they were started would need a second index; sorted ids keep the
        // journal the same for the same live set (G6).
        let mut ids: Vec<Uuid> = self.live.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let reason = c.reason.clone();
            self.drive(id, ctx, |o, cx| o.cancel(reason, cx));
        }
        ctx.stop();
    }
}

impl Handler<Reused> for OwnerShard {
    type Result = ();

    fn handle(&mut self, r: Reused, ctx: &mut Self::Context) {
        self.drive(r.follower, ctx, |o, cx| o.on_reused(r, cx));
    }
}

impl Handler<Woken> for OwnerShard {
    type Result = ();

    fn handle(&mut self, w: Woken, ctx: &mut Self::Context) {
        self.drive(w.task, ctx, |o, cx| o.on_woken(w.wake, cx));
    }
}
