//! Resuming a journal: the one sequence `muster resume`, `muster serve` (at start) and a
//! cluster node taking over runs share. Read the journal's records once into
//! [`Unfinished`] (every unfinished run, rebuilt by [`recovery`](super::recovery), and the
//! scopes the dead process's tasks held); then, for each run, give its tasks their scopes
//! back and finish it ([`resume`], or [`Unfinished::restore_scopes`] before a caller's own
//! [`resume_run`](super::WorkflowExt::resume_run)).
//!
//! It upholds G1 and G2 across a crash as recovery and the engine do, and keeps scopes
//! exclusive across it: a resubmitted task gets back the scope it held before anything
//! else can take it. It must not read the journal itself or load workflow files: the
//! caller hands it the records and pairs each run with its workflow.

use std::sync::Arc;

use uuid::Uuid;

use super::Workflow;
use super::engine::{RunError, RunOptions, WorkflowExt};
use super::outcome::RunOutcome;
use super::recovery::{RecoveredRun, recover};
use muster_core::delegation::scope_table::held_at;
use muster_core::journal::Record;
use muster_core::messaging::Scope;
use muster_core::runtime::Muster;

/// What a journal leaves to finish: its unfinished runs and the scopes their tasks held.
///
/// # Example
/// ```no_run
/// # async fn demo(muster: muster_core::Muster, wf: std::sync::Arc<muster_workflow::Workflow>)
/// #     -> Result<(), Box<dyn std::error::Error>> {
/// use muster_workflow::{engine::RunOptions, resume, Unfinished};
///
/// let Unfinished { runs, held } = Unfinished::of(&muster.journal().read_after(0));
/// for run in runs {
///     let outcome = resume::resume(&muster, wf.clone(), run, &held, RunOptions::default()).await?;
///     println!("{:?}", outcome.status);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Unfinished {
    /// Every run that has not ended ([`recover`]), in the order they started.
    pub runs: Vec<RecoveredRun>,
    /// The scopes held by tasks when the journal ended
    /// ([`held_at`](muster_core::delegation::scope_table::held_at)).
    pub held: Vec<(Uuid, Scope)>,
}

impl Unfinished {
    /// What `records` (a whole journal, read from its start) leave to finish.
    pub fn of(records: &[Record]) -> Self {
        Unfinished {
            runs: recover(records),
            held: held_at(records),
        }
    }

    /// Whether every run has ended.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Gives back to `muster` the scopes the tasks of `rec` held (see [`restore_scopes`]).
    pub fn restore_scopes(&self, muster: &Muster, rec: &RecoveredRun) {
        restore_scopes(muster, rec, &self.held);
    }
}

/// Gives back to `muster` the scopes, among `held`, that the tasks `rec` has in flight
/// held ([`Muster::restore_scopes`]): call it before the run resumes, so each resubmitted
/// task gets its scope at once and no other task takes it first.
pub fn restore_scopes(muster: &Muster, rec: &RecoveredRun, held: &[(Uuid, Scope)]) {
    let mine = rec.in_flight();
    muster.restore_scopes(
        held.iter()
            .filter(|(t, _)| mine.contains(t))
            .cloned()
            .collect(),
    );
}

/// Finishes an unfinished run of a journal: its tasks' scopes back ([`restore_scopes`]),
/// then [`WorkflowExt::resume_run`] with `wf` (the workflow the run was started with).
pub async fn resume(
    muster: &Muster,
    wf: Arc<Workflow>,
    rec: RecoveredRun,
    held: &[(Uuid, Scope)],
    opts: RunOptions,
) -> Result<RunOutcome, RunError> {
    restore_scopes(muster, &rec, held);
    muster.resume_run(wf, rec, opts).await
}
