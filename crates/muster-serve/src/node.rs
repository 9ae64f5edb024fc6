//! The node: the part of `muster serve` that lives on the runtime's thread. It starts and
//! resumes workflow runs, submits tasks, decides gates exactly once, cancels runs, and
//! stops everything in order at shutdown.
//!
//! It owns the table of runs it drives ([`Live`], shared with the handlers for reading)
//! and the gates it has decided. It must not answer HTTP (the routes do) nor read the
//! journal on a request's behalf beyond what cancelling a run needs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::admission::DEFAULT_MAX_RUNS;
use super::protocol::{Cancelled, Command, DecideRefused, RetryRefused, RunsFull};
use muster_cluster::failover::{Failover, Takeover};
use muster_core::journal::Event;
use muster_core::runtime::Muster;
use muster_workflow::engine::RunOptions;
use muster_workflow::{
    Decision, RecoveredRun, Unfinished, Workflow, WorkflowExt, recovery, resume,
};

/// How long a decision waits for a run that has journaled `gate_waiting` to park at the
/// gate (the journal write comes first), in 10 ms steps.
pub const DECIDE_RETRIES: u32 = 200;

/// The runs this node drives now, and the gates it decided for them (kept while the run
/// lives). Shared with the handlers, which read it to tell `running` from `unfinished`.
///
/// # Example
/// ```
/// use muster_serve::Live;
///
/// let live = Live::default();
/// assert!(!live.contains(uuid::Uuid::now_v7()));
/// assert_eq!(live.len(), 0);
/// ```
#[derive(Debug, Default)]
pub struct Live {
    runs: Mutex<HashMap<Uuid, LiveRun>>,
    decided: Mutex<HashMap<(Uuid, String), bool>>,
    resuming: Mutex<Resuming>,
    /// Failed runs this process retries now, each with its retry: a second retry of one
    /// is refused even before the first's records are written. An entry goes when its
    /// retry's drive ends (by then the journal says `run_retried`, or the retry never
    /// started), so the map holds no more than the runs in flight.
    retried: Mutex<HashMap<Uuid, Uuid>>,
    /// How many entries left `retried`, and the failed runs of the last [`ENDED_KEPT`]
    /// of them with their number: a retry request of a run whose retry ended after the
    /// request read the journal may have missed its `run_retried`, and reads it again.
    retries_ended: AtomicU64,
    ended: Mutex<std::collections::VecDeque<(u64, Uuid)>>,
}

/// How many ended retries a node remembers to tell a stale retry plan (a request that
/// read the journal more than this many retry ends ago reads it again).
const ENDED_KEPT: usize = 1024;

/// The unfinished runs of the journal that the node resumes after it starts to serve.
#[derive(Debug, Default)]
struct Resuming {
    /// Runs not resumed yet.
    pending: HashSet<Uuid>,
    /// How many there were at start.
    total: usize,
}

#[derive(Debug)]
struct LiveRun {
    workflow: String,
    handle: Option<tokio::task::JoinHandle<()>>,
    /// The token that started it through the API ([`Caller::id`](crate::Caller::id));
    /// forgotten with the run when it ends.
    started_by: Option<usize>,
    /// The failed run it retries, if it is a retry this process started.
    retry_of: Option<Uuid>,
}

impl Live {
    /// Whether this node drives the run now.
    pub fn contains(&self, run: Uuid) -> bool {
        self.runs.lock().contains_key(&run)
    }

    /// How many runs this node drives now.
    pub fn len(&self) -> usize {
        self.runs.lock().len()
    }

    /// Whether it drives none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The workflow of a run it drives.
    pub fn workflow(&self, run: Uuid) -> Option<String> {
        self.runs.lock().get(&run).map(|r| r.workflow.clone())
    }

    /// The token ([`Caller::id`](crate::Caller::id)) that started a run this node drives,
    /// if it was started through the API by this process.
    ///
    /// # Example
    /// ```
    /// use muster_serve::Live;
    ///
    /// assert_eq!(Live::default().started_by(uuid::Uuid::now_v7()), None);
    /// ```
    pub fn started_by(&self, run: Uuid) -> Option<usize> {
        self.runs.lock().get(&run).and_then(|r| r.started_by)
    }

    /// Notes the runs the node will resume (in the background, once it serves).
    pub fn will_resume(&self, runs: impl IntoIterator<Item = Uuid>) {
        let mut r = self.resuming.lock();
        r.pending.extend(runs);
        r.total = r.pending.len();
    }

    /// Notes that a run is resumed (or could not be).
    pub fn resumed(&self, run: Uuid) {
        self.resuming.lock().pending.remove(&run);
    }

    /// Whether `run` waits to be resumed: a decision or a cancel must come back later.
    pub fn is_pending(&self, run: Uuid) -> bool {
        self.resuming.lock().pending.contains(&run)
    }

    /// How far resumption has got: `(resumed, of)`; equal once the node is ready.
    ///
    /// # Example
    /// ```
    /// use muster_serve::Live;
    ///
    /// let live = Live::default();
    /// let run = uuid::Uuid::now_v7();
    /// live.will_resume([run]);
    /// assert_eq!(live.resume_progress(), (0, 1));
    /// live.resumed(run);
    /// assert_eq!(live.resume_progress(), (1, 1));
    /// ```
    pub fn resume_progress(&self) -> (usize, usize) {
        let r = self.resuming.lock();
        (r.total - r.pending.len(), r.total)
    }

    fn finished(&self, run: Uuid) {
        let retry_of = self.runs.lock().remove(&run).and_then(|r| r.retry_of);
        self.decided.lock().retain(|(r, _), _| *r != run);
        if let Some(from) = retry_of {
            let mut ended = self.ended.lock();
            self.retried.lock().remove(&from);
            let n = self.retries_ended.fetch_add(1, Ordering::SeqCst) + 1;
            if ended.len() == ENDED_KEPT {
                ended.pop_front();
            }
            ended.push_back((n, from));
        }
    }

    /// How many retries this process drove have ended: taken before a retry request reads
    /// the journal, and handed to [`Command::RetryRun`] so the node can tell a plan read
    /// before an earlier retry of the same run was written.
    pub fn retries_ended(&self) -> u64 {
        self.retries_ended.load(Ordering::SeqCst)
    }

    /// Whether failed run `from` may be retried by a request that planned it from the
    /// journal as it was when [`retries_ended`](Self::retries_ended) was `read_at`: not
    /// while this process retries it, and not on a plan read before a retry ended (that
    /// retry may have been of `from`, its `run_retried` written after the read).
    fn may_retry(&self, from: Uuid, read_at: u64) -> Result<(), RetryRefused> {
        let ended = self.ended.lock();
        if let Some(&retry) = self.retried.lock().get(&from) {
            return Err(RetryRefused::Retried(retry));
        }
        // Retries of other runs that ended since do not matter; one that ended longer ago
        // than the ring remembers might have been of `from`.
        let forgotten = ended.front().is_some_and(|&(n, _)| n > read_at + 1);
        let of_from = ended.iter().any(|&(n, f)| n > read_at && f == from);
        if forgotten || of_from {
            return Err(RetryRefused::ReadAgain);
        }
        Ok(())
    }

    /// How many failed runs this process retries now.
    #[cfg(test)]
    fn retrying(&self) -> usize {
        self.retried.lock().len()
    }
}

/// The node's half on the runtime thread.
pub struct Node {
    muster: Muster,
    live: Arc<Live>,
    tx: mpsc::Sender<Command>,
    cluster: Option<Clustered>,
    max_runs: usize,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").finish_non_exhaustive()
    }
}

/// What a control node of a cluster adds: its run leases, and the workflows by name (a
/// run taken over is resumed with the workflow of the same name).
struct Clustered {
    failover: Failover,
    workflows: Arc<BTreeMap<String, Arc<Workflow>>>,
}

impl Node {
    /// A node driving runs on `muster`; `tx` is the sender of its own command queue (a
    /// decision that must look again re-queues itself through it).
    pub fn new(muster: Muster, live: Arc<Live>, tx: mpsc::Sender<Command>) -> Self {
        Node {
            muster,
            live,
            tx,
            cluster: None,
            max_runs: DEFAULT_MAX_RUNS,
        }
    }

    /// The same node, starting a run only while it drives fewer than `max` runs (resumed
    /// and taken-over runs count; they are never refused).
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(muster: muster_core::Muster) {
    /// use std::sync::Arc;
    /// use muster_serve::{Live, Node};
    ///
    /// let (tx, _rx) = tokio::sync::mpsc::channel(16);
    /// let node = Node::new(muster, Arc::new(Live::default()), tx).max_runs(2);
    /// # let _ = node;
    /// # }
    /// ```
    pub fn max_runs(mut self, max: usize) -> Self {
        self.max_runs = max;
        self
    }

    /// The same node as a control node of a cluster: every run it starts is leased
    /// through `failover` (released when it ends), and runs won from a control node that
    /// left are resumed with the workflow of their name in `workflows`.
    pub fn clustered(
        mut self,
        failover: Failover,
        workflows: Arc<BTreeMap<String, Arc<Workflow>>>,
    ) -> Self {
        self.cluster = Some(Clustered {
            failover,
            workflows,
        });
        self
    }

    /// Serves commands until `rx` closes or `stop` fires. Runs on the runtime's thread.
    pub async fn serve(
        &self,
        mut rx: mpsc::Receiver<Command>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => self.handle(c),
                    None => break,
                },
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }

    fn handle(&self, c: Command) {
        match c {
            Command::TakeOver(t) => self.take_over(*t),
            Command::Resume {
                workflow,
                run,
                held,
            } => {
                let id = run.run;
                self.resume(workflow, *run, &held);
                self.live.resumed(id);
            }
            Command::StartRun {
                workflow,
                input,
                by,
                reply,
            } => {
                // Checked and taken on this thread, the only one that adds runs: the
                // bound holds however many requests race for the last place.
                if let Err(full) = self.room() {
                    let _ = reply.send(Err(full));
                    return;
                }
                let id = self.muster.new_id();
                self.drive(id, workflow, Start::Fresh(input), by);
                let _ = reply.send(Ok(id));
            }
            Command::RetryRun {
                workflow,
                plan,
                by,
                read_at,
                reply,
            } => {
                // On this thread, like a start: the bound holds, and of two retries of one
                // run racing here the second finds the first.
                if let Err(refused) = self.live.may_retry(plan.from, read_at) {
                    let _ = reply.send(Err(refused));
                    return;
                }
                if let Err(full) = self.room() {
                    let _ = reply.send(Err(RetryRefused::Full(full)));
                    return;
                }
                let id = self.muster.new_id();
                self.live.retried.lock().insert(plan.from, id);
                // Taken here, so another request for `plan.from` is refused at once.
                self.drive(id, workflow, Start::Retry(plan), by);
                let _ = reply.send(Ok(id));
            }
            Command::SubmitTask { task, slot, reply } => {
                let muster = self.muster.clone();
                actix::spawn(async move {
                    let handle = match muster.submit(*task).await {
                        Ok(h) => h,
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            return;
                        }
                    };
                    let _ = reply.send(Ok(handle.id()));
                    // The admission slot is held until the task ends.
                    let _ = handle.outcome().await;
                    drop(slot);
                });
            }
            Command::CancelTask { task, reply } => {
                let muster = self.muster.clone();
                actix::spawn(async move {
                    let _ = reply.send(muster.cancel(task).await);
                });
            }
            Command::Decide {
                run,
                gate,
                approved,
                note,
                by,
                retries,
                reply,
            } => {
                // Decisions are taken one at a time on this thread: the first one finds
                // the run parked and takes its gate; every later one finds it decided.
                let key = (run, gate.clone());
                if let Some(&a) = self.live.decided.lock().get(&key) {
                    let _ = reply.send(Err(DecideRefused::AlreadyDecided { approved: a }));
                    return;
                }
                if self.muster.is_waiting(run, &gate) {
                    let reason = attributed(by.as_deref(), &note);
                    let decision = if approved {
                        Decision::Approve { reason }
                    } else {
                        Decision::Reject { reason }
                    };
                    let r = self
                        .muster
                        .approve(run, &gate, decision)
                        .map_err(|_| DecideRefused::NotWaiting);
                    if r.is_ok() {
                        self.live.decided.lock().insert(key, approved);
                    }
                    let _ = reply.send(r);
                } else if retries > 0 && self.live.contains(run) {
                    let tx = self.tx.clone();
                    actix::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        let again = Command::Decide {
                            run,
                            gate,
                            approved,
                            note,
                            by,
                            retries: retries - 1,
                            reply,
                        };
                        if let Err(mpsc::error::SendError(Command::Decide { reply, .. })) =
                            tx.send(again).await
                        {
                            let _ = reply.send(Err(DecideRefused::NotWaiting));
                        }
                    });
                } else {
                    let _ = reply.send(Err(DecideRefused::NotWaiting));
                }
            }
            Command::CancelRun {
                run,
                reason,
                by,
                only_if_started_by,
                reply,
            } => {
                let handle = {
                    let mut runs = self.live.runs.lock();
                    match runs.get(&run) {
                        None => None,
                        Some(r)
                            if only_if_started_by.is_some()
                                && r.started_by != only_if_started_by =>
                        {
                            drop(runs);
                            let _ = reply.send(Cancelled::NotStarter);
                            return;
                        }
                        Some(_) => runs.remove(&run),
                    }
                };
                let Some(lr) = handle else {
                    let _ = reply.send(Cancelled::NotDriven);
                    return;
                };
                // The run's future is dropped before its tasks are cancelled, so the engine
                // does not see the cancellations and fail the run itself.
                if let Some(h) = lr.handle {
                    h.abort();
                }
                self.live.finished(run);
                let muster = self.muster.clone();
                actix::spawn(async move {
                    let journal = muster.journal();
                    let records = tokio::task::spawn_blocking(move || journal.records_of(run))
                        .await
                        .unwrap_or_default();
                    let rec = recovery::runs(&records).into_iter().find(|r| r.run == run);
                    drop(records);
                    let step = rec
                        .as_ref()
                        .and_then(|r| r.at.as_ref().map(|p| p.step.clone()))
                        .unwrap_or_default();
                    for t in rec.map(|r| r.in_flight()).unwrap_or_default() {
                        muster.cancel(t).await;
                    }
                    let by = by.map(|n| format!(" by {n}")).unwrap_or_default();
                    muster.recorder().record(Event::RunEnded {
                        run,
                        status: "cancelled".into(),
                        step,
                        reason: Some(if reason.is_empty() {
                            format!("cancelled through the API{by}")
                        } else {
                            format!("cancelled through the API{by}: {reason}")
                        }),
                    });
                    let _ = reply.send(Cancelled::Done);
                });
            }
        }
    }

    /// Resumes an unfinished run rebuilt from the journal (the scopes its tasks held are
    /// given back first).
    pub fn resume(
        &self,
        wf: Arc<Workflow>,
        rec: RecoveredRun,
        held: &[(Uuid, muster_core::messaging::Scope)],
    ) {
        resume::restore_scopes(&self.muster, &rec, held);
        self.drive(rec.run, wf, Start::Resume(Box::new(rec)), None);
    }

    /// Resumes the runs won from a control node that left: each run's records are copied
    /// from the stream into this node's journal (so its views, and a later `muster resume`
    /// of this journal, see its whole story), then it is rebuilt from them and resumed as
    /// `muster resume` does, its tasks leasing from epochs above the journaled ones.
    fn take_over(&self, t: Takeover) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let Unfinished {
            runs: recovered,
            held,
        } = Unfinished::of(&t.records);
        for (run, lease, revision) in t.runs {
            let Some(rec) = recovered.iter().find(|r| r.run == run).cloned() else {
                // It had ended (its lease was not yet released): nothing to resume.
                let f = cluster.failover.clone();
                actix::spawn(async move { f.release(run).await });
                continue;
            };
            let Some(wf) = cluster.workflows.get(&lease.workflow).cloned() else {
                tracing::warn!(%run, workflow = %lease.workflow, "a run taken over names a workflow this node does not serve");
                continue;
            };
            let mut tasks = HashSet::from([run]);
            for r in &t.records {
                if super::views::belongs(&r.event, run, &mut tasks) {
                    self.muster.recorder().record(r.event.clone());
                }
            }
            self.muster.recorder().record(Event::Note {
                text: format!(
                    "run {run} taken over from control node {} (lease revision {revision})",
                    t.from
                ),
            });
            // On the run's own timeline too (its views, its event stream, the dashboard).
            self.muster.recorder().record(Event::RunTakenOver {
                run,
                from: t.from.clone(),
                to: lease.owner.clone(),
                revision,
            });
            cluster.failover.adopted(&[run]);
            self.resume(wf, rec, &held);
        }
    }

    /// Drives a run on the runtime's thread until it ends (or is cancelled or the node
    /// stops): gates wait in this process for a decision over the API.
    /// Whether one more run fits under the node's bound (`--max-runs`).
    fn room(&self) -> Result<(), RunsFull> {
        let in_flight = self.live.len();
        if in_flight >= self.max_runs {
            return Err(RunsFull {
                in_flight,
                max: self.max_runs,
            });
        }
        Ok(())
    }

    fn drive(&self, id: Uuid, wf: Arc<Workflow>, start: Start, started_by: Option<usize>) {
        self.live.runs.lock().insert(
            id,
            LiveRun {
                workflow: wf.name.clone(),
                handle: None,
                started_by,
                retry_of: match &start {
                    Start::Retry(plan) => Some(plan.from),
                    _ => None,
                },
            },
        );
        let muster = self.muster.clone();
        let live = self.live.clone();
        let failover = self.cluster.as_ref().map(|c| c.failover.clone());
        let fresh = matches!(start, Start::Fresh(_) | Start::Retry(_));
        let workflow = wf.name.clone();
        let handle = actix::spawn(async move {
            if let (Some(f), true) = (&failover, fresh)
                && let Err(e) = f.own(id, &workflow).await
            {
                tracing::warn!(run = %id, error = %e, "the run is not leased; no other control node can take it over");
            }
            let opts = RunOptions {
                progress: None,
                stop_at_gates: false,
                run_id: Some(id),
            };
            let r = match start {
                Start::Fresh(input) => muster.run_workflow_with(wf, input, opts).await,
                Start::Resume(rec) => muster.resume_run(wf, *rec, opts).await,
                Start::Retry(plan) => muster.retry_run(wf, *plan, opts).await,
            };
            if let Err(e) = r {
                tracing::warn!(run = %id, error = %e, "the run did not start");
            }
            if let Some(f) = &failover {
                f.release(id).await;
            }
            live.finished(id);
        });
        if let Some(r) = self.live.runs.lock().get_mut(&id) {
            r.handle = Some(handle);
        }
    }

    /// Stops every run this node drives without ending it (each stays unfinished in the
    /// journal, to be resumed by the next start), then shuts the runtime down (its tasks
    /// are cancelled) and returns once the journal holds everything.
    pub async fn shutdown(&self) {
        let runs: Vec<LiveRun> = self.live.runs.lock().drain().map(|(_, r)| r).collect();
        for r in runs {
            if let Some(h) = r.handle {
                h.abort();
            }
        }
        self.muster.shutdown().await;
        let journal = self.muster.journal();
        let last = journal.len();
        let _ = tokio::task::spawn_blocking(move || journal.sync_point(last)).await;
    }
}

enum Start {
    Fresh(serde_json::Value),
    Resume(Box<RecoveredRun>),
    Retry(Box<muster_workflow::RetryPlan>),
}

/// A gate decision's journaled reason: the note, with the deciding token's name in front
/// when it has one (`by ops-alice: looks right`).
fn attributed(by: Option<&str>, note: &str) -> String {
    match (by, note.is_empty()) {
        (None, _) => note.to_string(),
        (Some(n), true) => format!("by {n}"),
        (Some(n), false) => format!("by {n}: {note}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{Live, LiveRun, RetryRefused, attributed};
    use uuid::Uuid;

    #[test]
    fn a_retry_is_remembered_while_it_runs_and_a_plan_read_before_one_ended_is_read_again() {
        let live = Live::default();
        let (failed, retry, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let read_at = live.retries_ended();
        assert_eq!(live.may_retry(failed, read_at), Ok(()));
        live.retried.lock().insert(failed, retry);
        for (run, retry_of) in [(retry, Some(failed)), (other, None)] {
            live.runs.lock().insert(
                run,
                LiveRun {
                    workflow: "w".into(),
                    handle: None,
                    started_by: None,
                    retry_of,
                },
            );
        }
        assert_eq!(
            live.may_retry(failed, read_at),
            Err(RetryRefused::Retried(retry))
        );
        // Another run ending leaves the retry and the count alone.
        live.finished(other);
        assert_eq!((live.retrying(), live.retries_ended()), (1, read_at));
        // The retry ending forgets it: the map holds only retries in flight.
        live.finished(retry);
        assert_eq!(live.retrying(), 0);
        // A plan read before it ended may have missed its `run_retried`: read again.
        assert_eq!(
            live.may_retry(failed, read_at),
            Err(RetryRefused::ReadAgain)
        );
        // One read after it ended sees the journal as the retry left it.
        assert_eq!(live.may_retry(failed, live.retries_ended()), Ok(()));
        // Retries of other runs ending since a read do not send it back to the journal,
        // unless more ended than the node remembers.
        let read_at = live.retries_ended();
        let end_a_retry = |live: &Live| {
            let (from, retry) = (Uuid::now_v7(), Uuid::now_v7());
            live.retried.lock().insert(from, retry);
            live.runs.lock().insert(
                retry,
                LiveRun {
                    workflow: "w".into(),
                    handle: None,
                    started_by: None,
                    retry_of: Some(from),
                },
            );
            live.finished(retry);
        };
        for _ in 0..10 {
            end_a_retry(&live);
        }
        assert_eq!(live.may_retry(failed, read_at), Ok(()));
        for _ in 0..super::ENDED_KEPT {
            end_a_retry(&live);
        }
        assert_eq!(
            live.may_retry(failed, read_at),
            Err(RetryRefused::ReadAgain)
        );
    }

    #[test]
    fn a_decision_names_the_token_that_took_it() {
        assert_eq!(
            attributed(Some("ops-alice"), "ship it"),
            "by ops-alice: ship it"
        );
        assert_eq!(attributed(Some("ops-alice"), ""), "by ops-alice");
        assert_eq!(attributed(None, "ship it"), "ship it");
    }
}
