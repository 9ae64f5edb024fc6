//! The capability index: who serves what, readable without a round trip.
//!
//! Written only by the [`Registry`](super::Registry) actor; read by the router and by task
//! owners on the hot path. Each instance's load and state are atomics in its
//! [`InstanceHandle`], updated by the router (reservations) and the instance itself; every
//! load change is passed on to the load order of each capability the instance serves, so a
//! pick takes the front of an ordered set (O(log n) in the instances) instead of scanning
//! them all.

use std::sync::{Arc, Weak};

use dashmap::DashMap;
use serde::Serialize;

use super::dropped_out::{Abandoned, AgentTypes};
use super::load_order::{Front, Orders};
use crate::agents::protocol::AgentState;
use crate::agents::{InstanceHandle, LoadWatch};
use crate::messaging::capability::{Capability, CapabilityError};

/// One capability: its contract and the instances serving it, in pick order.
#[derive(Debug, Clone)]
pub struct CapabilityEntry {
    /// The compiled contract.
    pub contract: Arc<Capability>,
    /// Who declared it first.
    pub declared_by: Arc<str>,
    /// Serving instances, an order per shard (least loaded first, ties in turn) and one
    /// line of owners waiting for a slot.
    orders: Arc<Orders>,
}

/// Why no instance could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickError {
    /// No agent ever declared the capability.
    UnknownCapability,
    /// Declared, but no live instance outside the excluded ones.
    NoCandidate,
    /// Live candidates exist but every one is at capacity.
    AllFull,
}

/// An agent instance as listed by `muster agents`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AgentInfo {
    /// Instance id.
    pub id: String,
    /// Agent type.
    pub agent: String,
    /// Lifecycle state.
    pub state: AgentState,
    /// Tasks held now.
    pub in_flight: usize,
    /// Tasks at once.
    pub concurrency: usize,
    /// Start generation.
    pub generation: u64,
    /// The node hosting it, for an instance on another machine (absent: this process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Capabilities with their schemas.
    pub capabilities: Vec<CapabilityInfo>,
}

/// A capability as listed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CapabilityInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Input schema name.
    pub input: String,
    /// Output schema name.
    pub output: String,
    /// Acceptance rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept: Option<String>,
}

/// Capability name → contract and instances; instance id → handle.
#[derive(Debug)]
pub struct CapabilityIndex {
    caps: DashMap<Arc<str>, CapabilityEntry>,
    agents: DashMap<Arc<str>, Arc<InstanceHandle>>,
    /// Agent types: what each declared, and why it dropped out if it did.
    types: AgentTypes,
    /// How many shards its instances are spread over (an order each).
    shards: usize,
}

impl Default for CapabilityIndex {
    fn default() -> Self {
        CapabilityIndex::with_shards(1)
    }
}

impl CapabilityIndex {
    /// An empty index for instances spread over `shards` shards (see
    /// [`shards`](crate::shards)): each capability keeps one load order per shard, so picks
    /// on different shards do not contend.
    ///
    /// # Example
    /// ```
    /// let index = muster_core::discovery::CapabilityIndex::with_shards(2);
    /// assert!(index.is_empty());
    /// ```
    pub fn with_shards(shards: usize) -> Self {
        CapabilityIndex {
            caps: DashMap::new(),
            agents: DashMap::new(),
            types: AgentTypes::default(),
            shards: shards.max(1),
        }
    }

    /// The contract of a capability, if declared.
    pub fn contract(&self, capability: &str) -> Option<Arc<Capability>> {
        self.caps.get(capability).map(|e| e.contract.clone())
    }

    /// The live handle of an instance.
    pub fn agent(&self, id: &str) -> Option<Arc<InstanceHandle>> {
        self.agents.get(id).map(|h| h.value().clone())
    }

    /// Picks the least-loaded available instance of a capability outside `exclude`, ties
    /// broken by shard (`from`, the picker's, first) then in turn: the first in
    /// registration order after the instance this capability's last pick took, wrapping
    /// round (deterministic on one thread), and reserves a slot on it. An idle instance on shard `from` is
    /// taken without looking at the other shards. O(log n) in the capability's instances
    /// (plus one step per unavailable or excluded instance passed over): the instances are
    /// kept in load order as their loads change.
    pub fn pick(
        &self,
        capability: &str,
        exclude: &[Arc<str>],
        from: usize,
    ) -> Result<(Arc<Capability>, Arc<InstanceHandle>), PickError> {
        let entry = self
            .caps
            .get(capability)
            .ok_or(PickError::UnknownCapability)?;
        loop {
            match entry.orders.front_for_newcomer(exclude, from) {
                Front::Pick(h) if h.try_reserve() => {
                    entry.orders.picked(&h);
                    return Ok((entry.contract.clone(), h));
                }
                // Lost a race for the last slot (its load changed on another thread): the
                // order is brought in line with the load now, and read again.
                Front::Pick(h) => entry.orders.of_shard(h.shard).load_changed(&h),
                Front::AllFull | Front::FreeOnlyExcluded => return Err(PickError::AllFull),
                Front::Nobody => return Err(PickError::NoCandidate),
            }
        }
    }

    /// As [`CapabilityIndex::pick`], but when every candidate is at its bound `waiter`
    /// joins the capability's line (atomically with the look) and is sent a hop count when
    /// a slot frees, so the caller waits instead of polling. `woken`: the hop count the
    /// caller was last woken with (it keeps the head of the line if it lost the slot to
    /// another pick, and passes the wake on if the slot is on an instance it excludes).
    pub fn pick_or_wait(
        &self,
        capability: &str,
        exclude: &[Arc<str>],
        from: usize,
        waiter: tokio::sync::oneshot::Sender<u32>,
        woken: Option<u32>,
    ) -> Result<(Arc<Capability>, Arc<InstanceHandle>), PickError> {
        let entry = self
            .caps
            .get(capability)
            .ok_or(PickError::UnknownCapability)?;
        let mut waiter = Some(waiter);
        loop {
            match entry
                .orders
                .front_or_wait(exclude, from, &mut waiter, woken)
            {
                Front::Pick(h) if h.try_reserve() => {
                    entry.orders.picked(&h);
                    return Ok((entry.contract.clone(), h));
                }
                // Lost a race for the last slot: as in `pick` (the waiter is still ours).
                Front::Pick(h) => entry.orders.of_shard(h.shard).load_changed(&h),
                Front::AllFull | Front::FreeOnlyExcluded => return Err(PickError::AllFull),
                Front::Nobody => return Err(PickError::NoCandidate),
            }
        }
    }

    /// A new place in `capability`'s line, and the sender to hand
    /// [`CapabilityIndex::pick_or_wait`] for it (`None`: the capability is not declared).
    pub(crate) fn join_line(
        &self,
        capability: &str,
    ) -> Option<(tokio::sync::oneshot::Sender<u32>, super::LinePlace)> {
        self.caps.get(capability).map(|e| e.orders.place())
    }

    /// Owners waiting in line for a slot of `capability` (0 when none is at its bound).
    pub fn waiting(&self, capability: &str) -> usize {
        self.caps.get(capability).map_or(0, |e| e.orders.waiting())
    }

    /// The instance [`CapabilityIndex::pick`] would choose now from shard 0, without
    /// reserving a slot.
    pub fn least_loaded(
        &self,
        capability: &str,
        exclude: &[Arc<str>],
    ) -> Result<Arc<InstanceHandle>, PickError> {
        let entry = self
            .caps
            .get(capability)
            .ok_or(PickError::UnknownCapability)?;
        match entry.orders.front(exclude, 0) {
            Front::Pick(h) => Ok(h),
            Front::AllFull | Front::FreeOnlyExcluded => Err(PickError::AllFull),
            Front::Nobody => Err(PickError::NoCandidate),
        }
    }

    /// Candidate ids for a capability outside `exclude`, least-loaded first, ties by
    /// registration order.
    pub fn candidates(&self, capability: &str, exclude: &[Arc<str>]) -> Vec<Arc<str>> {
        let Some(entry) = self.caps.get(capability) else {
            return Vec::new();
        };
        let mut v: Vec<_> = entry
            .orders
            .members()
            .into_iter()
            .filter(|h| h.available() && !exclude.iter().any(|x| **x == *h.id))
            .map(|h| (h.load(), h.ordinal(), h.id.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, _, id)| id).collect()
    }

    /// Every instance, in registration order.
    pub fn list(&self) -> Vec<AgentInfo> {
        let mut hs: Vec<Arc<InstanceHandle>> =
            self.agents.iter().map(|h| h.value().clone()).collect();
        hs.sort_by_key(|h| h.ordinal());
        hs.iter()
            .map(|h| AgentInfo {
                id: h.id.to_string(),
                agent: h.agent.to_string(),
                state: h.state(),
                in_flight: h.load(),
                concurrency: h.concurrency,
                generation: h.generation,
                node: h.node.as_deref().map(str::to_string),
                capabilities: h
                    .capabilities
                    .iter()
                    .filter_map(|c| self.contract(c))
                    .map(|c| CapabilityInfo {
                        name: c.spec.name.clone(),
                        version: c.spec.version.clone(),
                        input: c.spec.input.clone(),
                        output: c.spec.output.clone(),
                        accept: c.spec.accept.clone(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Capability names, sorted.
    pub fn capabilities(&self) -> Vec<String> {
        let mut v: Vec<String> = self.caps.iter().map(|e| e.key().to_string()).collect();
        v.sort();
        v
    }

    /// Number of registered instances.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether no instance is registered.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Why agent type `agent_type` dropped out (its supervisor gave up, past its restart
    /// intensity), unless it was registered again since; `None` while it runs or restarts.
    ///
    /// # Example
    /// ```
    /// let index = muster_core::discovery::CapabilityIndex::default();
    /// assert_eq!(index.dropped_out("reviewer"), None);
    /// ```
    pub fn dropped_out(&self, agent_type: &str) -> Option<Arc<str>> {
        self.types.reason(agent_type)
    }

    /// Whether nobody will serve `capability` any more: it was declared, every agent type
    /// that declared it dropped out (see [`CapabilityIndex::dropped_out`]) and no instance
    /// serving it is registered. `None` while any type serving it runs or restarts, and
    /// for a capability nobody declared (an agent may still register for it).
    ///
    /// # Example
    /// ```
    /// let index = muster_core::discovery::CapabilityIndex::default();
    /// assert_eq!(index.abandoned("review"), None); // never declared: may still come
    /// ```
    pub fn abandoned(&self, capability: &str) -> Option<Abandoned> {
        let entry = self.caps.get(capability)?;
        if !entry.orders.members().is_empty() {
            return None;
        }
        let capability = entry.key().clone();
        drop(entry);
        let serving = self.types.serving(&capability);
        if serving.is_empty() {
            return None;
        }
        let mut dropped = Vec::with_capacity(serving.len());
        for (agent_type, gone) in serving {
            dropped.push((agent_type, gone?));
        }
        Some(Abandoned {
            capability,
            dropped,
        })
    }

    // ---- writes: only the registry actor calls these ----

    /// Agent type `agent_type`'s supervisor gave up, for `reason`; returns the
    /// capabilities it declared.
    pub(crate) fn type_gone(&self, agent_type: &Arc<str>, reason: &str) -> Vec<Arc<str>> {
        self.types.gone(agent_type, reason)
    }

    /// Whether `contract` agrees with the capability's declared contract, if any.
    pub(crate) fn check_contract(&self, contract: &Capability) -> Result<(), CapabilityError> {
        match self.caps.get(contract.name.as_ref()) {
            Some(e) => {
                e.contract
                    .same_contract(contract)
                    .map_err(|what| CapabilityError::Conflict {
                        capability: contract.name.to_string(),
                        by: e.declared_by.to_string(),
                        what: Box::new(what),
                    })
            }
            None => Ok(()),
        }
    }

    pub(crate) fn declare(
        &self,
        contract: Arc<Capability>,
        by: &Arc<str>,
    ) -> Result<(), CapabilityError> {
        self.types.declare(by, &contract.name);
        if self.caps.contains_key(contract.name.as_ref()) {
            return self.check_contract(&contract);
        }
        self.caps.insert(
            contract.name.clone(),
            CapabilityEntry {
                contract,
                declared_by: by.clone(),
                orders: Arc::new(Orders::new(self.shards)),
            },
        );
        Ok(())
    }

    /// Lists an instance under each of its declared capabilities (O(log n) each, no
    /// re-sort) and has it report its load changes to their load orders.
    pub(crate) fn insert(&self, handle: Arc<InstanceHandle>) {
        self.remove(&handle.id);
        let mut watchers: Vec<Weak<dyn LoadWatch>> = Vec::new();
        for c in &handle.capabilities {
            let order = self
                .caps
                .get(c.as_ref())
                .map(|e| e.orders.of_shard(handle.shard).clone());
            if let Some(order) = order {
                order.add(handle.clone());
                let order: Arc<dyn LoadWatch> = order;
                watchers.push(Arc::downgrade(&order));
            }
        }
        handle.set_load_watchers(watchers);
        self.types.revive(&handle.agent);
        self.agents.insert(handle.id.clone(), handle);
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Arc<InstanceHandle>> {
        let (_, h) = self.agents.remove(id)?;
        h.set_load_watchers(Vec::new());
        for c in &h.capabilities {
            let order = self
                .caps
                .get(c.as_ref())
                .map(|e| e.orders.of_shard(h.shard).clone());
            if let Some(order) = order {
                order.remove(&h);
            }
        }
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::{Cancel, Kill, Mailbox};
    use crate::messaging::{CapabilitySpec, SchemaStore};
    use proptest::prelude::*;

    struct Open;
    impl Mailbox for Open {
        fn assign(&self, _: crate::agents::Assign) {}
        fn cancel(&self, _: Cancel) {}
        fn kill(&self, _: Kill) {}
        fn connected(&self) -> bool {
            true
        }
    }

    fn index(capacities: &[usize]) -> (CapabilityIndex, Vec<Arc<InstanceHandle>>) {
        sharded(capacities, 1)
    }

    /// As `index`, over `shards` shards: instance `i` on shard `i % shards`.
    fn sharded(capacities: &[usize], shards: usize) -> (CapabilityIndex, Vec<Arc<InstanceHandle>>) {
        let schemas = SchemaStore::new();
        schemas.add("s", serde_json::json!({})).unwrap();
        let cap = CapabilitySpec::new("c", "s", "s")
            .compile(&schemas)
            .unwrap();
        let idx = CapabilityIndex::with_shards(shards);
        idx.declare(Arc::new(cap), &Arc::from("t")).unwrap();
        let mut hs = Vec::new();
        for (i, capacity) in capacities.iter().enumerate() {
            let h = Arc::new(
                InstanceHandle::new(
                    Arc::from(format!("t#{i}")),
                    Arc::from("t"),
                    0,
                    vec![Arc::from("c")],
                    *capacity,
                    *capacity,
                    Box::new(Open),
                )
                .on_shard(i % shards),
            );
            h.set_ordinal(i as u64 + 1);
            h.set_state(AgentState::Ready);
            hs.push(h);
        }
        // Registered in a shuffled order: the tie-break is the ordinal, not the insertion.
        for i in (0..hs.len()).step_by(2).chain((1..hs.len()).step_by(2)) {
            idx.insert(hs[i].clone());
        }
        (idx, hs)
    }

    /// The pick as a scan of every instance in registration order: the least loaded,
    /// ties to the first at or after ordinal `cursor`, else the first.
    fn scanned(
        hs: &[Arc<InstanceHandle>],
        exclude: &[Arc<str>],
        cursor: u64,
    ) -> Result<Arc<str>, PickError> {
        let mut any = false;
        let mut best: Option<&Arc<InstanceHandle>> = None;
        for h in hs {
            if !h.available() || exclude.iter().any(|x| **x == *h.id) {
                continue;
            }
            any = true;
            let load = h.load();
            if load >= h.capacity {
                continue;
            }
            // Lower load wins; on a tie, an instance at or after the cursor beats one
            // before it (instances are scanned in ordinal order).
            match best {
                Some(b)
                    if b.load() < load
                        || (b.load() == load
                            && (b.ordinal() >= cursor || h.ordinal() < cursor)) => {}
                _ => best = Some(h),
            }
        }
        match best {
            Some(h) => Ok(h.id.clone()),
            None if any => Err(PickError::AllFull),
            None => Err(PickError::NoCandidate),
        }
    }

    #[test]
    fn equally_loaded_instances_are_picked_in_turn() {
        let (idx, hs) = index(&[1, 1, 1]);
        let mut picked = Vec::new();
        for _ in 0..5 {
            let (_, h) = idx.pick("c", &[], 0).expect("an idle instance");
            picked.push(h.id.clone());
            h.release();
        }
        let ids: Vec<_> = [0, 1, 2, 0, 1].iter().map(|i| hs[*i].id.clone()).collect();
        assert_eq!(picked, ids, "each idle instance takes its turn");
        // A lower load still wins over the turn: t#2 is next, but busy.
        let _busy = idx.pick("c", &[], 0).expect("t#2");
        let (_, h) = idx.pick("c", &[], 0).expect("t#0");
        assert_eq!(h.id, hs[0].id);
        h.release();
        hs[2].release();
        // An excluded instance's turn passes to the next one.
        let (_, h) = idx.pick("c", &[hs[1].id.clone()], 0).expect("t#2");
        assert_eq!(h.id, hs[2].id);
    }

    /// A place in line: the waiter and what it receives.
    fn line() -> (
        tokio::sync::oneshot::Sender<u32>,
        tokio::sync::oneshot::Receiver<u32>,
    ) {
        tokio::sync::oneshot::channel()
    }

    #[test]
    fn an_owner_in_line_is_woken_by_the_freed_slot_not_by_a_timer() {
        let (idx, hs) = index(&[1]);
        assert!(idx.pick("c", &[], 0).is_ok());
        let (tx, mut rx) = line();
        assert_eq!(
            idx.pick_or_wait("c", &[], 0, tx, None).map(|_| ()),
            Err(PickError::AllFull)
        );
        assert_eq!(idx.waiting("c"), 1);
        assert!(rx.try_recv().is_err(), "nothing is offered while full");
        hs[0].release();
        assert_eq!(rx.try_recv(), Ok(0), "the release offered the slot");
        assert_eq!(idx.waiting("c"), 0);
        assert!(
            idx.pick("c", &[], 0).is_ok(),
            "and the slot is there to take"
        );
    }

    #[test]
    fn one_freed_slot_wakes_one_waiter_first_come_first_woken() {
        let (idx, hs) = index(&[1]);
        assert!(idx.pick("c", &[], 0).is_ok());
        let mut rxs = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = line();
            assert!(idx.pick_or_wait("c", &[], 0, tx, None).is_err());
            rxs.push(rx);
        }
        hs[0].release();
        let woken: Vec<bool> = rxs.iter_mut().map(|r| r.try_recv().is_ok()).collect();
        assert_eq!(woken, [true, false, false]);
        assert_eq!(idx.waiting("c"), 2);
    }

    #[test]
    fn a_waiter_that_lost_its_slot_keeps_the_head_of_the_line() {
        let (idx, hs) = index(&[1]);
        assert!(idx.pick("c", &[], 0).is_ok());
        let (tx1, mut rx1) = line();
        assert!(idx.pick_or_wait("c", &[], 0, tx1, None).is_err());
        hs[0].release();
        assert_eq!(rx1.try_recv(), Ok(0));
        // With nobody else in line, a newcomer takes the slot before the woken owner looks.
        assert!(idx.pick("c", &[], 0).is_ok());
        let (tx2, mut rx2) = line();
        assert!(idx.pick_or_wait("c", &[], 0, tx2, None).is_err());
        let (tx1, mut rx1) = line();
        assert!(idx.pick_or_wait("c", &[], 0, tx1, Some(0)).is_err());
        hs[0].release();
        assert_eq!(rx1.try_recv(), Ok(0), "the first waiter is first again");
        assert!(rx2.try_recv().is_err());
    }

    #[test]
    fn a_newcomer_queues_behind_the_owners_in_line_instead_of_taking_their_slot() {
        let (idx, hs) = index(&[1]);
        assert!(idx.pick("c", &[], 0).is_ok());
        let (tx1, mut rx1) = line();
        let (tx2, mut rx2) = line();
        assert!(idx.pick_or_wait("c", &[], 0, tx1, None).is_err());
        assert!(idx.pick_or_wait("c", &[], 0, tx2, None).is_err());
        hs[0].release();
        assert_eq!(
            rx1.try_recv(),
            Ok(0),
            "the head of the line is offered the slot"
        );
        // A newcomer arriving before the woken owner looks finds the capability full
        // (the slot is spoken for) and joins the back of the line.
        assert_eq!(idx.pick("c", &[], 0).map(|_| ()), Err(PickError::AllFull));
        let (tx3, mut rx3) = line();
        assert_eq!(
            idx.pick_or_wait("c", &[], 0, tx3, None).map(|_| ()),
            Err(PickError::AllFull)
        );
        // The woken owner takes its slot.
        let (tx1, _rx1) = line();
        assert!(idx.pick_or_wait("c", &[], 0, tx1, Some(0)).is_ok());
        // The next slots go in arrival order: the second waiter, then the newcomer.
        hs[0].release();
        assert_eq!(rx2.try_recv(), Ok(0));
        assert!(rx3.try_recv().is_err(), "the newcomer waits its turn");
        let (tx2, _rx2) = line();
        assert!(idx.pick_or_wait("c", &[], 0, tx2, Some(0)).is_ok());
        hs[0].release();
        assert_eq!(rx3.try_recv(), Ok(0));
    }

    #[test]
    fn a_slot_on_an_excluded_instance_is_passed_to_whoever_can_take_it() {
        let (idx, hs) = index(&[1, 1]);
        assert!(idx.pick("c", &[], 0).is_ok());
        assert!(idx.pick("c", &[], 0).is_ok());
        let failed_on_0: Vec<Arc<str>> = vec![hs[0].id.clone()];
        let (tx1, mut rx1) = line();
        let (tx2, mut rx2) = line();
        assert!(idx.pick_or_wait("c", &failed_on_0, 0, tx1, None).is_err());
        assert!(idx.pick_or_wait("c", &[], 0, tx2, None).is_err());
        hs[0].release();
        let hops = rx1
            .try_recv()
            .expect("the first in line is offered the slot");
        // It cannot take it (it failed there): it goes to the back and passes it on.
        let (tx1, mut rx1) = line();
        assert_eq!(
            idx.pick_or_wait("c", &failed_on_0, 0, tx1, Some(hops))
                .map(|_| ()),
            Err(PickError::AllFull)
        );
        assert_eq!(rx2.try_recv(), Ok(1), "the next in line was offered it");
        // A plain pick would queue behind the owner still in line; the woken one takes it.
        let (tx2, _rx2) = line();
        let (_, h) = idx
            .pick_or_wait("c", &[], 0, tx2, Some(1))
            .expect("and takes it");
        assert_eq!(h.id, hs[0].id);
        assert!(rx1.try_recv().is_err());
    }

    #[test]
    fn a_slot_nobody_in_line_can_take_goes_round_the_line_once() {
        let (idx, hs) = index(&[1, 1]);
        assert!(idx.pick("c", &[], 0).is_ok());
        assert!(idx.pick("c", &[], 0).is_ok());
        let failed_on_0: Vec<Arc<str>> = vec![hs[0].id.clone()];
        let mut rxs = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = line();
            assert!(idx.pick_or_wait("c", &failed_on_0, 0, tx, None).is_err());
            rxs.push(rx);
        }
        hs[0].release();
        let mut passes = 0;
        // Each woken waiter looks again and cannot take the slot; the wake stops once
        // every waiter has had it, instead of circling for ever.
        for _ in 0..10 {
            let Some(i) = rxs.iter_mut().position(|r| r.try_recv().is_ok()) else {
                break;
            };
            passes += 1;
            let (tx, rx) = line();
            let _ = idx.pick_or_wait("c", &failed_on_0, 0, tx, Some(passes - 1));
            rxs[i] = rx;
        }
        assert!(passes <= 3, "the wake went round {passes} times");
        assert_eq!(
            idx.waiting("c"),
            2,
            "both still wait for a slot they can use"
        );
        hs[1].release();
        assert!(rxs.iter_mut().any(|r| r.try_recv().is_ok()));
    }

    #[test]
    fn a_removed_instance_wakes_the_whole_line_to_look_again() {
        let (idx, hs) = index(&[1]);
        assert!(idx.pick("c", &[], 0).is_ok());
        let mut rxs = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = line();
            assert!(idx.pick_or_wait("c", &[], 0, tx, None).is_err());
            rxs.push(rx);
        }
        idx.remove(&hs[0].id);
        assert!(rxs.iter_mut().all(|r| r.try_recv().is_ok()));
        let (tx, _rx) = line();
        assert_eq!(
            idx.pick_or_wait("c", &[], 0, tx, None).map(|_| ()),
            Err(PickError::NoCandidate)
        );
    }

    #[test]
    fn an_instance_that_takes_work_again_offers_its_free_slots() {
        let (idx, hs) = index(&[2, 1]);
        for _ in 0..3 {
            assert!(idx.pick("c", &[], 0).is_ok());
        }
        hs[0].set_state(AgentState::Failed);
        let mut rxs = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = line();
            assert!(idx.pick_or_wait("c", &[], 0, tx, None).is_err());
            rxs.push(rx);
        }
        // Its slots free while it is down: the waiters woken look, find nothing usable,
        // and keep their places.
        hs[0].release();
        hs[0].release();
        for r in rxs.iter_mut() {
            let hops = r.try_recv().expect("offered");
            let (tx, rx) = line();
            assert!(idx.pick_or_wait("c", &[], 0, tx, Some(hops)).is_err());
            *r = rx;
        }
        assert_eq!(idx.waiting("c"), 2);
        hs[0].set_state(AgentState::Ready);
        assert!(
            rxs.iter_mut().all(|r| r.try_recv().is_ok()),
            "back at work, it offers both its free slots"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Pick(Vec<usize>),
        Release(usize),
        Stop(usize),
        Restart(usize),
    }

    fn op(n: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => proptest::collection::vec(0..n, 0..3).prop_map(Op::Pick),
            3 => (0..n).prop_map(Op::Release),
            1 => (0..n).prop_map(Op::Stop),
            1 => (0..n).prop_map(Op::Restart),
        ]
    }

    /// Applies an op other than a pick to the instances.
    fn apply(op: &Op, hs: &[Arc<InstanceHandle>]) {
        match op {
            Op::Pick(_) => {}
            Op::Release(i) => {
                if let Some(h) = hs.get(*i) {
                    h.release();
                }
            }
            Op::Stop(i) => {
                if let Some(h) = hs.get(*i) {
                    h.set_state(AgentState::Stopped);
                }
            }
            Op::Restart(i) => {
                if let Some(h) = hs.get(*i) {
                    h.set_state(AgentState::Ready);
                }
            }
        }
    }

    /// The ids of the instances at these positions (out of range ones left out).
    fn ids_of(positions: &[usize], hs: &[Arc<InstanceHandle>]) -> Vec<Arc<str>> {
        positions
            .iter()
            .filter_map(|i| hs.get(*i).map(|h| h.id.clone()))
            .collect()
    }

    proptest! {
        #[test]
        fn the_ordered_pick_chooses_what_the_scan_chose(
            capacities in proptest::collection::vec(1usize..4, 1..12),
            ops in proptest::collection::vec(op(12), 1..120),
        ) {
            let (idx, hs) = index(&capacities);
            let mut cursor = 0;
            for o in ops {
                match o {
                    Op::Pick(ex) => {
                        let exclude = ids_of(&ex, &hs);
                        let want = scanned(&hs, &exclude, cursor);
                        let got = idx.pick("c", &exclude, 0).map(|(_, h)| h);
                        if let Ok(h) = &got {
                            cursor = h.ordinal() + 1;
                        }
                        prop_assert_eq!(got.map(|h| h.id.clone()), want);
                    }
                    other => apply(&other, &hs),
                }
            }
        }
    }

    #[test]
    fn an_unknown_capability_and_a_removed_instance_are_not_picked() {
        let (idx, hs) = index(&[2, 2]);
        assert_eq!(
            idx.pick("other", &[], 0).map(|(_, h)| h.id.clone()),
            Err(PickError::UnknownCapability)
        );
        idx.remove(&hs[0].id);
        for _ in 0..2 {
            assert_eq!(
                idx.pick("c", &[], 0).map(|(_, h)| h.id.clone()),
                Ok(hs[1].id.clone())
            );
        }
        assert_eq!(idx.pick("c", &[], 0).map(|_| ()), Err(PickError::AllFull));
        // The removed instance's releases no longer reach the order.
        hs[0].release();
        assert_eq!(idx.pick("c", &[], 0).map(|_| ()), Err(PickError::AllFull));
        idx.remove(&hs[1].id);
        assert_eq!(
            idx.pick("c", &[], 0).map(|_| ()),
            Err(PickError::NoCandidate)
        );
    }

    #[test]
    fn a_pick_takes_an_idle_instance_of_its_own_shard_then_the_least_loaded_of_any_shard() {
        // t#0, t#2 on shard 0; t#1, t#3 on shard 1; two slots each.
        let (idx, hs) = sharded(&[2, 2, 2, 2], 2);
        let pick = |from| idx.pick("c", &[], from).map(|(_, h)| h.id.clone());
        // Idle instances of the picker's shard first, in registration order.
        assert_eq!(pick(1), Ok(hs[1].id.clone()));
        assert_eq!(pick(1), Ok(hs[3].id.clone()));
        // Shard 1 is busy (load 1 each) and shard 0 idle: the least loaded wins.
        assert_eq!(pick(1), Ok(hs[0].id.clone()));
        assert_eq!(pick(1), Ok(hs[2].id.clone()));
        // Every instance at load 1: a tie goes to the picker's own shard.
        assert_eq!(pick(0), Ok(hs[0].id.clone()));
        assert_eq!(pick(1), Ok(hs[1].id.clone()));
        // Shard 0 full: its pickers take shard 1's last slot, then find all full.
        assert_eq!(pick(0), Ok(hs[2].id.clone()));
        assert_eq!(pick(0), Ok(hs[3].id.clone()));
        assert_eq!(pick(0).map(|_| ()), Err(PickError::AllFull));
        assert_eq!(pick(1).map(|_| ()), Err(PickError::AllFull));
    }

    #[test]
    fn a_slot_freed_on_another_shard_wakes_the_owner_in_line_on_this_one() {
        let (idx, hs) = sharded(&[1, 1], 2);
        assert!(idx.pick("c", &[], 0).is_ok());
        assert!(idx.pick("c", &[], 0).is_ok());
        let (tx, mut rx) = line();
        assert_eq!(
            idx.pick_or_wait("c", &[], 0, tx, None).map(|_| ()),
            Err(PickError::AllFull)
        );
        // A newcomer on shard 1 queues behind the owner in line.
        let (tx2, mut rx2) = line();
        assert!(idx.pick_or_wait("c", &[], 1, tx2, None).is_err());
        assert_eq!(idx.waiting("c"), 2);
        // t#1 lives on shard 1: its freed slot goes to the first in line, of shard 0.
        hs[1].release();
        assert_eq!(rx.try_recv(), Ok(0));
        assert!(rx2.try_recv().is_err());
        let (tx, _rx) = line();
        assert_eq!(
            idx.pick_or_wait("c", &[], 0, tx, Some(0))
                .map(|(_, h)| h.id.clone()),
            Ok(hs[1].id.clone())
        );
        hs[0].release();
        assert_eq!(rx2.try_recv(), Ok(0));
        assert_eq!(idx.waiting("c"), 0);
    }

    proptest! {
        #[test]
        fn across_shards_a_pick_is_as_loaded_as_the_scans_and_stays_home_on_a_tie(
            capacities in proptest::collection::vec(1usize..4, 1..12),
            shards in 1usize..4,
            ops in proptest::collection::vec((op(12), 0usize..4), 1..120),
        ) {
            let (idx, hs) = sharded(&capacities, shards);
            for (o, from) in ops {
                let from = from % shards;
                match o {
                    Op::Pick(ex) => {
                        let exclude = ids_of(&ex, &hs);
                        let want = scanned(&hs, &exclude, 0);
                        let least = want
                            .as_ref()
                            .ok()
                            .and_then(|id| hs.iter().find(|h| h.id == *id))
                            .map(|h| h.load());
                        let home_at_least = hs.iter().any(|h| {
                            h.shard == from
                                && h.available()
                                && h.load() < h.capacity
                                && Some(h.load()) == least
                                && !exclude.contains(&h.id)
                        });
                        match idx.pick("c", &exclude, from) {
                            Ok((_, h)) => {
                                prop_assert_eq!(Some(h.load() - 1), least, "as loaded as the scan's");
                                prop_assert!(!exclude.contains(&h.id));
                                if home_at_least {
                                    prop_assert_eq!(h.shard, from, "a tie stays home");
                                }
                            }
                            Err(e) => prop_assert_eq!(Err::<Arc<str>, _>(e), want),
                        }
                    }
                    other => apply(&other, &hs),
                }
            }
        }
    }

    #[test]
    fn owners_on_several_threads_racing_for_two_slots_are_never_left_waiting_by_a_lost_wake() {
        // One slot on each of two shards; four threads (two per shard) take a slot, give it
        // back, or wait in line. A wake lost between a waiter's look and its joining the
        // line would leave it waiting with both slots free: no backstop here, so the
        // bounded wait below fails the test.
        use tokio::sync::oneshot::error::TryRecvError;
        let (idx, hs) = sharded(&[1, 1], 2);
        let idx = Arc::new(idx);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (idx, hs) = (idx.clone(), hs.clone());
                std::thread::spawn(move || -> Result<(), String> {
                    let mut woken = None;
                    let mut done = 0;
                    while done < 2_000 {
                        let (tx, mut rx) = line();
                        match idx.pick_or_wait("c", &[], t % 2, tx, woken.take()) {
                            Ok((_, h)) => {
                                std::thread::yield_now();
                                h.release();
                                done += 1;
                            }
                            Err(PickError::AllFull) => {
                                let give_up =
                                    std::time::Instant::now() + std::time::Duration::from_secs(10);
                                loop {
                                    match rx.try_recv() {
                                        Ok(hops) => {
                                            woken = Some(hops);
                                            break;
                                        }
                                        // Not in line after all (it lost a slot it
                                        // had found): look again.
                                        Err(TryRecvError::Closed) => break,
                                        Err(_) if std::time::Instant::now() > give_up => {
                                            let loads: Vec<_> =
                                                hs.iter().map(|h| h.load()).collect();
                                            return Err(format!(
                                                "thread {t} waited 10 s with loads {loads:?}"
                                            ));
                                        }
                                        Err(_) => std::thread::yield_now(),
                                    }
                                }
                            }
                            Err(e) => return Err(format!("thread {t}: {e:?}")),
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a picker thread").expect("no lost wake");
        }
        assert!(hs.iter().all(|h| h.load() == 0));
        assert_eq!(idx.waiting("c"), 0);
    }
}
