//! The supervisor actor.
//!
//! ```text
//!  child exits ─▶ restart type says restart? ─no─▶ removed (temporary) / left down
//!                        │yes
//!                        ▼
//!      restarts in the last `period` > intensity? ─yes─▶ stop all children (reverse
//!                        │no                            order), escalate to the parent
//!                        ▼
//!      strategy: one_for_one   → restart it
//!                one_for_all   → stop the others (reverse order), restart all in order
//!                rest_for_one  → stop the later ones (reverse order), restart it and them
//!                (after `backoff`, during which the supervisor keeps answering)
//! ```
//!
//! Children are stopped one at a time: the next is asked to stop only once the previous one
//! is down or was killed after its shutdown time, so a child never outlives one started
//! before it (OTP). A child that is down for good (not restarted, terminated, or stopped
//! by a shutdown or an escalation) is told so through [`ChildHandle::removed`].

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::prelude::*;
use futures::future::LocalBoxFuture;

use super::child::{ChildHandle, ChildLink, ChildSpec, ExitSignal};
use super::protocol::{
    ChildExited, ChildInfo, ShutdownSupervisor, StartChild, TerminateChild, WhichChildren,
};
use super::restart::{Exit, Restart, Strategy, Supervision};
use crate::journal::{Event, Recorder};

struct Child {
    spec: ChildSpec,
    generation: u64,
    running: Option<(Box<dyn ChildHandle>, Arc<ExitSignal>)>,
    /// The handle of the generation that exited, kept until its successor starts (or it is
    /// removed), so that what it held can be released if no successor comes.
    down: Option<Box<dyn ChildHandle>>,
    /// Why the current generation's start failed: its link reported `killed` when `start`
    /// dropped it, and this is the real reason.
    start_error: Option<String>,
}

impl Child {
    fn new(spec: ChildSpec) -> Self {
        Child {
            spec,
            generation: 0,
            running: None,
            down: None,
            start_error: None,
        }
    }
}

/// A running child being stopped.
struct Stopping {
    id: Arc<str>,
    handle: Box<dyn ChildHandle>,
    signal: Arc<ExitSignal>,
    limit: Duration,
}

impl Stopping {
    /// Asks the child to stop and waits for its exit, at most its shutdown time; then kills
    /// it. Returns its handle.
    async fn stop(mut self) -> (Arc<str>, Box<dyn ChildHandle>) {
        self.handle.shutdown();
        let signal = self.signal;
        let wait = async {
            while !signal.done.load(Ordering::Acquire) {
                signal.notify.notified().await;
            }
        };
        if tokio::time::timeout(self.limit, wait).await.is_err() {
            self.handle.kill("did not stop within its shutdown time");
        }
        (self.id, self.handle)
    }
}

/// Stopped children's handles, in the order they were stopped.
type Stopped = Vec<(Arc<str>, Box<dyn ChildHandle>)>;

/// A supervisor: starts children in order, restarts them by its strategy, escalates past its
/// intensity, stops them in reverse order.
pub struct Supervisor {
    id: Arc<str>,
    settings: Supervision,
    children: Vec<Child>,
    restarts: VecDeque<tokio::time::Instant>,
    parent: Option<ChildLink>,
    on_escalate: Option<Box<dyn FnOnce(String)>>,
    recorder: Option<Recorder>,
    terminating: bool,
    /// Its own address as its children's links hold it: one for all of them (each actix
    /// address is an allocation of its own), held weakly here so that the supervisor's
    /// own reference never keeps its mailbox open.
    me: Weak<Recipient<ChildExited>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let children: Vec<&str> = self.children.iter().map(|c| &*c.spec.id).collect();
        f.debug_struct("Supervisor")
            .field("id", &self.id)
            .field("strategy", &self.settings.strategy)
            .field("children", &children)
            .field("recent_restarts", &self.restarts.len())
            .field("terminating", &self.terminating)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor with no children yet. `parent` is its own link when it is supervised;
    /// without one it is a root. `on_escalate`, if set, is called with the report when it
    /// gives up (before its parent, if any, is told).
    pub fn new(id: impl Into<Arc<str>>, settings: Supervision) -> Self {
        Supervisor {
            id: id.into(),
            settings,
            children: Vec::new(),
            restarts: VecDeque::new(),
            parent: None,
            on_escalate: None,
            recorder: None,
            terminating: false,
            me: Weak::new(),
        }
    }

    /// Reports to a parent supervisor through `link`.
    pub fn with_parent(mut self, link: ChildLink) -> Self {
        self.parent = Some(link);
        self
    }

    /// Called when it gives up (past its intensity), with the report, after its children
    /// are stopped and before its parent (if any) is told: a root's way to report, and
    /// any supervisor's way to tell whoever watches it that its children are gone for
    /// good (OTP: only a supervisor that gave up means that; a restart is still coming
    /// otherwise).
    ///
    /// # Example
    /// ```
    /// use muster_core::supervision::{Supervision, Supervisor};
    ///
    /// let sup = Supervisor::new("workers", Supervision::default())
    ///     .on_escalate(|report| eprintln!("workers gave up: {report}"));
    /// # drop(sup);
    /// ```
    pub fn on_escalate(mut self, f: impl FnOnce(String) + 'static) -> Self {
        self.on_escalate = Some(Box::new(f));
        self
    }

    /// Journals restarts and escalations.
    pub fn with_recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Adds a child to start when the supervisor starts (in order).
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(Child::new(spec));
        self
    }

    /// Makes room for `n` more children, so that adding a known number of them (an agent
    /// type's replicas) allocates once, with no slack.
    pub(crate) fn reserve_children(&mut self, n: usize) {
        self.children.reserve_exact(n);
    }

    fn journal(&self, e: Event) {
        if let Some(r) = &self.recorder {
            r.record(e);
        }
    }

    /// Starts child `i` with a fresh generation. A start that fails is an abnormal exit.
    fn start_child(&mut self, i: usize, ctx: &mut Context<Self>) {
        let me = self.me.upgrade().unwrap_or_else(|| {
            let me = Arc::new(ctx.address().recipient());
            self.me = Arc::downgrade(&me);
            me
        });
        let c = &mut self.children[i];
        c.generation += 1;
        // The new generation replaces whatever the previous one held.
        c.down = None;
        c.start_error = None;
        let signal = Arc::new(ExitSignal::default());
        let link = ChildLink::new(me, c.spec.id.clone(), c.generation, signal.clone());
        match c.spec.start(link) {
            Ok(h) => c.running = Some((h, signal)),
            Err(e) => {
                // A start that fails is an abnormal exit of this generation. The link was
                // usually dropped inside `start` and has already reported `killed` (that
                // report is handled first): record the real reason for it to use.
                let reason = format!("start failed: {e}");
                c.start_error = Some(reason.clone());
                let reported = signal.done.load(Ordering::Acquire);
                c.running = Some((Box::new(Failed), signal));
                if !reported {
                    ctx.address().do_send(ChildExited {
                        id: c.spec.id.clone(),
                        generation: c.generation,
                        exit: Exit::Error(reason),
                    });
                }
            }
        }
    }

    /// Stops the given children one at a time, in the order given: each is asked to stop
    /// and given its shutdown time, then killed, before the next is asked (OTP). Resolves to
    /// their handles.
    fn terminate(&mut self, order: Vec<usize>) -> LocalBoxFuture<'static, Stopped> {
        let steps: Vec<Stopping> = order
            .into_iter()
            .filter_map(|i| {
                let c = &mut self.children[i];
                c.running.take().map(|(handle, signal)| Stopping {
                    id: c.spec.id.clone(),
                    handle,
                    signal,
                    limit: c.spec.shutdown,
                })
            })
            .collect();
        Box::pin(async move {
            let mut stopped = Vec::with_capacity(steps.len());
            for step in steps {
                stopped.push(step.stop().await);
            }
            stopped
        })
    }

    /// Every child is down for good (shutdown, escalation): release what each held.
    fn release_all(&mut self, stopped: Stopped, reason: &str) {
        for (_, mut h) in stopped {
            h.removed(reason);
        }
        for c in &mut self.children {
            if let Some(mut h) = c.down.take() {
                h.removed(reason);
            }
        }
    }

    fn escalate(&mut self, reason: String, ctx: &mut Context<Self>) {
        tracing::error!(supervisor = %self.id, %reason, "supervisor escalates");
        self.journal(Event::SupervisorEscalated {
            supervisor: self.id.clone(),
            reason: reason.clone(),
        });
        self.terminating = true;
        let order: Vec<usize> = (0..self.children.len()).rev().collect();
        let fut = self.terminate(order);
        ctx.wait(fut.into_actor(self).map(move |stopped, act, ctx| {
            act.release_all(stopped, &format!("its supervisor escalated: {reason}"));
            // Told before the parent hears of it: whoever watches this supervisor (an
            // agent type's registry entry) learns it gave up, with the report.
            if let Some(f) = act.on_escalate.take() {
                f(reason.clone());
            }
            if let Some(link) = act.parent.take() {
                link.exit(Exit::Error(reason));
            }
            ctx.stop();
        }));
    }

    fn restart_set(&mut self, i: usize, exit: &Exit, ctx: &mut Context<Self>) {
        let n = self.children.len();
        let (stop, restart): (Vec<usize>, Vec<usize>) = match self.settings.strategy {
            Strategy::OneForOne => (vec![], vec![i]),
            Strategy::OneForAll => ((0..n).rev().filter(|&j| j != i).collect(), (0..n).collect()),
            Strategy::RestForOne => ((i + 1..n).rev().collect(), (i..n).collect()),
        };
        // By id: the children may change during the backoff.
        let restart: Vec<Arc<str>> = restart
            .into_iter()
            .map(|j| self.children[j].spec.id.clone())
            .collect();
        let backoff = self.settings.backoff;
        let failed = self.children[i].spec.id.clone();
        let exit = exit.to_string();
        // Stopping the others blocks the mailbox (as OTP's supervisor is busy while it
        // terminates children); the backoff does not.
        let fut = self.terminate(stop);
        ctx.wait(fut.into_actor(self).map(move |stopped, act, ctx| {
            // Temporary children stopped by a group restart are not restarted (OTP).
            let mut dropped = Vec::new();
            for (id, mut h) in stopped {
                if act.restart_type(&id) == Some(Restart::Temporary) {
                    h.removed(&format!("stopped as {failed} failed, and temporary"));
                    dropped.push(id);
                }
            }
            act.children.retain(|c| !dropped.contains(&c.spec.id));
            if backoff.is_zero() {
                act.restart_ids(&restart, &failed, &exit, ctx);
            } else {
                ctx.run_later(backoff, move |act, ctx| {
                    act.restart_ids(&restart, &failed, &exit, ctx);
                });
            }
        }));
    }

    fn restart_type(&self, id: &str) -> Option<Restart> {
        self.children
            .iter()
            .find(|c| c.spec.id.as_ref() == id)
            .map(|c| c.spec.restart)
    }

    /// Starts, in the order given, those of `ids` that are still children and not running
    /// (one may have been terminated, or restarted by a later failure, meanwhile).
    fn restart_ids(
        &mut self,
        ids: &[Arc<str>],
        failed: &Arc<str>,
        exit: &str,
        ctx: &mut Context<Self>,
    ) {
        if self.terminating {
            return;
        }
        for id in ids {
            let Some(j) = self.children.iter().position(|c| &c.spec.id == id) else {
                continue;
            };
            if self.children[j].running.is_some() {
                continue;
            }
            let why = if id == failed {
                exit.to_string()
            } else {
                format!("restarted with {failed}")
            };
            self.journal(Event::ChildRestarted {
                supervisor: self.id.clone(),
                child: id.clone(),
                exit: why,
            });
            self.start_child(j, ctx);
        }
    }
}

struct Failed;

impl ChildHandle for Failed {
    fn shutdown(&mut self) {}
    fn kill(&mut self, _: &str) {}
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1 << 20);
        for i in 0..self.children.len() {
            self.start_child(i, ctx);
        }
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, m: ChildExited, ctx: &mut Self::Context) {
        if self.terminating {
            return;
        }
        let Some(i) = self
            .children
            .iter()
            .position(|c| c.spec.id == m.id && c.generation == m.generation && c.running.is_some())
        else {
            return; // an exit we caused, or of an earlier generation
        };
        let mut m = m;
        if let Some(e) = self.children[i].start_error.take() {
            m.exit = Exit::Error(e);
        }
        let restart = match self.children[i].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => m.exit.is_abnormal(),
            Restart::Temporary => false,
        };
        tracing::info!(supervisor = %self.id, child = %m.id, exit = %m.exit, restart, "child exited");
        if let Some((mut h, _)) = self.children[i].running.take() {
            if restart {
                self.children[i].down = Some(h);
            } else {
                h.removed(&m.exit.to_string());
            }
        }
        if !restart {
            if self.children[i].spec.restart == Restart::Temporary {
                self.children.remove(i);
            }
            return;
        }
        let now = tokio::time::Instant::now();
        self.restarts.push_back(now);
        while let Some(t) = self.restarts.front() {
            if now.saturating_duration_since(*t) > self.settings.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() as u32 > self.settings.intensity {
            let reason = format!(
                "{} restarts within {:?} (intensity {}); last: child {} exited with {}",
                self.restarts.len(),
                self.settings.period,
                self.settings.intensity,
                m.id,
                m.exit
            );
            self.escalate(reason, ctx);
            return;
        }
        self.restart_set(i, &m.exit, ctx);
    }
}

impl Handler<StartChild> for Supervisor {
    type Result = Result<(), String>;

    fn handle(&mut self, m: StartChild, ctx: &mut Self::Context) -> Self::Result {
        if self.terminating {
            return Err(format!("supervisor {} is shutting down", self.id));
        }
        if self.children.iter().any(|c| c.spec.id == m.0.id) {
            return Err(format!("a child called `{}` already exists", m.0.id));
        }
        self.children.push(Child::new(m.0));
        let i = self.children.len() - 1;
        self.start_child(i, ctx);
        Ok(())
    }
}

impl Handler<TerminateChild> for Supervisor {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, m: TerminateChild, _: &mut Self::Context) -> Self::Result {
        let Some(i) = self.children.iter().position(|c| c.spec.id == m.0) else {
            return Box::pin(actix::fut::ready(false));
        };
        // Removed at once, so that no restart started meanwhile can bring it back.
        let mut c = self.children.remove(i);
        let step = c.running.take().map(|(handle, signal)| Stopping {
            id: c.spec.id.clone(),
            handle,
            signal,
            limit: c.spec.shutdown,
        });
        let down = c.down.take();
        Box::pin(
            async move {
                let reason = "terminated by its supervisor";
                if let Some(step) = step {
                    let (_, mut h) = step.stop().await;
                    h.removed(reason);
                }
                if let Some(mut h) = down {
                    h.removed(reason);
                }
                true
            }
            .into_actor(self),
        )
    }
}

impl Handler<WhichChildren> for Supervisor {
    type Result = MessageResult<WhichChildren>;

    fn handle(&mut self, _: WhichChildren, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.children
                .iter()
                .map(|c| ChildInfo {
                    id: c.spec.id.to_string(),
                    generation: c.generation,
                    running: c.running.is_some(),
                    restart: c.spec.restart,
                })
                .collect(),
        )
    }
}

impl Handler<ShutdownSupervisor> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: ShutdownSupervisor, _: &mut Self::Context) -> Self::Result {
        if self.terminating {
            // Already stopping its children (a second request, e.g. a parent's kill after
            // its shutdown time): that shutdown goes on, and reports when done. Stopping now
            // would leave the children it has not reached running, unsupervised.
            return Box::pin(actix::fut::ready(()));
        }
        self.terminating = true;
        let order: Vec<usize> = (0..self.children.len()).rev().collect();
        let fut = self.terminate(order);
        Box::pin(fut.into_actor(self).map(|stopped, act, ctx| {
            act.release_all(stopped, "its supervisor shut down");
            if let Some(link) = act.parent.take() {
                link.exit(Exit::Shutdown);
            }
            ctx.stop();
        }))
    }
}

/// A supervisor as a child of another supervisor.
pub struct SupervisorHandle(pub Addr<Supervisor>);

impl std::fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorHandle").finish_non_exhaustive()
    }
}

impl ChildHandle for SupervisorHandle {
    fn shutdown(&mut self) {
        self.0.do_send(ShutdownSupervisor);
    }

    fn kill(&mut self, _reason: &str) {
        // It is already stopping its children, each within its own shutdown time, and
        // reports when done; a second request does not cut that short.
        self.0.do_send(ShutdownSupervisor);
    }
}
