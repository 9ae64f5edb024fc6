//! Function agents: a Rust closure is an agent (the in-process swarm case).

use std::future::Future;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use serde_json::Value;

use super::agent::{Agent, AgentError, AgentFactory, TaskContext};

/// An agent made of an async closure `Fn(Value, TaskContext) -> Future<Result<Value, AgentError>>`.
///
/// # Example
/// ```
/// use muster_core::FnAgent;
/// use serde_json::json;
///
/// let upper = FnAgent::new(|input, _ctx| async move {
///     let s = input["text"].as_str().unwrap_or_default().to_uppercase();
///     Ok(json!({"text": s}))
/// });
/// # let _ = upper;
/// ```
pub struct FnAgent<F> {
    f: Arc<F>,
}

impl<F> std::fmt::Debug for FnAgent<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnAgent").finish_non_exhaustive()
    }
}

impl<F> Clone for FnAgent<F> {
    fn clone(&self) -> Self {
        FnAgent { f: self.f.clone() }
    }
}

impl<F, Fut> FnAgent<F>
where
    F: Fn(Value, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, AgentError>> + 'static,
{
    /// Wraps a closure.
    pub fn new(f: F) -> Self {
        FnAgent { f: Arc::new(f) }
    }
}

impl<F, Fut> Agent for FnAgent<F>
where
    F: Fn(Value, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, AgentError>> + 'static,
{
    fn handle(
        &self,
        input: Value,
        ctx: TaskContext,
    ) -> LocalBoxFuture<'static, Result<Value, AgentError>> {
        Box::pin((self.f)(input, ctx))
    }
}

impl<F, Fut> AgentFactory for FnAgent<F>
where
    F: Fn(Value, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, AgentError>> + 'static,
{
    fn create(&self, _instance: &str) -> Box<dyn Agent> {
        Box::new(self.clone())
    }
}
