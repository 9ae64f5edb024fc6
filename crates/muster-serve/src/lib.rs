//! `muster serve`: a long-running node with an HTTP API (docs/api.md). The cast stays up;
//! runs and tasks are submitted over HTTP, gates decided over HTTP, and every journal
//! record can be followed live as server-sent events.
//!
//! ```text
//!  HTTP (axum, Send tasks) ──commands──▶ Node (runtime thread: runs, tasks, gates)
//!         │                                  │
//!         └── reads ──▶ TapJournal ◀── appends ┘ ──broadcast──▶ /v1/events streams
//! ```
//!
//! It owns the API's routes, its authentication, the event stream and the node's
//! lifecycle (resume at start, graceful stop), and serves the telemetry layer's metrics at
//! `GET /metrics`. It upholds G1 across restarts: a run in
//! flight when the node stops stays unfinished in the journal and is resumed at the next
//! start; a gate is decided exactly once (G5 holds for every decision: it is journaled).
//! It must not hold logic of the layers below: runs go through the workflow engine, tasks
//! through delegation, views are folds over the journal.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod admission;
pub mod assets;
pub mod auth;
pub mod error;
pub mod events;
pub mod node;
pub mod protocol;
pub mod routes;
pub mod tree;
pub mod views;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

pub use auth::{Caller, Role, Token, TokenError, TokenSource, Tokens};
pub use error::{ApiError, BODY_LIMIT};
pub use events::Streams;
pub use node::{Live, Node};
pub use routes::{router, AppState};
pub use tree::GroupInfo;

use muster_cluster::failover::{Failover, Takeover};
use muster_core::journal::{Journal, TapJournal};
use muster_core::runtime::Muster;
use muster_telemetry::{Follower, Metrics, Traces, DEFAULT_EVERY};
use muster_workflow::{recovery, RecoveredRun, Workflow};
use protocol::Command;

/// How long requests in flight may take to finish once the node is asked to stop.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// What a node serves with.
#[derive(Debug)]
pub struct ServeConfig {
    /// The loaded workflows, by name.
    pub workflows: BTreeMap<String, Arc<Workflow>>,
    /// The agent types, for the tree.
    pub groups: Vec<GroupInfo>,
    /// The API tokens, each with its role.
    pub tokens: Tokens,
    /// How much work the node takes on at once.
    pub limits: admission::Limits,
    /// Unfinished runs to resume, each with its workflow.
    pub resume: Vec<(Arc<Workflow>, RecoveredRun)>,
    /// The scopes the previous process's tasks held (see
    /// [`held_at`](muster_core::delegation::scope_table::held_at)).
    pub held_scopes: Vec<(uuid::Uuid, muster_core::messaging::Scope)>,
    /// Traces to export (OTLP, when the OpenTelemetry environment asks for it).
    pub traces: Option<Traces>,
    /// As a control node of a cluster: its run leases and the takeovers it wins.
    pub failover: Option<(Failover, mpsc::Receiver<Takeover>)>,
}

/// Serves the API on `listener` with the runtime `muster` (journaling into `journal`, the
/// tap its builder was given) until `shutdown` resolves; then stops gracefully (docs/api.md,
/// "Starting and stopping"). Runs on the runtime's thread (an actix system).
///
/// # Example
/// ```no_run
/// # async fn demo(muster: muster_core::Muster, journal: std::sync::Arc<muster_core::journal::TapJournal>,
/// #               config: muster_serve::ServeConfig) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// muster_serve::serve(muster, journal, config, listener, async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await
/// # }
/// ```
pub async fn serve(
    muster: Muster,
    journal: Arc<TapJournal>,
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel(1024);
    let (stop_tx, stop) = watch::channel(false);
    let live = Arc::new(Live::default());
    let workflows = Arc::new(config.workflows);
    let mut node =
        Node::new(muster.clone(), live.clone(), tx.clone()).max_runs(config.limits.max_runs);
    if let Some((failover, mut takeovers)) = config.failover {
        node = node.clustered(failover, workflows.clone());
        let to_node = tx.clone();
        actix::spawn(async move {
            while let Some(t) = takeovers.recv().await {
                if to_node.send(Command::TakeOver(Box::new(t))).await.is_err() {
                    break;
                }
            }
        });
    }
    let started_seq = journal.len();
    // Metrics and traces of what this node does, from the journal's records appended from
    // now on (GET /metrics; OTLP when configured).
    let metrics = Arc::new(Metrics::default());
    let mut follower = Follower::new(journal.clone() as Arc<dyn Journal>)
        .starting_after(started_seq)
        .metrics(metrics.clone());
    if let Some(t) = config.traces {
        follower = follower.traces(t);
    }
    let following = follower.spawn(DEFAULT_EVERY);
    for (wf, rec) in config.resume {
        node.resume(wf, rec, &config.held_scopes);
    }
    let state = AppState {
        node: tx,
        muster: muster.clone(),
        journal,
        live,
        workflows,
        groups: Arc::new(config.groups),
        tokens: Arc::new(config.tokens),
        admission: Arc::new(admission::Admission::new(config.limits)),
        started_seq,
        streams: Arc::new(Streams::new(events::MAX_STREAMS)),
        stop: stop.clone(),
        metrics,
    };
    let app = router(state);
    let node_loop = node.serve(rx, stop.clone());
    let stop_for_server = stop_tx.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        // Event streams and the node's queue end with the listener.
        let _ = stop_for_server.send(true);
    });
    // Requests in flight get a bounded time to finish once the stop is asked for.
    let mut asked = stop.clone();
    let bounded = async move {
        tokio::select! {
            r = server => r,
            _ = async {
                let _ = asked.wait_for(|s| *s).await;
                tokio::time::sleep(GRACE).await;
            } => Ok(()),
        }
    };
    let (served, ()) = tokio::join!(bounded, node_loop);
    let _ = stop_tx.send(true);
    node.shutdown().await;
    if let Err(e) = following.stop().await {
        tracing::warn!(error = %e, "telemetry did not finish");
    }
    served
}

/// Every unfinished run of `records`, for [`ServeConfig::resume`] (the caller pairs each
/// with its workflow).
pub fn unfinished(records: &[muster_core::journal::Record]) -> Vec<RecoveredRun> {
    recovery::recover(records)
}
