//! The driver: reads a journal in bounded batches from a sequence number on and hands
//! every record to the metrics and the traces, in order, once.
//!
//! It owns the reading position and nothing else. Reading the SQLite journal waits for its
//! writer (a blocking call), so the loop reads on tokio's blocking pool, never on the
//! runtime's thread. It must not write to the journal or act on what it reads.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::TelemetryError;
use super::metrics::Metrics;
use super::traces::Traces;
use muster_core::journal::{Journal, Record};

/// Records read per batch by default.
pub const DEFAULT_BATCH: usize = 1024;
/// The most records read per batch ([`Follower::batch`] is capped there).
pub const MAX_BATCH: usize = 65_536;
/// How often a following loop looks for new records by default.
pub const DEFAULT_EVERY: Duration = Duration::from_millis(500);

/// Follows a journal and feeds [`Metrics`] and [`Traces`].
///
/// # Example
/// ```
/// # actix::System::new().block_on(async {
/// use std::sync::Arc;
/// use muster_telemetry::{Follower, Metrics};
/// use muster_core::{AgentDef, CapabilitySpec, Muster, Task};
/// use serde_json::json;
///
/// let m = Muster::builder()
///     .schema("any", json!({}))
///     .agent(AgentDef::function("echo", |v, _| async move { Ok(v) })
///         .capability(CapabilitySpec::new("echo", "any", "any")))
///     .start()
///     .await
///     .unwrap();
/// let metrics = Arc::new(Metrics::default());
/// // In a server: `let following = Follower::new(m.journal()).metrics(metrics.clone())
/// //     .spawn(DEFAULT_EVERY);` and, at shutdown, `following.stop().await`.
/// let mut follower = Follower::new(m.journal()).metrics(metrics.clone());
/// m.delegate(Task::new("echo", json!({}))).await.unwrap();
/// follower.catch_up();
/// assert!(metrics.render(&m).contains("muster_tasks_submitted_total 1"));
/// # m.shutdown().await;
/// # });
/// ```
#[derive(Debug)]
pub struct Follower {
    journal: Arc<dyn Journal>,
    after: u64,
    batch: usize,
    metrics: Option<Arc<Metrics>>,
    traces: Option<Traces>,
}

impl Follower {
    /// A follower of `journal` from its first record, feeding nothing yet.
    pub fn new(journal: Arc<dyn Journal>) -> Self {
        Follower {
            journal,
            after: 0,
            batch: DEFAULT_BATCH,
            metrics: None,
            traces: None,
        }
    }

    /// Starts after record `seq` (`journal.len()`: only what is appended from now on).
    pub fn starting_after(mut self, seq: u64) -> Self {
        self.after = seq;
        self
    }

    /// Reads at most `n` records per batch (1 to [`MAX_BATCH`]).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.clamp(1, MAX_BATCH);
        self
    }

    /// Feeds these metrics.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Feeds these traces.
    pub fn traces(mut self, traces: Traces) -> Self {
        self.traces = Some(traces);
        self
    }

    /// The last record read.
    pub fn position(&self) -> u64 {
        self.after
    }

    /// The traces fed, if any.
    pub fn traces_ref(&self) -> Option<&Traces> {
        self.traces.as_ref()
    }

    /// Hands records to the metrics and the traces (records at or before the position
    /// are skipped): for a source other than the journal, such as a broadcast of records.
    pub fn feed(&mut self, records: &[Record]) {
        for r in records {
            if r.seq <= self.after {
                continue;
            }
            if let Some(m) = &self.metrics {
                m.observe(r);
            }
            if let Some(t) = &mut self.traces {
                t.observe(r);
            }
            self.after = r.seq;
        }
    }

    /// Reads one batch and feeds it; returns how many records it read. Blocks while the
    /// SQLite journal's writer commits what was appended before.
    pub fn poll(&mut self) -> usize {
        let records = self.journal.read_batch(self.after, self.batch);
        self.feed(&records);
        records.len()
    }

    /// Reads batches until one is short (the end of the journal as it is now); returns how
    /// many records it read. Bounded: it stops at the journal's length when it began.
    pub fn catch_up(&mut self) -> usize {
        let end = self.journal.len();
        let mut read = 0;
        while self.after < end {
            let n = self.poll();
            read += n;
            if n < self.batch {
                break;
            }
        }
        read
    }

    /// Follows the journal until `stop` completes: a batch every `every` (at once while
    /// batches come full), each read on the blocking pool; then catches up one last time
    /// and returns itself (call [`Follower::finish`] to flush the traces).
    pub async fn run(
        self,
        every: Duration,
        stop: impl Future<Output = ()>,
    ) -> Result<Self, TelemetryError> {
        let mut stop = std::pin::pin!(stop);
        let mut me = self;
        loop {
            let (back, full) = tokio::task::spawn_blocking(move || {
                let n = me.poll();
                let full = n == me.batch;
                (me, full)
            })
            .await
            .map_err(|e| TelemetryError::Follow(e.to_string()))?;
            me = back;
            if full {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut stop => break,
            }
        }
        tokio::task::spawn_blocking(move || {
            me.catch_up();
            me
        })
        .await
        .map_err(|e| TelemetryError::Follow(e.to_string()))
    }

    /// Starts [`Follower::run`] as a task of the current tokio runtime; the handle stops
    /// it.
    pub fn spawn(self, every: Duration) -> Following {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(self.run(every, async move {
            let _ = rx.await;
        }));
        Following { stop: tx, handle }
    }

    /// Exports the traces still pending and stops their exporter (blocking: a batch
    /// exporter's last request).
    pub fn finish(self) -> Result<(), TelemetryError> {
        match self.traces {
            Some(t) => t.shutdown(),
            None => Ok(()),
        }
    }
}

/// A follower running as a task ([`Follower::spawn`]).
#[derive(Debug)]
pub struct Following {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<Follower, TelemetryError>>,
}

impl Following {
    /// Stops following after a last catch-up, then flushes the traces (off the runtime's
    /// thread).
    pub async fn stop(self) -> Result<(), TelemetryError> {
        let _ = self.stop.send(());
        let follower = self
            .handle
            .await
            .map_err(|e| TelemetryError::Follow(e.to_string()))??;
        tokio::task::spawn_blocking(move || follower.finish())
            .await
            .map_err(|e| TelemetryError::Follow(e.to_string()))?
    }
}
