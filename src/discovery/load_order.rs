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

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

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
}

/// What the front of the order offers.
pub(crate) enum Front {
    /// The least-loaded available instance below capacity outside the excluded ones.
    Pick(Arc<InstanceHandle>),
    /// Available instances outside the excluded ones exist, but each is at capacity.
    AllFull,
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
        if let Some(old) = key.take() {
            self.order.remove(&(old, ordinal));
        }
        let load = handle.load();
        if load < handle.capacity {
            self.order.insert((load, ordinal));
            *key = Some(load);
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
        }
    }

    /// The front: the first member in (load, ordinal) order that is available and not
    /// excluded. Costs O(log n) plus one step per unavailable or excluded member passed.
    pub(crate) fn front(&self, exclude: &[Arc<str>]) -> Front {
        let g = self.inner.lock();
        let usable = |h: &InstanceHandle| h.available() && !exclude.iter().any(|x| **x == *h.id);
        for (_, ordinal) in &g.order {
            if let Some((h, _)) = g.members.get(ordinal) {
                if usable(h) {
                    return Front::Pick(h.clone());
                }
            }
        }
        // Nobody below capacity: is anybody usable at all (then they are all full)?
        if g.members.values().any(|(h, _)| usable(h)) {
            Front::AllFull
        } else {
            Front::Nobody
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
}
