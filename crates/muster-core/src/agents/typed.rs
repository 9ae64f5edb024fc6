//! Typed capabilities: Rust input and output types whose JSON Schemas are derived
//! (schemars), so a Rust user writes no JSON Schema by hand.
//!
//! The contract still crosses every boundary as JSON Schema (the runtime validates payloads
//! exactly as for any other agent, G3); this module only derives the schemas and converts
//! between the types and JSON at the agent's edge.

use std::future::Future;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::agent::{AgentError, TaskContext};
use super::def::AgentDef;
use super::function::FnAgent;
use crate::messaging::CapabilitySpec;

/// The schema name and the derived JSON Schema (draft 2020-12) of a Rust type.
///
/// # Example
/// ```
/// use muster_core::agents::typed::schema_of;
///
/// #[derive(schemars::JsonSchema, serde::Deserialize)]
/// struct Greeting { name: String }
///
/// let (name, schema) = schema_of::<Greeting>();
/// assert_eq!(name, "Greeting");
/// assert_eq!(schema["required"][0], "name");
/// ```
pub fn schema_of<T: JsonSchema>() -> (String, Value) {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
    let doc = serde_json::to_value(schema).unwrap_or(Value::Bool(true));
    (T::schema_name().into_owned(), doc)
}

impl AgentDef {
    /// An agent type serving `capability` with a typed async closure. The capability's
    /// input and output schemas are derived from `I` and `O` and registered with the agent;
    /// the closure receives a deserialized `I` and returns an `O`.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use muster_core::{AgentDef, Muster, Task};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    /// struct Sum { a: i64, b: i64 }
    /// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    /// struct Total { total: i64 }
    ///
    /// let muster = Muster::builder()
    ///     .agent(AgentDef::typed("adder", "math.add", |s: Sum, _ctx| async move {
    ///         Ok(Total { total: s.a + s.b })
    ///     }))
    ///     .start()
    ///     .await?;
    /// let out = muster.delegate(Task::typed("math.add", &Sum { a: 2, b: 3 })?).await?;
    /// assert_eq!(out.output_as::<Total>().transpose()?.map(|t| t.total), Some(5));
    /// # Ok(()) }
    /// ```
    pub fn typed<I, O, F, Fut>(name: impl Into<String>, capability: &str, f: F) -> Self
    where
        I: DeserializeOwned + JsonSchema + 'static,
        O: Serialize + JsonSchema + 'static,
        F: Fn(I, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, AgentError>> + 'static,
    {
        let (in_name, in_schema) = schema_of::<I>();
        let (out_name, out_schema) = schema_of::<O>();
        let f = Arc::new(f);
        let agent = FnAgent::new(move |input: Value, ctx: TaskContext| {
            let call = serde_json::from_value::<I>(input).map(|i| f(i, ctx));
            async move {
                let fut = call
                    .map_err(|e| AgentError::new(format!("the input does not deserialize: {e}")))?;
                let out = fut.await?;
                serde_json::to_value(out)
                    .map_err(|e| AgentError::new(format!("the output does not serialize: {e}")))
            }
        });
        let mut def = AgentDef::new(name, agent)
            .capability(CapabilitySpec::new(capability, &in_name, &out_name));
        def.schemas.push((in_name, in_schema));
        def.schemas.push((out_name, out_schema));
        def
    }
}
