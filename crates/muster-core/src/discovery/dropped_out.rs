//! Agent types that dropped out: which capabilities each type declared and, once its
//! supervisor gave up, why. A capability whose every declaring type dropped out, with no
//! instance left serving it, is [`Abandoned`]: nobody is coming, so a task for it need
//! not wait out its deadline (OTP: a restart in progress is still coming, and is waited
//! for; only a supervisor that gave up means gone).

use std::sync::Arc;

use dashmap::DashMap;

/// One agent type: what it declared, and why it dropped out if it did.
#[derive(Debug, Default)]
struct TypeEntry {
    capabilities: Vec<Arc<str>>,
    gone: Option<Arc<str>>,
}

/// Agent type → its capabilities and its drop-out reason. Written by the registry only.
#[derive(Debug, Default)]
pub(super) struct AgentTypes {
    types: DashMap<Arc<str>, TypeEntry>,
}

impl AgentTypes {
    /// `agent_type` declares `capability` (and is back if it had dropped out).
    pub(super) fn declare(&self, agent_type: &Arc<str>, capability: &Arc<str>) {
        let mut e = self.types.entry(agent_type.clone()).or_default();
        if !e.capabilities.contains(capability) {
            e.capabilities.push(capability.clone());
        }
        e.gone = None;
    }

    /// An instance of `agent_type` registered: the type is back.
    pub(super) fn revive(&self, agent_type: &str) {
        if let Some(mut e) = self.types.get_mut(agent_type) {
            e.gone = None;
        }
    }

    /// `agent_type`'s supervisor gave up; returns the capabilities it declared.
    pub(super) fn gone(&self, agent_type: &Arc<str>, reason: &str) -> Vec<Arc<str>> {
        let mut e = self.types.entry(agent_type.clone()).or_default();
        e.gone = Some(Arc::from(reason));
        e.capabilities.clone()
    }

    /// Why `agent_type` dropped out, if it did (and was not registered again).
    pub(super) fn reason(&self, agent_type: &str) -> Option<Arc<str>> {
        self.types.get(agent_type).and_then(|e| e.gone.clone())
    }

    /// The types that declared `capability`, each with its drop-out reason if it has one;
    /// sorted by name.
    pub(super) fn serving(&self, capability: &str) -> Vec<(Arc<str>, Option<Arc<str>>)> {
        let mut v: Vec<_> = self
            .types
            .iter()
            .filter(|e| e.capabilities.iter().any(|c| **c == *capability))
            .map(|e| (e.key().clone(), e.gone.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// A capability nobody will serve: every agent type that declared it dropped out (its
/// supervisor gave up) and no instance of it is left. What a task for it escalates with,
/// as failure kind `no_capable_agent`.
///
/// # Example
/// ```
/// use muster_core::discovery::Abandoned;
///
/// let a = Abandoned {
///     capability: "review".into(),
///     dropped: vec![("reviewer".into(), "`nope` not found on PATH".into())],
/// };
/// assert_eq!(
///     a.to_string(),
///     "every agent type serving `review` dropped out: `reviewer` (`nope` not found on PATH)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abandoned {
    /// The capability.
    pub capability: Arc<str>,
    /// Each agent type that declared it, with why it dropped out (its supervisor's report).
    pub dropped: Vec<(Arc<str>, Arc<str>)>,
}

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "every agent type serving `{}` dropped out: ",
            self.capability
        )?;
        for (i, (agent_type, reason)) in self.dropped.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "`{agent_type}` ({reason})")?;
        }
        Ok(())
    }
}
