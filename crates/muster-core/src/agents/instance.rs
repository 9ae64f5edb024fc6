//! The agent instance actor: runs one instance's tasks and turns every way they can end
//! into a structured report.
//!
//! ```text
//!   Starting ──start ok──▶ Ready ⇄ Busy (all concurrency slots taken)
//!      │                     │
//!      └─start failed──▶ Failed ◀── panic / process exit / kill
//!                            │
//!   shutdown ──────────▶ Stopped
//! ```
//!
//! Work runs as `catch_unwind(timeout_at(deadline + grace, agent.handle(..)))`, so a panic
//! or an overrun is a value, not a dead actor. The attempt is polled once in the actor's
//! handler: if it ends there (an agent that answers without waiting), it is reported at
//! once; otherwise it goes on as a task of its own on the instance's thread, which reports
//! its end through the mailbox. A panic or a process exit fails every task the instance
//! holds at once (their owners reassign them without waiting for a timeout) and reports
//! the exit to the supervisor, which decides on a restart. Must not decide where work goes
//! next: owners do.

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;
use futures::future::LocalBoxFuture;
use serde_json::Value;
use uuid::Uuid;

use super::agent::{Agent, AgentError, AgentFactory, AgentLink, Failure, TaskContext};
use super::effects::Ledger;
use super::handle::{InstanceHandle, Mailbox, MailboxLayer};
use super::presence::{Directory, Presence};
use super::protocol::{AgentState, Assign, AttemptReport, Cancel, Kill, ReplyTo, Shutdown};
use super::workspace::listing;
use crate::messaging::{Envelope, Scope};
use crate::supervision::{ChildLink, Exit};

#[derive(Message)]
#[rtype(result = "()")]
struct AgentExited(Result<(), String>);

/// An attempt's own task finished: its slot and how it ended.
#[derive(Message)]
#[rtype(result = "()")]
struct AttemptDone {
    slot: u64,
    res: WorkResult,
}

/// What running one attempt can end in: output or error, time bound passed, or panic.
type WorkResult = Result<
    Result<Result<Value, AgentError>, tokio::time::error::Elapsed>,
    Box<dyn std::any::Any + Send>,
>;

struct Running {
    task_id: Uuid,
    epoch: u64,
    reply: ReplyTo,
    /// What the attempt spent on models, filled by its agent through its context.
    usage: Arc<parking_lot::Mutex<Option<crate::journal::Usage>>>,
    /// Aborts the attempt's own task when the attempt is dropped (cancelled, failed over,
    /// or the instance stopped); `None` for an attempt that ended on its first poll.
    _work: Option<AbortOnDrop>,
}

/// Aborts a spawned task when dropped (a no-op once the task has finished).
/// A scoped attempt's workspace: the input field naming it, the directory, the scope.
struct Watch {
    field: String,
    dir: Option<PathBuf>,
    scope: Arc<Scope>,
}

/// Runs an attempt; with a workspace to watch, lists it before and after and turns a
/// change outside the write scope into a contract violation.
async fn within_workspace(
    watch: Option<Watch>,
    work: impl std::future::Future<Output = Result<Value, AgentError>>,
) -> Result<Value, AgentError> {
    let Some(w) = watch else {
        return work.await;
    };
    let Some(dir) = w.dir else {
        return Err(AgentError::new(format!(
            "the capability names its workspace in the input field `{}`, which is not a path",
            w.field
        )));
    };
    let before = listing(dir.clone())
        .await
        .map_err(|e| AgentError::new(e.to_string()))?;
    let output = work.await?;
    let after = listing(dir)
        .await
        .map_err(|e| AgentError::new(e.to_string()))?;
    let changed = before.changed(&after);
    if changed.is_empty() {
        return Ok(output);
    }
    match w.scope.check_touched("workspace", &Value::from(changed)) {
        Ok(()) => Ok(output),
        Err(violation) => Err(AgentError::contract(violation)),
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What every instance of one agent type shares: made once per type and held by
/// reference, so that a million replicas do not each carry a copy.
pub(crate) struct TypeConfig {
    pub agent_type: Arc<str>,
    pub capabilities: Vec<Arc<str>>,
    /// Per capability that names one, the input field holding the agent's workspace.
    pub workspaces: Vec<(Arc<str>, String)>,
    pub concurrency: usize,
    pub mailbox: usize,
    /// How long past its deadline a running attempt may go on before it is aborted (a
    /// result in that window reaches the owner and is fenced as stale).
    pub grace: Duration,
    pub liveness: Option<Duration>,
    /// What wraps the instance's mailbox (a simulated network), if anything.
    pub layer: Option<Arc<dyn MailboxLayer>>,
}

/// Settings of one instance: its own id, generation and shard, and its type's shared
/// settings.
pub(crate) struct InstanceConfig {
    pub id: Arc<str>,
    pub generation: u64,
    /// The shard (thread) it runs on.
    pub shard: usize,
    pub of: Arc<TypeConfig>,
}

/// One agent instance.
pub struct AgentInstance {
    cfg: InstanceConfig,
    agent: Box<dyn Agent>,
    handle: Option<Arc<InstanceHandle>>,
    directory: Directory,
    link: Option<ChildLink>,
    running: BTreeMap<u64, Running>,
    queue: VecDeque<Assign>,
    next_slot: u64,
    stopping: bool,
}

impl std::fmt::Debug for AgentInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentInstance")
            .field("id", &self.cfg.id)
            .field("running", &self.running.len())
            .field("queued", &self.queue.len())
            .field("stopping", &self.stopping)
            .finish_non_exhaustive()
    }
}

impl AgentInstance {
    /// Starts an instance on the current arbiter; returns its address (not yet registered:
    /// it reports itself up to its directory once its agent has started).
    pub(crate) fn launch(
        cfg: InstanceConfig,
        agent: Box<dyn Agent>,
        directory: Directory,
        link: ChildLink,
    ) -> Addr<AgentInstance> {
        AgentInstance::create(|ctx| AgentInstance::new(cfg, agent, directory, link, ctx))
    }

    /// As [`AgentInstance::launch`], on another shard's arbiter: the agent is made there by
    /// `factory` (an agent need not be `Send`).
    pub(crate) fn launch_in(
        arbiter: &actix_rt::ArbiterHandle,
        cfg: InstanceConfig,
        factory: Arc<dyn AgentFactory>,
        directory: Directory,
        link: ChildLink,
    ) -> Addr<AgentInstance> {
        AgentInstance::start_in_arbiter(arbiter, move |ctx| {
            let agent = factory.create(&cfg.id);
            AgentInstance::new(cfg, agent, directory, link, ctx)
        })
    }

    fn new(
        cfg: InstanceConfig,
        agent: Box<dyn Agent>,
        directory: Directory,
        link: ChildLink,
        ctx: &mut Context<AgentInstance>,
    ) -> AgentInstance {
        // Cyclic: a layer in front of the mailbox holds the handle weakly, to free the slot
        // of an assignment it never delivers.
        let handle = Arc::new_cyclic(|me| {
            let direct: Box<dyn Mailbox> = Box::new(ctx.address());
            let mailbox = match &cfg.of.layer {
                Some(layer) => layer.wrap(me.clone(), direct),
                None => direct,
            };
            InstanceHandle::new(
                cfg.id.clone(),
                cfg.of.agent_type.clone(),
                cfg.generation,
                cfg.of.capabilities.clone(),
                cfg.of.concurrency,
                cfg.of.concurrency + cfg.of.mailbox,
                mailbox,
            )
            .on_shard(cfg.shard)
        });
        AgentInstance {
            cfg,
            agent,
            handle: Some(handle),
            directory,
            link: Some(link),
            running: BTreeMap::new(),
            queue: VecDeque::new(),
            next_slot: 0,
            stopping: false,
        }
    }

    fn inst(&self) -> &Arc<InstanceHandle> {
        // Set in `launch`, never cleared.
        self.handle
            .as_ref()
            .unwrap_or_else(|| unreachable!("handle set at launch"))
    }

    fn set_state(&self, s: AgentState, reason: Option<String>) {
        if self.inst().state() != s {
            self.inst().set_state(s);
            self.directory.tell(Presence::State {
                id: self.cfg.id.clone(),
                state: s,
                reason,
            });
        }
    }

    /// Ready ⇄ Busy flips with every task at concurrency 1: it is kept on the handle (the
    /// registry lists it, the router reads it) but not published or journaled, which would
    /// put two registry messages and two journal events on the hot path of every task.
    /// Lifecycle changes that matter (started, failed, stopped) are published.
    fn update_busy(&self) {
        match self.inst().state() {
            AgentState::Ready if self.running.len() >= self.cfg.of.concurrency => {
                self.inst().set_state(AgentState::Busy)
            }
            AgentState::Busy if self.running.len() < self.cfg.of.concurrency => {
                self.inst().set_state(AgentState::Ready)
            }
            _ => {}
        }
    }

    /// Starts an attempt. Returns it with its result if it ended on its first poll (the
    /// caller reports it; it never took a slot in `running`).
    fn start_task(
        &mut self,
        mut a: Assign,
        ctx: &mut Context<Self>,
    ) -> Option<(Running, WorkResult)> {
        let slot = self.next_slot;
        self.next_slot += 1;
        let env = a.envelope.clone();
        let task_id = env.task_id.unwrap_or(env.id);
        let epoch = env.epoch;
        let tctx = TaskContext {
            task_id,
            epoch,
            attempt: env.attempt,
            capability: env.topic.clone(),
            agent: self.cfg.id.clone(),
            deadline: a.deadline,
            envelope: env.clone(),
            heartbeat: a.heartbeat.take(),
            usage: Arc::default(),
            effects: a
                .effects
                .take()
                .unwrap_or_else(|| Arc::new(Ledger::detached(task_id))),
        };
        let usage = tctx.usage.clone();
        // The agent owns its input: a copy of the payload the envelope shares.
        let input = Value::clone(&env.payload);
        // Whatever the agent logs carries the task, its epoch and its run.
        let span = tracing::debug_span!(
            "attempt",
            agent = %self.cfg.id,
            task = %task_id,
            epoch,
            correlation = %env.correlation_id,
        );
        // A panic may come from building the future as well as from polling it.
        let hard = a.deadline + self.cfg.of.grace;
        let watch = self.workspace_of(&env);
        let mut work: LocalBoxFuture<'static, WorkResult> =
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.agent.handle(input, tctx))) {
                Ok(fut) => AssertUnwindSafe(tracing::Instrument::instrument(
                    tokio::time::timeout_at(hard, within_workspace(watch, fut)),
                    span,
                ))
                .catch_unwind()
                .boxed_local(),
                Err(p) => FutureExt::boxed_local(futures::future::ready(Err(p))),
            };
        let mut running = Running {
            task_id,
            epoch,
            reply: a.take_reply(),
            usage,
            _work: None,
        };
        // Polled once here: an attempt whose agent answers without waiting (most do: a
        // function, a typed agent, a simulated agent without latency) ends now, with no
        // task of its own and no report through the mailbox. A future that is pending
        // is polled again by its task, with that task's waker: a future wakes only the
        // waker of its latest poll, so the no-op one here is never needed.
        let mut first = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(res) = work.poll_unpin(&mut first) {
            return Some((running, res));
        }
        // The attempt runs as a task of its own on this thread and reports to the actor's
        // mailbox when it ends: actix polls every future spawned on an actor's context
        // each time the actor wakes, so a future per attempt would cost `concurrency`
        // polls per message. A cancelled attempt's task is aborted with its slot; a report
        // for a slot no longer running is ignored.
        let me = ctx.address();
        let work = actix_rt::spawn(async move {
            let res = work.await;
            me.do_send(AttemptDone { slot, res });
        });
        running._work = Some(AbortOnDrop(work.abort_handle()));
        self.running.insert(slot, running);
        self.update_busy();
        None
    }

    /// The workspace to watch for this attempt: the capability names an input field for
    /// it and the task has a scope to hold the changes to.
    fn workspace_of(&self, env: &Envelope) -> Option<Watch> {
        let scope = env.scope.clone()?;
        let field = self
            .cfg
            .of
            .workspaces
            .iter()
            .find(|(cap, _)| *cap == env.topic)
            .map(|(_, f)| f.clone())?;
        let dir = env
            .payload
            .get(&field)
            .and_then(|v| v.as_str())
            .map(PathBuf::from);
        Some(Watch { field, dir, scope })
    }

    /// An attempt of a running slot ended: reports it and starts what is queued.
    fn finish(&mut self, slot: u64, res: WorkResult, ctx: &mut Context<Self>) {
        let Some(r) = self.running.remove(&slot) else {
            return; // cancelled
        };
        if self.report(r, res, ctx) {
            self.pump(ctx);
        }
    }

    /// Reports how attempt `r` ended to its owner and frees its slot; a panic crashes the
    /// instance. Whether the instance goes on (did not crash).
    fn report(&mut self, r: Running, res: WorkResult, ctx: &mut Context<Self>) -> bool {
        let mut crash = None;
        let result = match res {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) if e.exited => Err(Failure::Exited(e.message)),
            Ok(Ok(Err(e))) if e.protocol => Err(Failure::Protocol(e.message)),
            Ok(Ok(Err(AgentError {
                contract: Some(c), ..
            }))) => Err(Failure::ContractViolation(c)),
            Ok(Ok(Err(e))) => Err(Failure::Error(e.message)),
            Ok(Err(_)) => Err(Failure::Timeout),
            Err(p) => {
                let m = panic_message(p.as_ref());
                crash = Some(Exit::Panic(m.clone()));
                Err(Failure::Panic(m))
            }
        };
        self.inst().release();
        let mut report = AttemptReport::new(r.task_id, r.epoch, self.cfg.id.clone(), result);
        report.usage = r.usage.lock().take();
        r.reply.send(report);
        if let Some(exit) = crash {
            self.crash(exit, ctx);
            return false;
        }
        true
    }

    /// Starts queued attempts while slots are free. A loop, not a recursion: attempts that
    /// end on their first poll are reported here, one after another.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.running.len() < self.cfg.of.concurrency && !self.stopping {
            let Some(a) = self.queue.pop_front() else {
                break;
            };
            if let Some((r, res)) = self.start_task(a, ctx)
                && !self.report(r, res, ctx)
            {
                return; // crashed: everything held was failed
            }
        }
        self.update_busy();
        if self.stopping && self.running.is_empty() {
            self.exit(Exit::Shutdown, ctx);
        }
    }

    /// Fails every held task with `why` and reports to their owners at once.
    fn fail_all(&mut self, why: &str) {
        for (_, r) in std::mem::take(&mut self.running) {
            self.agent.cancel(r.task_id, r.epoch);
            if let Some(h) = &self.handle {
                h.release();
            }
            r.reply.send(AttemptReport::gone(
                r.task_id,
                r.epoch,
                self.cfg.id.clone(),
                why.to_string(),
            ));
        }
        for a in self.queue.drain(..) {
            if let Some(h) = &self.handle {
                h.release();
            }
            a.refuse(&self.cfg.id, why.to_string());
        }
    }

    fn crash(&mut self, exit: Exit, ctx: &mut Context<Self>) {
        if matches!(
            self.inst().state(),
            AgentState::Failed | AgentState::Stopped
        ) && self.link.is_none()
        {
            return;
        }
        let why = format!("agent {} crashed: {exit}", self.cfg.id);
        tracing::warn!(agent = %self.cfg.id, %exit, "agent instance crashed");
        self.set_state(AgentState::Failed, Some(exit.to_string()));
        self.fail_all(&why);
        self.exit(exit, ctx);
    }

    fn exit(&mut self, exit: Exit, ctx: &mut Context<Self>) {
        let Some(link) = self.link.take() else {
            return; // already exiting
        };
        let stop = self.agent.stop();
        if exit == Exit::Shutdown {
            self.set_state(AgentState::Stopped, None);
            self.directory.tell(Presence::Down {
                id: self.cfg.id.clone(),
                generation: self.cfg.generation,
                reason: "shut down".into(),
            });
        }
        // An instance is down once its agent has released what it holds (its process):
        // the supervisor hears of the exit after that, and kills past the child's
        // shutdown time if the agent takes longer. Nothing else is handled meanwhile.
        ctx.wait(stop.into_actor(self).map(move |(), _, ctx| {
            link.exit(exit);
            ctx.stop();
        }));
    }
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

impl Actor for AgentInstance {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1 << 20);
        let me = ctx.address();
        let directory = self.directory.clone();
        let id = self.cfg.id.clone();
        let link = AgentLink {
            on_exit: Arc::new(move |r| me.do_send(AgentExited(r))),
            on_alive: Arc::new(move || directory.tell(Presence::Alive(id.clone()))),
        };
        let start = std::panic::catch_unwind(AssertUnwindSafe(|| self.agent.start(link)));
        let start = match start {
            Ok(f) => AssertUnwindSafe(f).catch_unwind().boxed_local(),
            Err(p) => FutureExt::boxed_local(futures::future::ready(Err(p))),
        };
        ctx.wait(start.into_actor(self).map(|res, act, ctx| match res {
            Ok(Ok(())) => {
                act.directory.tell(Presence::Up {
                    handle: act.inst().clone(),
                    liveness: act.cfg.of.liveness,
                });
                act.pump(ctx);
            }
            Ok(Err(e)) => act.crash(Exit::Error(format!("start failed: {e}")), ctx),
            Err(p) => act.crash(
                Exit::Panic(format!("start panicked: {}", panic_message(p.as_ref()))),
                ctx,
            ),
        }));
    }
}

impl Drop for AgentInstance {
    fn drop(&mut self) {
        // If the actor went away without reporting (a bug, or an unwinding panic in our
        // own code), owners still hear of it and the supervisor still sees an exit.
        for (_, r) in std::mem::take(&mut self.running) {
            r.reply.send(AttemptReport::gone(
                r.task_id,
                r.epoch,
                self.cfg.id.clone(),
                format!("agent {} stopped", self.cfg.id),
            ));
        }
        for a in self.queue.drain(..) {
            a.refuse(&self.cfg.id, format!("agent {} stopped", self.cfg.id));
        }
    }
}

impl Handler<Assign> for AgentInstance {
    type Result = ();

    fn handle(&mut self, a: Assign, ctx: &mut Self::Context) {
        let state = self.inst().state();
        if self.stopping || matches!(state, AgentState::Failed | AgentState::Stopped) {
            self.inst().release();
            a.refuse(&self.cfg.id, format!("agent {} is {state}", self.cfg.id));
            return;
        }
        if self.running.len() < self.cfg.of.concurrency && state != AgentState::Starting {
            if let Some((r, res)) = self.start_task(a, ctx)
                && self.report(r, res, ctx)
            {
                self.pump(ctx);
            }
        } else {
            self.queue.push_back(a);
        }
    }
}

impl Handler<Cancel> for AgentInstance {
    type Result = ();

    fn handle(&mut self, c: Cancel, ctx: &mut Self::Context) {
        let slot = self
            .running
            .iter()
            .find(|(_, r)| r.task_id == c.task_id && r.epoch == c.epoch)
            .map(|(s, _)| *s);
        if let Some(slot) = slot {
            if let Some(r) = self.running.remove(&slot) {
                self.agent.cancel(r.task_id, r.epoch);
                self.inst().release();
                r.reply.send(AttemptReport::new(
                    r.task_id,
                    r.epoch,
                    self.cfg.id.clone(),
                    Err(Failure::Cancelled),
                ));
            }
        } else if let Some(pos) = self
            .queue
            .iter()
            .position(|a| a.envelope.task_id == Some(c.task_id) && a.envelope.epoch == c.epoch)
            && let Some(mut a) = self.queue.remove(pos)
        {
            self.inst().release();
            a.take_reply().send(AttemptReport::new(
                c.task_id,
                c.epoch,
                self.cfg.id.clone(),
                Err(Failure::Cancelled),
            ));
        }
        self.pump(ctx);
    }
}

impl Handler<Kill> for AgentInstance {
    type Result = ();

    fn handle(&mut self, k: Kill, ctx: &mut Self::Context) {
        self.crash(Exit::Killed(k.0), ctx);
    }
}

impl Handler<Shutdown> for AgentInstance {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.stopping = true;
        self.fail_all_queued();
        self.pump(ctx);
    }
}

impl AgentInstance {
    fn fail_all_queued(&mut self) {
        for a in self.queue.drain(..) {
            if let Some(h) = &self.handle {
                h.release();
            }
            a.refuse(
                &self.cfg.id,
                format!("agent {} is shutting down", self.cfg.id),
            );
        }
    }
}

impl Handler<AttemptDone> for AgentInstance {
    type Result = ();

    fn handle(&mut self, m: AttemptDone, ctx: &mut Self::Context) {
        self.finish(m.slot, m.res, ctx);
    }
}

impl Handler<AgentExited> for AgentInstance {
    type Result = ();

    fn handle(&mut self, m: AgentExited, ctx: &mut Self::Context) {
        match m.0 {
            Ok(()) if self.stopping => self.exit(Exit::Shutdown, ctx),
            Ok(()) => {
                self.set_state(AgentState::Stopped, Some("agent exited".into()));
                self.fail_all(&format!("agent {} exited", self.cfg.id));
                self.exit(Exit::Normal, ctx)
            }
            Err(e) => self.crash(Exit::Error(e), ctx),
        }
    }
}

impl Mailbox for Addr<AgentInstance> {
    fn assign(&self, a: Assign) {
        self.do_send(a)
    }

    fn cancel(&self, c: Cancel) {
        self.do_send(c)
    }

    fn kill(&self, k: Kill) {
        self.do_send(k)
    }

    fn connected(&self) -> bool {
        Addr::connected(self)
    }
}
