//! A supervised child as its supervisor sees it: how to start it ([`ChildSpec`]), what is
//! held of it while it runs ([`ChildHandle`]) and its line back to the supervisor
//! ([`ChildLink`], which reports an exit even when dropped, so no exit goes unseen).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::Notify;

use super::restart::{Exit, Restart};

/// A child's exit, reported to its supervisor.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    /// Child id.
    pub id: Arc<str>,
    /// The start generation that exited.
    pub generation: u64,
    /// How.
    pub exit: Exit,
}

/// Set once a child has reported its exit; a supervisor stopping the child waits on it.
#[derive(Debug, Default)]
pub(super) struct ExitSignal {
    pub(super) done: AtomicBool,
    pub(super) notify: Notify,
}

/// A child's line to its supervisor. Report the exit with [`ChildLink::exit`]; dropping the
/// link without reporting reports `killed`, so no exit goes unseen.
pub struct ChildLink {
    sup: Arc<Recipient<ChildExited>>,
    id: Arc<str>,
    generation: u64,
    signal: Arc<ExitSignal>,
    reported: bool,
}

impl std::fmt::Debug for ChildLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildLink")
            .field("id", &self.id)
            .field("generation", &self.generation)
            .finish()
    }
}

impl ChildLink {
    /// A link for generation `generation` of child `id`, reporting to `sup`.
    pub(super) fn new(
        sup: Arc<Recipient<ChildExited>>,
        id: Arc<str>,
        generation: u64,
        signal: Arc<ExitSignal>,
    ) -> Self {
        ChildLink {
            sup,
            id,
            generation,
            signal,
            reported: false,
        }
    }

    /// The child's id.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// This start's generation (1 first, +1 per restart; 0 means never started).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Reports the exit.
    pub fn exit(mut self, exit: Exit) {
        self.report(exit);
    }

    fn report(&mut self, exit: Exit) {
        if self.reported {
            return;
        }
        self.reported = true;
        self.signal.done.store(true, Ordering::Release);
        self.signal.notify.notify_one();
        self.sup.do_send(ChildExited {
            id: self.id.clone(),
            generation: self.generation,
            exit,
        });
    }
}

impl Drop for ChildLink {
    fn drop(&mut self) {
        self.report(Exit::Killed("the child went away without reporting".into()));
    }
}

/// What a supervisor holds of a running child.
pub trait ChildHandle {
    /// Asks the child to stop; it reports `Exit::Shutdown` through its link when it has.
    fn shutdown(&mut self);
    /// Stops the child now (after its shutdown time ran out).
    fn kill(&mut self, reason: &str);
    /// The child is down for good (not restarted): release what it held (e.g. its
    /// registration).
    fn removed(&mut self, _reason: &str) {}
}

type StartFn = Box<dyn FnMut(ChildLink) -> Result<Box<dyn ChildHandle>, String> + Send>;

/// How to start (and restart) a child.
pub struct ChildSpec {
    /// Unique among its siblings.
    pub id: Arc<str>,
    /// Restart type.
    pub restart: Restart,
    /// How long it gets to stop before it is killed.
    pub shutdown: Duration,
    start: StartFn,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .finish()
    }
}

impl ChildSpec {
    /// A child started by `start`, called again on every restart with a fresh link.
    ///
    /// # Example
    /// ```
    /// use muster_core::supervision::{ChildHandle, ChildSpec, Restart};
    /// use std::time::Duration;
    ///
    /// struct Noop;
    /// impl ChildHandle for Noop {
    ///     fn shutdown(&mut self) {}
    ///     fn kill(&mut self, _reason: &str) {}
    /// }
    /// let spec = ChildSpec::new("worker", Restart::Transient, Duration::from_secs(1), |link| {
    ///     drop(link); // a real child keeps its link and reports its exit through it
    ///     Ok(Box::new(Noop) as Box<dyn ChildHandle>)
    /// });
    /// assert_eq!(spec.id.as_ref(), "worker");
    /// ```
    pub fn new(
        id: impl Into<Arc<str>>,
        restart: Restart,
        shutdown: Duration,
        start: impl FnMut(ChildLink) -> Result<Box<dyn ChildHandle>, String> + Send + 'static,
    ) -> Self {
        ChildSpec {
            id: id.into(),
            restart,
            shutdown,
            start: Box::new(start),
        }
    }

    /// Starts (or restarts) the child with a fresh link.
    pub(super) fn start(&mut self, link: ChildLink) -> Result<Box<dyn ChildHandle>, String> {
        (self.start)(link)
    }
}
