//! Bounded bookkeeping for telemetry: a cap on the distinct values a label may take (the
//! rest fold into `other`), and a map of open items that evicts its oldest entry past a
//! cap. Both keep memory bounded whatever the journal holds; neither knows what it counts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

/// The label value every value past the cap folds into.
pub const OTHER: &str = "other";

/// Admits the first `cap` distinct values of a label; every later one is [`OTHER`].
///
/// # Example
/// ```
/// use muster_telemetry::LabelCap;
///
/// let mut agents = LabelCap::new(2);
/// assert_eq!(agents.label("a#0"), "a#0");
/// assert_eq!(agents.label("b#0"), "b#0");
/// assert_eq!(agents.label("c#0"), "other"); // a third distinct value folds
/// assert_eq!(agents.label("a#0"), "a#0"); // admitted values stay
/// ```
#[derive(Debug, Clone)]
pub struct LabelCap {
    cap: usize,
    admitted: HashSet<String>,
}

impl LabelCap {
    /// A cap of `cap` distinct values.
    pub fn new(cap: usize) -> Self {
        LabelCap {
            cap,
            admitted: HashSet::new(),
        }
    }

    /// The label for `value`: itself if admitted (now or before), [`OTHER`] otherwise.
    pub fn label(&mut self, value: &str) -> String {
        if self.admitted.contains(value) {
            return value.to_string();
        }
        if self.admitted.len() < self.cap && value != OTHER {
            self.admitted.insert(value.to_string());
            return value.to_string();
        }
        OTHER.to_string()
    }
}

/// A map that keeps at most `cap` entries, evicting the oldest inserted first.
#[derive(Debug)]
pub(crate) struct Bounded<K, V> {
    cap: usize,
    next: u64,
    order: BTreeMap<u64, K>,
    items: HashMap<K, (u64, V)>,
    evicted: u64,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        Bounded {
            cap: cap.max(1),
            next: 0,
            order: BTreeMap::new(),
            items: HashMap::new(),
            evicted: 0,
        }
    }

    /// Inserts (or replaces) `k`; returns the entry evicted to make room, if any.
    pub(crate) fn insert(&mut self, k: K, v: V) -> Option<(K, V)> {
        self.remove(&k);
        let mut out = None;
        if self.items.len() >= self.cap
            && let Some((_, old)) = self.order.pop_first()
            && let Some((_, v)) = self.items.remove(&old)
        {
            self.evicted += 1;
            out = Some((old, v));
        }
        self.next += 1;
        self.order.insert(self.next, k.clone());
        self.items.insert(k, (self.next, v));
        out
    }

    pub(crate) fn remove(&mut self, k: &K) -> Option<V> {
        let (n, v) = self.items.remove(k)?;
        self.order.remove(&n);
        Some(v)
    }

    pub(crate) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.items.get_mut(k).map(|(_, v)| v)
    }

    pub(crate) fn contains(&self, k: &K) -> bool {
        self.items.contains_key(k)
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Entries evicted to keep the cap, ever.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entry_is_evicted_past_the_cap() {
        let mut m = Bounded::new(2);
        assert!(m.insert(1, "a").is_none());
        assert!(m.insert(2, "b").is_none());
        assert_eq!(m.insert(3, "c"), Some((1, "a")));
        assert_eq!(m.remove(&2), Some("b"));
        assert!(m.insert(4, "d").is_none());
        assert_eq!((m.len(), m.evicted()), (2, 1));
    }

    #[test]
    fn the_literal_other_is_never_admitted_as_a_value_of_its_own() {
        let mut c = LabelCap::new(5);
        assert_eq!(c.label(OTHER), OTHER);
        assert_eq!(c.admitted.len(), 0);
    }
}
