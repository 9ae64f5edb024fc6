//! The handles most programs use, in one import: `use muster_core::prelude::*;`.
//!
//! The runtime ([`Muster`]), agent definitions ([`AgentDef`], [`Agent`], [`TaskContext`],
//! [`AgentError`]), capabilities ([`CapabilitySpec`]), tasks and their records ([`Task`],
//! [`TaskHandle`], [`TaskRecord`], [`TaskStatus`], [`SubmitError`]), envelopes
//! ([`Envelope`], [`Recipient`], [`DeliveryFailure`]), scopes ([`Scope`]) and supervision
//! ([`Restart`], [`Strategy`], [`Supervision`]). Everything else is reached by its module.
//!
//! # Example
//! ```no_run
//! use muster_core::prelude::*;
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let muster = Muster::builder()
//!     .schema("any", json!({}))
//!     .agent(
//!         AgentDef::function("echo", |input, _ctx: TaskContext| async move { Ok(input) })
//!             .capability(CapabilitySpec::new("echo", "any", "any")),
//!     )
//!     .start()
//!     .await?;
//! let record: TaskRecord = muster.delegate(Task::new("echo", json!({"x": 1}))).await?;
//! assert_eq!(record.status, TaskStatus::Completed);
//! # Ok(()) }
//! ```

pub use crate::agents::{Agent, AgentDef, AgentError, TaskContext};
pub use crate::delegation::{SubmitError, Task, TaskHandle, TaskRecord, TaskStatus};
pub use crate::messaging::{CapabilitySpec, DeliveryFailure, Envelope, Recipient, Scope};
pub use crate::runtime::Muster;
pub use crate::supervision::{Restart, Strategy, Supervision};
