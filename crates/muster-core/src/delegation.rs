//! Delegation: who owns this work.
//!
//! Owns the [`Task`] spec, the [`TaskRecord`] (the delegation record: state machine and
//! full lease history), [`Owners::submit`] that accepts tasks and starts their owners, and
//! the task owner: one state machine per live task, driven by the `OwnerShard` of its
//! thread, that leases the task to one agent at a time under a fresh epoch, watches the
//! attempt, and reassigns it to a different capable agent when it fails, until the task is
//! completed, escalated or cancelled. Beside them: the [`scope_table`], where a task takes
//! the [`Scope`](crate::messaging::Scope) it may touch before its first lease (so two
//! tasks never write the same thing at once), and [`reuse`], where an idempotent task
//! finds work already done or in flight instead of doing it twice. Upholds G1 (every
//! accepted task ends in exactly one terminal state), G2 (one owner at a time; stale
//! epochs fenced) and the task half of G4. The owner, its shard and their messages are
//! private to this module.
//!
//! ```text
//!            submit (input valid)
//!                  │
//!                  ▼
//!   ┌────────▶ pending ──lease(epoch n+1, agent)──▶ leased(n)
//!   │              │                                 │  │  │
//!   │  no agent and deadline passed,                 │  │  └─ result ok, contract ok ─▶ completed
//!   │  or attempts spent ─▶ escalated (gate | dead)  │  └──── cancel ─────────────────▶ cancelled
//!   │                                                │
//!   └──── failed attempt (error, panic, timeout, heartbeat, contract), agent excluded
//!
//!   a result carrying epoch < n is journaled `result_stale` and never accepted
//! ```

pub mod handle;
mod owner;
pub(crate) mod owners;
pub(crate) mod protocol;
pub mod record;
pub mod reuse;
pub mod scope_table;
mod shard;
mod shared;
pub mod stats;
pub mod submit;
pub mod task;
mod timers;
mod written;

pub use handle::TaskHandle;
pub use owners::Owners;
pub use protocol::Accepted;
pub use record::{Escalation, Lease, LeaseOutcome, NoOutput, TaskRecord, TaskStatus};
pub use stats::{Stats, StatsSnapshot};
pub use submit::SubmitError;
pub use task::{Backoff, Exhausted, OnConflict, Task};
