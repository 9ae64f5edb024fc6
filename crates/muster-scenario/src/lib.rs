//! Scenarios: the simulation front end behind `muster sim`.
//!
//! Owns the scenario file ([`Scenario`]: a workflow or a bare capability, a simulated cast,
//! an arrival process, runtime faults, a network between the runtime and the cast's nodes), the [`run`] of a scenario on one thread on tokio's
//! paused clock, and the [`TallyJournal`] that digests and counts the journal as it is
//! written, so the report is computed from the records, never from the runtime's own
//! counters. The simulated agents themselves are an ordinary backend
//! ([`muster_sim`]): this module only casts them, drives work at them and reads
//! what the journal says happened. It must not reach into the runtime: simulated faults
//! reach owners and supervisors exactly as real ones do (G6: same seed, same journal).
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod file;
pub mod runner;
mod tally;

pub use file::{Arrival, MAX_COUNT, RuntimeFault, Scenario, ScenarioError, Target};
pub use runner::{
    EffectCounts, NetworkReport, Progress, RssMarks, SimError, SimOptions, SimReport, run,
};
pub use tally::{Fnv1a, Latencies, TALLY_WINDOW, Tally, TallyJournal};
