//! The capability index: who serves what, readable without a round trip.
//!
//! Written only by the [`Registry`](super::Registry) actor; read by the router and by task
//! owners on the hot path. Each instance's load and state are atomics in its
//! [`InstanceHandle`], updated by the router (reservations) and the instance itself.

use std::sync::Arc;

use dashmap::DashMap;
use serde::Serialize;

use crate::agents::protocol::AgentState;
use crate::agents::InstanceHandle;
use crate::messaging::capability::{Capability, CapabilityError};

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
    pub(crate) fn check_contract(&self, contract: &Capability) -> Result<(), CapabilityError> {
        match self.caps.get(contract.name.as_ref()) {
            Some(e) => {
                e.contract
                    .same_contract(&contract.spec)
                    .map_err(|what| CapabilityError::Conflict {
                        capability: contract.name.to_string(),
                        by: e.declared_by.to_string(),
                        what,
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
