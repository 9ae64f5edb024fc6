//! The capability index: who serves what, readable without a round trip.
//!
//! Written only by the [`Registry`](super::Registry) actor; read by the router and by task
//! owners on the hot path. Each instance's load and state are atomics in its
//! [`InstanceHandle`], updated by the router (reservations) and the instance itself.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::Addr;
use dashmap::DashMap;
use serde::Serialize;

use super::capability::Capability;
use crate::agents::{AgentInstance, AgentState};

/// A live agent instance as the index sees it.
#[derive(Debug)]
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
    pub(crate) addr: Addr<AgentInstance>,
    load: AtomicUsize,
    state: AtomicU8,
}

impl InstanceHandle {
    pub(crate) fn new(
        id: Arc<str>,
        agent: Arc<str>,
        generation: u64,
        capabilities: Vec<Arc<str>>,
        concurrency: usize,
        capacity: usize,
        addr: Addr<AgentInstance>,
    ) -> Self {
        InstanceHandle {
            id,
            agent,
            ordinal: AtomicU64::new(0),
            generation,
            capabilities,
            concurrency,
            capacity,
            addr,
            load: AtomicUsize::new(0),
            state: AtomicU8::new(AgentState::Starting as u8),
        }
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
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// Whether it takes work now.
    pub fn available(&self) -> bool {
        matches!(self.state(), AgentState::Ready | AgentState::Busy) && self.addr.connected()
    }

    /// Reserves one slot; false when full.
    pub(crate) fn try_reserve(&self) -> bool {
        let mut cur = self.load.load(Ordering::Relaxed);
        loop {
            if cur >= self.capacity {
                return false;
            }
            match self
                .load
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    pub(crate) fn release(&self) {
        let _ = self
            .load
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |l| l.checked_sub(1));
    }
}

/// One capability: its contract and the instances serving it, in registration order.
#[derive(Debug, Clone)]
pub struct CapabilityEntry {
    /// The compiled contract.
    pub contract: Arc<Capability>,
    /// Who declared it first.
    pub declared_by: Arc<str>,
    /// Serving instances.
    pub instances: Vec<Arc<InstanceHandle>>,
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
#[derive(Debug, Default)]
pub struct CapabilityIndex {
    caps: DashMap<Arc<str>, CapabilityEntry>,
    agents: DashMap<Arc<str>, Arc<InstanceHandle>>,
}

impl CapabilityIndex {
    /// The contract of a capability, if declared.
    pub fn contract(&self, capability: &str) -> Option<Arc<Capability>> {
        self.caps.get(capability).map(|e| e.contract.clone())
    }

    /// The live handle of an instance.
    pub fn agent(&self, id: &str) -> Option<Arc<InstanceHandle>> {
        self.agents.get(id).map(|h| h.value().clone())
    }

    /// Picks the least-loaded available instance of a capability outside `exclude`, ties
    /// broken by registration order (deterministic), and reserves a slot on it.
    pub fn pick(
        &self,
        capability: &str,
        exclude: &[Arc<str>],
    ) -> Result<(Arc<Capability>, Arc<InstanceHandle>), PickError> {
        let entry = self
            .caps
            .get(capability)
            .ok_or(PickError::UnknownCapability)?;
        let mut any = false;
        loop {
            let mut best: Option<&Arc<InstanceHandle>> = None;
            for h in &entry.instances {
                if !h.available() || exclude.iter().any(|x| **x == *h.id) {
                    continue;
                }
                any = true;
                let load = h.load();
                if load >= h.capacity {
                    continue;
                }
                match best {
                    Some(b) if b.load() <= load => {}
                    _ => best = Some(h),
                }
                if load == 0 {
                    break;
                }
            }
            match best {
                Some(h) if h.try_reserve() => return Ok((entry.contract.clone(), h.clone())),
                // lost a race for the last slot: look again
                Some(_) => continue,
                None if any => return Err(PickError::AllFull),
                None => return Err(PickError::NoCandidate),
            }
        }
    }

    /// Candidate ids for a capability outside `exclude`, least-loaded first, ties by
    /// registration order.
    pub fn candidates(&self, capability: &str, exclude: &[Arc<str>]) -> Vec<Arc<str>> {
        let Some(entry) = self.caps.get(capability) else {
            return Vec::new();
        };
        let mut v: Vec<_> = entry
            .instances
            .iter()
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

    // ---- writes: only the registry actor calls these ----

    /// Whether `contract` agrees with the capability's declared contract, if any.
    pub(crate) fn check_contract(
        &self,
        contract: &Capability,
    ) -> Result<(), super::capability::CapabilityError> {
        match self.caps.get(contract.name.as_ref()) {
            Some(e) => e.contract.same_contract(&contract.spec).map_err(|what| {
                super::capability::CapabilityError::Conflict {
                    capability: contract.name.to_string(),
                    by: e.declared_by.to_string(),
                    what,
                }
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn declare(
        &self,
        contract: Arc<Capability>,
        by: &Arc<str>,
    ) -> Result<(), super::capability::CapabilityError> {
        if self.caps.contains_key(contract.name.as_ref()) {
            return self.check_contract(&contract);
        }
        self.caps.insert(
            contract.name.clone(),
            CapabilityEntry {
                contract,
                declared_by: by.clone(),
                instances: Vec::new(),
            },
        );
        Ok(())
    }

    pub(crate) fn insert(&self, handle: Arc<InstanceHandle>) {
        self.remove(&handle.id);
        for c in &handle.capabilities {
            if let Some(mut e) = self.caps.get_mut(c.as_ref()) {
                e.instances.push(handle.clone());
                e.instances.sort_by_key(|h| h.ordinal());
            }
        }
        self.agents.insert(handle.id.clone(), handle);
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Arc<InstanceHandle>> {
        let (_, h) = self.agents.remove(id)?;
        for c in &h.capabilities {
            if let Some(mut e) = self.caps.get_mut(c.as_ref()) {
                e.instances.retain(|x| *x.id != *id);
            }
        }
        Some(h)
    }
}
