//! The load order of one capability's instances: least loaded first, ties by registration
//! order (the ordinal), kept up to date as loads change, so that a pick reads the front of
//! an ordered set (O(log n)) instead of scanning every instance.
//!
//! **Ties rotate.** Among the least loaded, a pick takes the first at or after the
//! capability's cursor (the ordinal after the last instance picked), wrapping to the
//! lowest: equally loaded instances take turns, so two idle workers share a sequential
//! workflow's steps instead of one doing them all. The cursor is one atomic per capability
//! and moves only on a pick, so the order stays deterministic on one thread (the
//! simulator's).
//!
//! Each instance's handle tells the order it belongs to of every load change
//! ([`LoadWatch`]); the order then re-reads the load under its lock, so concurrent changes
//! from several threads settle on the current load. Only instances below their capacity
//! are in the set; availability (state, a connected mailbox) can change without notice, so
//! it is checked as the front is read. Written by the capability index (membership) and
//! by the handles (loads); it must not decide anything but the order.
//!
//! **One order per shard.** A capability's instances are kept in one [`LoadOrder`] per
//! [shard](crate::shards) ([`Orders`]), each behind its own lock, so a pick on one shard
//! and a load change on another never wait for each other. A pick from shard `s` takes an
//! idle instance of shard `s` at once (nothing is less loaded); otherwise it compares the
//! fronts of every shard and takes the least loaded, ties to shard `s` first, then the
//! shards after it in turn, then by ordinal. With one shard this is the single order.
//!
//! Owners that find every instance at its bound wait in the capability's one
//! [`Line`](super::line::Line) instead of polling ([`Orders::front_or_wait`]): each freed slot on any shard wakes the
//! first waiter still waiting, a new instance wakes as many as it has slots, and a removed
//! one wakes them all to look again. The cost of a full capability is then one wake per
//! freed slot, whatever the number of tasks waiting.
//!
//! Locks: a waiter holds the line's lock while it looks at the orders and joins the line;
//! an order wakes the line only after releasing its own lock. A slot freed while a waiter
//! looks is either seen by its look or wakes it (the waiter counts itself in the line
//! before it looks, and an order reads that count after its change).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::line::{Line, LinePlace};
use crate::agents::{InstanceHandle, LoadWatch};

/// What the front of the orders offers.
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

/// One shard's instances of a capability in pick order.
#[derive(Debug)]
pub(crate) struct LoadOrder {
    inner: Mutex<Inner>,
    line: Arc<Line>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (load, ordinal) of every member below its capacity, with its handle (a pick reads
    /// the front without a second look-up by ordinal).
    order: BTreeMap<(usize, u64), Arc<InstanceHandle>>,
    /// Members by ordinal, with the load their entry in `order` was made with (`None`:
    /// at capacity, not in `order`).
    members: HashMap<u64, (Arc<InstanceHandle>, Option<usize>)>,
}

/// What one order offers: its front, and whether any usable member or any free excluded
/// one exists (to tell "all full" from "nobody").
struct Look {
    pick: Option<Arc<InstanceHandle>>,
    usable: bool,
    free_excluded: bool,
}

impl Inner {
    /// Puts a member's entry in `order` in line with its load now; true when a slot was
    /// freed (or the instance came back), so that the next waiter may take it.
    fn resync(&mut self, ordinal: u64, handle: &InstanceHandle) -> bool {
        let Some((member, key)) = self.members.get_mut(&ordinal) else {
            return false;
        };
        // A handle of an earlier generation with the same ordinal is no member.
        if !std::ptr::eq(Arc::as_ptr(member), handle) {
            return false;
        }
        let old = key.take();
        if let Some(old) = old {
            self.order.remove(&(old, ordinal));
        }
        let load = handle.load();
        if load < handle.capacity {
            self.order.insert((load, ordinal), member.clone());
            *key = Some(load);
            return old.is_none_or(|o| load < o);
        }
        false
    }

    /// The first member in (load, ordinal) order that is available and not excluded, or
    /// among the members of its load the first at or after ordinal `cursor` (ties rotate).
    /// Costs O(log n) plus one step per unavailable or excluded member passed.
    fn look(&self, exclude: &[Arc<str>], cursor: u64) -> Look {
        let excluded = |h: &InstanceHandle| exclude.iter().any(|x| **x == *h.id);
        let usable = |h: &InstanceHandle| h.available() && !excluded(h);
        let mut free_excluded = false;
        for (&(load, ordinal), h) in &self.order {
            if usable(h) {
                let mut pick = h;
                if ordinal < cursor {
                    // Its turn has passed: the next one of the same load after the
                    // cursor, if any, else back to the first.
                    let after = self
                        .order
                        .range((load, cursor)..=(load, u64::MAX))
                        .map(|(_, m)| m)
                        .find(|m| usable(m));
                    if let Some(m) = after {
                        pick = m;
                    }
                }
                return Look {
                    pick: Some(pick.clone()),
                    usable: true,
                    free_excluded,
                };
            }
            free_excluded |= h.available();
        }
        // Nobody below capacity: is anybody usable at all (then they are all full)?
        Look {
            pick: None,
            usable: self.members.values().any(|(h, _)| usable(h)),
            free_excluded,
        }
    }
}

impl LoadOrder {
    fn new(line: Arc<Line>) -> Self {
        LoadOrder {
            inner: Mutex::new(Inner::default()),
            line,
        }
    }

    /// Adds an instance (its ordinal already set by the registry).
    pub(crate) fn add(&self, handle: Arc<InstanceHandle>) {
        let woken = {
            let mut g = self.inner.lock();
            let ordinal = handle.ordinal();
            if let Some((_, Some(old))) = g.members.remove(&ordinal) {
                g.order.remove(&(old, ordinal));
            }
            g.members.insert(ordinal, (handle.clone(), None));
            let freed = g.resync(ordinal, &handle);
            // Every free slot of the newcomer is offered.
            let free = handle.capacity.saturating_sub(handle.load());
            usize::from(freed) + free.saturating_sub(1)
        };
        self.line.wake(woken, 0);
    }

    /// Removes an instance.
    pub(crate) fn remove(&self, handle: &InstanceHandle) {
        let ours = {
            let mut g = self.inner.lock();
            let ordinal = handle.ordinal();
            let ours = g
                .members
                .get(&ordinal)
                .is_some_and(|(m, _)| std::ptr::eq(Arc::as_ptr(m), handle));
            if ours && let Some((_, Some(old))) = g.members.remove(&ordinal) {
                g.order.remove(&(old, ordinal));
            }
            ours
        };
        if ours {
            // Whoever waited may have nobody left to wait for: all look again.
            self.line.wake_all();
        }
    }

    fn look(&self, exclude: &[Arc<str>], cursor: u64) -> Look {
        self.inner.lock().look(exclude, cursor)
    }

    /// Every member (in no particular order).
    fn members(&self) -> Vec<Arc<InstanceHandle>> {
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
        let freed = self.inner.lock().resync(handle.ordinal(), handle);
        if freed {
            self.line.wake(1, 0);
        }
    }

    fn became_available(&self, handle: &InstanceHandle) {
        let woken = {
            let mut g = self.inner.lock();
            let freed = g.resync(handle.ordinal(), handle);
            usize::from(freed) + handle.capacity.saturating_sub(handle.load())
        };
        self.line.wake(woken, 0);
    }
}

/// One capability's instances: an order per shard, one line, and the rotation's cursor.
#[derive(Debug)]
pub(crate) struct Orders {
    shards: Box<[Arc<LoadOrder>]>,
    line: Arc<Line>,
    /// The ordinal after the last instance picked: ties go to the first at or after it.
    cursor: AtomicU64,
}

impl Orders {
    /// Empty orders for `shards` shards (at least one).
    pub(crate) fn new(shards: usize) -> Self {
        let line = Arc::new(Line::default());
        Orders {
            shards: (0..shards.max(1))
                .map(|_| Arc::new(LoadOrder::new(line.clone())))
                .collect(),
            line,
            cursor: AtomicU64::new(0),
        }
    }

    /// Records a pick of `handle` (a slot reserved on it): the next tie goes to the
    /// instances after it.
    pub(crate) fn picked(&self, handle: &InstanceHandle) {
        self.cursor
            .store(handle.ordinal().wrapping_add(1), Ordering::Relaxed);
    }

    /// The order of the instances on `shard`.
    pub(crate) fn of_shard(&self, shard: usize) -> &Arc<LoadOrder> {
        &self.shards[shard % self.shards.len()]
    }

    /// The front for a pick from shard `from`: see the module's doc.
    pub(crate) fn front(&self, exclude: &[Arc<str>], from: usize) -> Front {
        let n = self.shards.len();
        let cursor = self.cursor.load(Ordering::Relaxed);
        let first = self.of_shard(from).look(exclude, cursor);
        if n == 1 {
            return Self::front_of(first.pick, first.usable, first.free_excluded);
        }
        // An idle instance on the picker's own shard: nothing is less loaded.
        if first.pick.as_ref().is_some_and(|h| h.load() == 0) {
            return Self::front_of(first.pick, true, false);
        }
        let (mut usable, mut free_excluded) = (first.usable, first.free_excluded);
        let mut best = first.pick.map(|h| (h.load(), h));
        for k in 1..n {
            let l = self.of_shard(from + k).look(exclude, cursor);
            usable |= l.usable;
            free_excluded |= l.free_excluded;
            if let Some(h) = l.pick {
                let load = h.load();
                if best.as_ref().is_none_or(|(b, _)| load < *b) {
                    best = Some((load, h));
                }
            }
        }
        Self::front_of(best.map(|(_, h)| h), usable, free_excluded)
    }

    fn front_of(pick: Option<Arc<InstanceHandle>>, usable: bool, free_excluded: bool) -> Front {
        match pick {
            Some(h) => Front::Pick(h),
            None if !usable => Front::Nobody,
            None if free_excluded => Front::FreeOnlyExcluded,
            None => Front::AllFull,
        }
    }

    /// As [`Orders::front`], for a newcomer: while owners wait in line, a free slot is
    /// theirs (a wake for it is on its way to the head of the line), so a newcomer finds
    /// every member full and queues behind them, first come first served.
    pub(crate) fn front_for_newcomer(&self, exclude: &[Arc<str>], from: usize) -> Front {
        match self.front(exclude, from) {
            Front::Pick(_) if self.line.has_waiters() => Front::AllFull,
            front => front,
        }
    }

    /// As [`Orders::front`]; when every usable member is full, the waiter is taken out of
    /// `waiter` and joins the line under the line's lock (so no slot freed in between goes
    /// unnoticed), to be sent a hop count when a slot frees.
    ///
    /// `woken` is the hop count the caller was woken with, if it was: a woken caller that
    /// lost the slot to another pick keeps the head of the line; one that cannot use the
    /// slot (it is on an instance the caller excludes) goes to the back and passes the
    /// wake on, at most once around the line, so the slot reaches whoever can take it
    /// and the line never chases its tail.
    pub(crate) fn front_or_wait(
        &self,
        exclude: &[Arc<str>],
        from: usize,
        waiter: &mut Option<oneshot::Sender<u32>>,
        woken: Option<u32>,
    ) -> Front {
        let mut g = self.line.waiters.lock();
        // Counted before looking: a slot freed after the look sees a waiter and wakes it.
        self.line.count.fetch_add(1, Ordering::SeqCst);
        let front = match self.front(exclude, from) {
            // A newcomer does not overtake the line (see `front_for_newcomer`).
            Front::Pick(_) if woken.is_none() && self.line.has_waiters_locked(&mut g) => {
                Front::AllFull
            }
            front => front,
        };
        let full = matches!(front, Front::AllFull | Front::FreeOnlyExcluded);
        // Taken only to join the line: a caller that finds a slot (and may lose it to a
        // race) keeps its waiter for the next look.
        let Some(w) = waiter.take_if(|_| full) else {
            self.line.count.fetch_sub(1, Ordering::SeqCst);
            return front;
        };
        // Owners that looked again on their backstop left their old place behind: swept
        // whenever the line doubles, so it stays within twice the owners waiting.
        let n = g.len();
        if n >= 64 && n.is_power_of_two() {
            g.retain(|w| !w.is_closed());
            self.line.count.store(g.len() + 1, Ordering::SeqCst);
        }
        match (&front, woken) {
            (Front::AllFull, Some(_)) => g.push_front(w),
            (Front::FreeOnlyExcluded, Some(hops)) => {
                g.push_back(w);
                if (hops as usize) < g.len() {
                    self.line.wake_locked(&mut g, 1, hops.saturating_add(1));
                }
            }
            _ => g.push_back(w),
        }
        front
    }

    /// A new place in the line, and the sender that [`Orders::front_or_wait`] puts in the
    /// line for it.
    pub(crate) fn place(&self) -> (oneshot::Sender<u32>, LinePlace) {
        LinePlace::new(self.line.clone())
    }

    /// Owners waiting for a slot now (those gone included until they are passed over).
    pub(crate) fn waiting(&self) -> usize {
        self.line.waiters.lock().len()
    }

    /// Every member of every shard (in no particular order).
    pub(crate) fn members(&self) -> Vec<Arc<InstanceHandle>> {
        self.shards.iter().flat_map(|o| o.members()).collect()
    }
}
