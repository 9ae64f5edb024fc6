//! The load order of one capability's instances: least loaded first, ties by registration
//! order (the ordinal), kept up to date as loads change, so that a pick reads the front of
//! an ordered set (O(log n)) instead of scanning every instance.
//!
//! Each instance's handle tells the orders it belongs to of every load change
//! ([`LoadWatch`]); the order then re-reads the load under its lock, so concurrent changes
//! from several threads settle on the current load. Only instances below their capacity
//! are in the set; availability (state, a connected mailbox) can change without notice, so
//! it is checked as the front is read. Written by the capability index (membership) and
//! by the handles (loads); it must not decide anything but the order.
//!
//! Owners that find every instance at its bound wait in line here instead of polling
//! ([`LoadOrder::front_or_wait`]): each freed slot wakes the first waiter still waiting, a
//! new instance wakes as many as it has slots, and a removed one wakes them all to look
//! again. The cost of a full capability is then one wake per freed slot, whatever the
//! number of tasks waiting.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::agents::{InstanceHandle, LoadWatch};

/// One capability's instances in pick order.
#[derive(Debug, Default)]
pub(crate) struct LoadOrder {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (load, ordinal) of every member below its capacity.
    order: BTreeSet<(usize, u64)>,
    /// Members by ordinal, with the load their entry in `order` was made with (`None`:
    /// at capacity, not in `order`).
    members: HashMap<u64, (Arc<InstanceHandle>, Option<usize>)>,
    /// Owners waiting for a slot, first come first woken; each is sent how many waiters
    /// were offered this slot before it (see [`LoadOrder::front_or_wait`]).
    waiters: VecDeque<oneshot::Sender<u32>>,
}

/// What the front of the order offers.
pub(crate) enum Front {
    /// The least-loaded available instance below capacity outside the excluded ones.
    Pick(Arc<InstanceHandle>),
    /// Available instances outside the excluded ones exist, but each is at capacity.
    AllFull,
    /// As `AllFull`, but an excluded instance has a free slot (someone else may take it).
    FreeOnlyExcluded,
    /// No available instance outside the excluded ones.
    Nobody,
}

impl Inner {
    /// Puts a member's entry in `order` in line with its load now.
    fn resync(&mut self, ordinal: u64, handle: &InstanceHandle) {
        let Some((member, key)) = self.members.get_mut(&ordinal) else {
            return;
        };
        // A handle of an earlier generation with the same ordinal is no member.
        if !std::ptr::eq(Arc::as_ptr(member), handle) {
            return;
        }
        let old = key.take();
        if let Some(old) = old {
            self.order.remove(&(old, ordinal));
        }
        let load = handle.load();
        if load < handle.capacity {
            self.order.insert((load, ordinal));
            *key = Some(load);
            // A slot was freed (or the instance came back): the next waiter may take it.
            if old.is_none_or(|o| load < o) {
                self.wake(1);
            }
        }
    }

    /// Whether owners wait in line for a slot (those gone at its head are dropped first).
    fn has_waiters(&mut self) -> bool {
        while self.waiters.front().is_some_and(|w| w.is_closed()) {
            self.waiters.pop_front();
        }
        !self.waiters.is_empty()
    }

    /// Wakes up to `n` waiters still waiting (those gone are dropped on the way).
    fn wake(&mut self, n: usize) {
        self.wake_with(n, 0);
    }

    fn wake_with(&mut self, mut n: usize, hops: u32) {
        while n > 0 {
            let Some(w) = self.waiters.pop_front() else {
                return;
            };
            if w.send(hops).is_ok() {
                n -= 1;
            }
        }
    }
}

impl LoadOrder {
    /// Adds an instance (its ordinal already set by the registry).
    pub(crate) fn add(&self, handle: Arc<InstanceHandle>) {
        let mut g = self.inner.lock();
        let ordinal = handle.ordinal();
        if let Some((_, Some(old))) = g.members.remove(&ordinal) {
            g.order.remove(&(old, ordinal));
        }
        g.members.insert(ordinal, (handle.clone(), None));
        g.resync(ordinal, &handle);
        // Every free slot of the newcomer is offered (resync offered one).
        let free = handle.capacity.saturating_sub(handle.load());
        g.wake(free.saturating_sub(1));
    }

    /// Removes an instance.
    pub(crate) fn remove(&self, handle: &InstanceHandle) {
        let mut g = self.inner.lock();
        let ordinal = handle.ordinal();
        let ours = g
            .members
            .get(&ordinal)
            .is_some_and(|(m, _)| std::ptr::eq(Arc::as_ptr(m), handle));
        if ours {
            if let Some((_, Some(old))) = g.members.remove(&ordinal) {
                g.order.remove(&(old, ordinal));
            }
            // Whoever waited may have nobody left to wait for: all look again.
            let n = g.waiters.len();
            g.wake(n);
        }
    }

    /// The front: the first member in (load, ordinal) order that is available and not
    /// excluded. Costs O(log n) plus one step per unavailable or excluded member passed.
    pub(crate) fn front(&self, exclude: &[Arc<str>]) -> Front {
        Self::front_of(&self.inner.lock(), exclude)
    }

    /// As [`LoadOrder::front`], for a newcomer: while owners wait in line, a free slot is
    /// theirs (a wake for it is on its way to the head of the line), so a newcomer finds
    /// every member full and queues behind them, first come first served.
    pub(crate) fn front_for_newcomer(&self, exclude: &[Arc<str>]) -> Front {
        let mut g = self.inner.lock();
        match Self::front_of(&g, exclude) {
            Front::Pick(_) if g.has_waiters() => Front::AllFull,
            front => front,
        }
    }

    /// As [`LoadOrder::front`]; when every usable member is full, the waiter is taken
    /// out of `waiter` and joins the line under the same lock (so no slot freed in between
    /// goes unnoticed), to be sent a hop count when a slot frees.
    ///
    /// `woken` is the hop count the caller was woken with, if it was: a woken caller that
    /// lost the slot to another pick keeps the head of the line; one that cannot use the
    /// slot (it is on an instance the caller excludes) goes to the back and passes the
    /// wake on, at most once around the line, so the slot reaches whoever can take it
    /// and the line never chases its tail.
    pub(crate) fn front_or_wait(
        &self,
        exclude: &[Arc<str>],
        waiter: &mut Option<oneshot::Sender<u32>>,
        woken: Option<u32>,
    ) -> Front {
        let mut g = self.inner.lock();
        let front = match Self::front_of(&g, exclude) {
            // A newcomer does not overtake the line (see `front_for_newcomer`).
            Front::Pick(_) if woken.is_none() && g.has_waiters() => Front::AllFull,
            front => front,
        };
        let full = matches!(front, Front::AllFull | Front::FreeOnlyExcluded);
        if let (true, Some(w)) = (full, waiter.take()) {
            // Owners that looked again on their backstop left their old place behind:
            // swept whenever the line doubles, so it stays within twice the owners waiting.
            let n = g.waiters.len();
            if n >= 64 && n.is_power_of_two() {
                g.waiters.retain(|w| !w.is_closed());
            }
            match (&front, woken) {
                (Front::AllFull, Some(_)) => g.waiters.push_front(w),
                (Front::FreeOnlyExcluded, Some(hops)) => {
                    g.waiters.push_back(w);
                    if (hops as usize) < g.waiters.len() {
                        g.wake_with(1, hops.saturating_add(1));
                    }
                }
                _ => g.waiters.push_back(w),
            }
        }
        front
    }

    /// Wakes the first waiter still waiting (a wake its receiver could not use is passed
    /// on this way).
    pub(crate) fn wake_one(&self, hops: u32) {
        self.inner.lock().wake_with(1, hops);
    }

    /// Owners waiting for a slot now (those gone included until they are passed over).
    pub(crate) fn waiting(&self) -> usize {
        self.inner.lock().waiters.len()
    }

    fn front_of(g: &Inner, exclude: &[Arc<str>]) -> Front {
        let excluded = |h: &InstanceHandle| exclude.iter().any(|x| **x == *h.id);
        let usable = |h: &InstanceHandle| h.available() && !excluded(h);
        let mut free_excluded = false;
        for (_, ordinal) in &g.order {
            if let Some((h, _)) = g.members.get(ordinal) {
                if usable(h) {
                    return Front::Pick(h.clone());
                }
                free_excluded |= h.available();
            }
        }
        // Nobody below capacity: is anybody usable at all (then they are all full)?
        if !g.members.values().any(|(h, _)| usable(h)) {
            Front::Nobody
        } else if free_excluded {
            Front::FreeOnlyExcluded
        } else {
            Front::AllFull
        }
    }

    /// Every member (in no particular order).
    pub(crate) fn members(&self) -> Vec<Arc<InstanceHandle>> {
        self.inner
            .lock()
            .members
            .values()
            .map(|(h, _)| h.clone())
            .collect()
    }
}

impl LoadWatch for LoadOrder {
    fn load_changed(&self, handle: &InstanceHandle) {
        self.inner.lock().resync(handle.ordinal(), handle);
    }

    fn became_available(&self, handle: &InstanceHandle) {
        let mut g = self.inner.lock();
        g.resync(handle.ordinal(), handle);
        let free = handle.capacity.saturating_sub(handle.load());
        g.wake(free);
    }
}
