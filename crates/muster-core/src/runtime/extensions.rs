//! Extensions: per-runtime state that layers above the runtime attach to a [`Muster`]
//! handle (the workflow engine keeps its gate table here), so the runtime needs to know
//! nothing of them. One value per type, made on first use.
//!
//! [`Muster`]: super::Muster

use std::any::{Any, TypeId};
use std::sync::Arc;

use dashmap::DashMap;

/// A map from a type to the one value of that type a runtime holds.
#[derive(Default)]
pub struct Extensions(DashMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.0.len())
            .finish()
    }
}

impl Extensions {
    /// The value of type `T`, made with `T::default()` the first time it is asked for.
    pub fn get_or_default<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        let any = self
            .0
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()) as Arc<dyn Any + Send + Sync>)
            .clone();
        match any.downcast::<T>() {
            Ok(t) => t,
            // The entry for `TypeId::of::<T>()` is only ever made from a `T`.
            Err(_) => unreachable!("an extension is stored under its own type id"),
        }
    }
}
