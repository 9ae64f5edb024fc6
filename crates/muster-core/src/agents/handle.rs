//! The instance handle: what every other layer holds of a running agent instance (its
//! mailbox port, and its load and state, readable without a round trip).

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;

use uuid::Uuid;

use super::protocol::{AgentState, Assign, Cancel, Kill};

/// A live agent instance as the rest of the runtime sees it: its identity, its mailbox,
/// and its load and state as atomics that are read without a round trip.
pub struct InstanceHandle {
    /// Instance id, e.g. `tester#0`.
    pub id: Arc<str>,
    /// The agent type (manifest name), e.g. `tester`.
    pub agent: Arc<str>,
    ordinal: AtomicU64,
    /// Start generation (0 first, +1 per restart).
    pub generation: u64,
    /// Capability names it serves.
    pub capabilities: Vec<Arc<str>>,
    /// Tasks at once.
    pub concurrency: usize,
    /// Tasks held at once: running plus queued (concurrency + mailbox).
    pub capacity: usize,
    /// The node hosting it, for an instance on another machine (`None`: this process).
    pub node: Option<Arc<str>>,
    /// The shard (thread) of this process it runs on; see [`crate::shards`].
    pub shard: usize,
    mailbox: Box<dyn Mailbox>,
    load: AtomicUsize,
    state: AtomicU8,
    /// Told of every load change (the capability index's load orders).
    watchers: RwLock<Box<[Weak<dyn LoadWatch>]>>,
    /// Senders waiting for a slot of this instance itself (an envelope addressed to it),
    /// and their wake: a freed slot notifies them only while there are some.
    slot_waiters: AtomicUsize,
    slot_freed: tokio::sync::Notify,
}

/// Told of every change of an instance's load, so that an index can keep instances in
/// load order without scanning them on each pick. Held weakly by the handle.
pub(crate) trait LoadWatch: Send + Sync {
    /// `handle`'s load changed: read it again with [`InstanceHandle::load`].
    fn load_changed(&self, handle: &InstanceHandle);
    /// `handle` takes work again (after a restart or a pause): its free slots are offered.
    fn became_available(&self, handle: &InstanceHandle) {
        self.load_changed(handle);
    }
}

impl InstanceHandle {
    /// A handle for an instance whose tasks go to `mailbox`: for a host that runs
    /// instances elsewhere (a cluster's workers, the simulator's network) and lists them
    /// in the registry beside the runtime's own. The handle starts with no load, in state
    /// `Starting`; the host reserves a slot ([`try_reserve`](Self::try_reserve)) before
    /// each assignment and [`release`](Self::release)s it when the attempt ends.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use muster_core::agents::{InstanceHandle, Mailbox};
    /// use muster_core::agents::protocol::{Assign, Cancel, Kill};
    ///
    /// /// A mailbox that refuses everything (a real one forwards to the remote host).
    /// struct Closed;
    /// impl Mailbox for Closed {
    ///     fn assign(&self, _: Assign) {} // dropped unanswered: the owner hears `agent_gone`
    ///     fn cancel(&self, _: Cancel) {}
    ///     fn kill(&self, _: Kill) {}
    ///     fn connected(&self) -> bool { false }
    /// }
    ///
    /// let h = InstanceHandle::new("w#0".into(), "w".into(), 0, vec!["work".into()], 1, 2,
    ///     Box::new(Closed)).on_node("worker-1".into());
    /// assert!(h.try_reserve() && h.try_reserve());
    /// assert!(!h.try_reserve(), "two slots: one running, one queued");
    /// h.release();
    /// assert_eq!(h.load(), 1);
    /// ```
    pub fn new(
        id: Arc<str>,
        agent: Arc<str>,
        generation: u64,
        capabilities: Vec<Arc<str>>,
        concurrency: usize,
        capacity: usize,
        mailbox: Box<dyn Mailbox>,
    ) -> Self {
        InstanceHandle {
            id,
            agent,
            ordinal: AtomicU64::new(0),
            generation,
            capabilities,
            concurrency,
            capacity,
            node: None,
            shard: 0,
            mailbox,
            load: AtomicUsize::new(0),
            state: AtomicU8::new(AgentState::Starting as u8),
            watchers: RwLock::new(Box::new([])),
            slot_waiters: AtomicUsize::new(0),
            slot_freed: tokio::sync::Notify::new(),
        }
    }

    /// The same handle, hosted on `node` (an instance on another machine): shown in
    /// listings and events, and used by the pick to prefer no node over another.
    pub fn on_node(mut self, node: Arc<str>) -> Self {
        self.node = Some(node);
        self
    }

    /// The same handle, on shard `shard`.
    pub(crate) fn on_shard(mut self, shard: usize) -> Self {
        self.shard = shard;
        self
    }

    /// Registration order, the deterministic tie-break between equally loaded instances.
    pub fn ordinal(&self) -> u64 {
        self.ordinal.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ordinal(&self, o: u64) {
        self.ordinal.store(o, Ordering::Relaxed);
    }

    /// Tasks held now (running and queued).
    pub fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    /// Lifecycle state.
    pub fn state(&self) -> AgentState {
        AgentState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub(crate) fn set_state(&self, s: AgentState) {
        let was = self.available();
        self.state.store(s as u8, Ordering::Relaxed);
        // An instance that starts taking work again frees its slots for waiting owners.
        if !was && self.available() {
            for w in self.watchers.read().iter() {
                if let Some(w) = w.upgrade() {
                    w.became_available(self);
                }
            }
        }
    }

    /// Whether it takes work now.
    pub fn available(&self) -> bool {
        matches!(self.state(), AgentState::Ready | AgentState::Busy) && self.mailbox.connected()
    }

    /// Reserves one slot; false when full. Whoever sends an [`Assign`] reserves first
    /// (the router does for the runtime's own picks; a host of remote instances does for
    /// the assignments it forwards), and the slot is freed by [`release`](Self::release).
    pub fn try_reserve(&self) -> bool {
        let mut cur = self.load.load(Ordering::Relaxed);
        loop {
            if cur >= self.capacity {
                return false;
            }
            match self
                .load
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.load_changed();
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Frees one reserved slot (the attempt ended, or its assignment never arrived), and
    /// wakes whoever waits for a slot of this instance.
    pub fn release(&self) {
        if self
            .load
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |l| l.checked_sub(1))
            .is_ok()
        {
            self.load_changed();
            if self.slot_waiters.load(Ordering::SeqCst) > 0 {
                self.slot_freed.notify_waiters();
            }
        }
    }

    /// Waits until a slot of this instance frees (or `limit` passes); returns at once if
    /// one is free now. It reserves nothing: the caller tries again
    /// ([`InstanceHandle::try_reserve`]), and waits again if another took the slot.
    pub(crate) async fn slot_freed(&self, limit: std::time::Duration) {
        let freed = self.slot_freed.notified();
        tokio::pin!(freed);
        // Registered before the look, so that a slot freed after it wakes this wait.
        freed.as_mut().enable();
        self.slot_waiters.fetch_add(1, Ordering::SeqCst);
        if self.load.load(Ordering::SeqCst) >= self.capacity {
            let _ = tokio::time::timeout(limit, freed).await;
        }
        self.slot_waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Who is told of load changes from now on (replacing the previous watchers): the
    /// capability index, when it lists this instance.
    pub(crate) fn set_load_watchers(&self, watchers: Vec<Weak<dyn LoadWatch>>) {
        *self.watchers.write() = watchers.into_boxed_slice();
    }

    fn load_changed(&self) {
        for w in self.watchers.read().iter() {
            if let Some(w) = w.upgrade() {
                w.load_changed(self);
            }
        }
    }
}

impl InstanceHandle {
    /// Puts an assignment in the instance's mailbox (a slot was reserved on this handle).
    pub fn assign(&self, a: Assign) {
        self.mailbox.assign(a)
    }

    /// Cancels the attempt of `task_id` under `epoch`, running or queued.
    pub fn cancel(&self, task_id: Uuid, epoch: u64) {
        self.mailbox.cancel(Cancel { task_id, epoch })
    }

    /// Stops the instance abruptly (a simulated crash, or a missed liveness heartbeat).
    pub fn kill(&self, reason: &str) {
        self.mailbox.kill(Kill(reason.to_string()))
    }
}

impl std::fmt::Debug for InstanceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceHandle")
            .field("id", &self.id)
            .field("generation", &self.generation)
            .field("load", &self.load())
            .field("state", &self.state())
            .finish()
    }
}

/// An instance's mailbox, as its handle reaches it: the port through which every other
/// layer talks to an instance without naming the actor.
pub trait Mailbox: Send + Sync {
    /// Delivers an assignment.
    fn assign(&self, a: Assign);
    /// Delivers a cancellation.
    fn cancel(&self, c: Cancel);
    /// Delivers a kill.
    fn kill(&self, k: Kill);
    /// Whether the instance still reads its mailbox.
    fn connected(&self) -> bool;
}

/// What lies between the runtime and the mailboxes of an agent type's instances: it
/// wraps each instance's mailbox when the instance starts (a simulated network that
/// delays or loses messages, for one). `handle` is the instance's own handle, held
/// weakly (the handle owns the wrapped mailbox): a layer that never delivers an
/// assignment frees the slot reserved for it with it.
///
/// # Example
/// ```
/// use std::sync::{Arc, Weak};
/// use muster_core::agents::{InstanceHandle, Mailbox, MailboxLayer};
///
/// /// A layer that changes nothing.
/// struct Direct;
/// impl MailboxLayer for Direct {
///     fn wrap(&self, _handle: Weak<InstanceHandle>, inner: Box<dyn Mailbox>) -> Box<dyn Mailbox> {
///         inner
///     }
/// }
/// let layer: Arc<dyn MailboxLayer> = Arc::new(Direct);
/// # let _ = layer;
/// ```
pub trait MailboxLayer: Send + Sync {
    /// The mailbox the rest of the runtime reaches the instance through, in front of
    /// `inner` (the instance's own).
    fn wrap(&self, handle: Weak<InstanceHandle>, inner: Box<dyn Mailbox>) -> Box<dyn Mailbox>;
}
