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

pub mod a2a;
pub mod admission;
pub mod assets;
pub mod auth;
pub mod cluster;
pub mod error;
pub mod events;
pub mod mcp;
pub mod node;
pub mod protocol;
pub mod routes;
pub mod tls;
pub mod tree;
pub mod views;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

pub use auth::{Caller, Role, Token, TokenError, TokenSource, Tokens};
pub use error::{ApiError, BODY_LIMIT};
pub use events::Streams;
pub use node::{Live, Node};
pub use routes::{AppState, router};
pub use tree::GroupInfo;

use muster_cluster::failover::{Failover, Takeover};
use muster_core::journal::{Journal, RunEntry, RunQuery, RunStatus, TapJournal};
use muster_core::runtime::Muster;
use muster_telemetry::{DEFAULT_EVERY, Follower, Metrics, Traces};
use muster_workflow::{RecoveredRun, Unfinished, Workflow, recovery};
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
    /// Unfinished runs to resume, each with its workflow, oldest first (from the journal's
    /// run index, [`unfinished_runs`]). The node serves at once and resumes them in the
    /// background, each rebuilt from its own records; `GET /readyz` tells how far it got.
    pub resume: Vec<(Arc<Workflow>, uuid::Uuid)>,
    /// Traces to export (OTLP, when the OpenTelemetry environment asks for it).
    pub traces: Option<Traces>,
    /// As a control node of a cluster: its run leases and the takeovers it wins.
    pub failover: Option<(Failover, mpsc::Receiver<Takeover>)>,
    /// TLS for the listener ([`tls::server_config`]); `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
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
    let tls = config.tls.clone();
    // The A2A routes learn the card's URL scheme from the listener.
    let a2a_node = a2a::A2aNode::new(tls.is_some());
    run_node(
        muster,
        journal,
        config,
        move |state, wrap, stop_tx, stop| {
            // muster as an MCP server (docs/mcp.md) at `/mcp` and as an A2A agent
            // (docs/a2a.md) at `/a2a`, behind the same token; its agent card needs none.
            let protected = mcp::router(state.clone()).merge(a2a::protected_routes());
            let app = routes::router_with(state, a2a::public_routes(), protected)
                .layer(axum::Extension(a2a_node));
            let app = wrap(app);
            http_thread(listener, tls, app, stop_tx, stop, shutdown)
        },
    )
    .await
}

/// Serves the node as an MCP server over this process's stdin and stdout
/// (`muster mcp`, docs/mcp.md) until the client closes stdin or `shutdown` resolves; then
/// stops as [`serve`] does (runs in flight stay unfinished in the journal, resumed at the
/// next start). Every call acts as the local user (an `admin`); `config.tokens` and
/// `config.tls` are not used. Nothing but MCP messages is written to stdout.
///
/// # Example
/// ```no_run
/// # async fn demo(muster: muster_core::Muster, journal: std::sync::Arc<muster_core::journal::TapJournal>,
/// #               config: muster_serve::ServeConfig) -> std::io::Result<()> {
/// muster_serve::serve_mcp_stdio(muster, journal, config, async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await
/// # }
/// ```
pub async fn serve_mcp_stdio(
    muster: Muster,
    journal: Arc<TapJournal>,
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Over stdio there is no HTTP router for the cluster layer to wrap.
    run_node(
        muster,
        journal,
        config,
        move |state, _wrap, stop_tx, stop| {
            front_thread("muster-mcp", stop_tx, async move {
                tokio::select! {
                    r = mcp::serve_stdio(state, stop) => r,
                    () = shutdown => Ok(()),
                }
            })
        },
    )
    .await
}

/// What a front applies to the HTTP router it serves: a control node's cluster layer
/// (forwarding other nodes' runs), or nothing.
type Wrap = Box<dyn FnOnce(axum::Router) -> axum::Router>;

/// What answers a node's clients (the HTTP server, or MCP over stdio): given the API's
/// state, the router's [`Wrap`], the stop's sender and receiver, it starts on a thread of
/// its own and answers once it has stopped.
type Front = std::io::Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>>;

/// Runs a node with `front` answering its clients: the node's loop on the runtime's
/// thread, metrics and traces, resumption in the background; once the front stops, the
/// node stops in order.
async fn run_node(
    muster: Muster,
    journal: Arc<TapJournal>,
    config: ServeConfig,
    front: impl FnOnce(AppState, Wrap, watch::Sender<bool>, watch::Receiver<bool>) -> Front,
) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel(1024);
    let (stop_tx, stop) = watch::channel(false);
    let live = Arc::new(Live::default());
    let workflows = Arc::new(config.workflows);
    let mut node =
        Node::new(muster.clone(), live.clone(), tx.clone()).max_runs(config.limits.max_runs);
    // A control node answers for the whole cluster (docs/distributed.md, "One system").
    let peers = config
        .failover
        .as_ref()
        .map(|(f, _)| muster_cluster::peers::Peers::of(f));
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
    live.will_resume(config.resume.iter().map(|(_, run)| *run));
    actix::spawn(resume_in_background(
        journal.clone(),
        config.resume,
        tx.clone(),
        live.clone(),
    ));
    let state = AppState {
        node: tx,
        muster: muster.clone(),
        journal,
        live,
        workflows,
        groups: Arc::new(config.groups),
        tokens: Arc::new(config.tokens),
        admission: Arc::new(admission::Admission::new(config.limits)),
        restarts: Arc::new(views::Restarts::after(started_seq)),
        streams: Arc::new(Streams::new(events::MAX_STREAMS)),
        stop: stop.clone(),
        metrics,
    };
    // A control node answers for the whole cluster (docs/distributed.md, "One system"):
    // a layer over the HTTP routes, which the front applies to the router it serves.
    let streams = state.streams.clone();
    let cluster_stop = stop.clone();
    let wrap: Wrap = Box::new(move |mut app: axum::Router| {
        if let Some(peers) = peers {
            let api = Arc::new(cluster::ClusterApi::new(
                peers,
                streams,
                cluster_stop,
                app.clone(),
            ));
            // A layer runs for the routes a router has: `/v1/cluster` is one here (the
            // layer answers it; the route itself is never reached).
            app = app.route("/v1/cluster", axum::routing::get(cluster::not_here));
            app = app.layer(axum::middleware::from_fn_with_state(
                api.clone(),
                cluster::layer,
            ));
            let forwarded = app.clone();
            actix::spawn(async move {
                if let Err(e) = api.answer_forwarded(forwarded).await {
                    tracing::warn!(error = %e.body(), "this control node answers no forwarded request");
                }
            });
        }
        app
    });
    let node_loop = node.serve(rx, stop.clone());
    let served = front(state, wrap, stop_tx.clone(), stop.clone())?;
    let (served, ()) = tokio::join!(
        async {
            served
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the HTTP thread panicked")))
        },
        node_loop
    );
    let _ = stop_tx.send(true);
    node.shutdown().await;
    if let Err(e) = following.stop().await {
        tracing::warn!(error = %e, "telemetry did not finish");
    }
    served
}

/// Every unfinished run of `records`, rebuilt (the caller pairs each with its workflow).
pub fn unfinished(records: &[muster_core::journal::Record]) -> Vec<RecoveredRun> {
    recovery::recover(records)
}

/// The unfinished runs of `journal` (not ended: running when the last process stopped,
/// or waiting at a gate), oldest first, from its run index: what a node resumes.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Journal, MemoryJournal};
///
/// let j = MemoryJournal::default();
/// let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
/// for run in [a, b] {
///     j.append(0, Event::RunStarted { run, workflow: "w".into(), file: "w.toml".into(), input: serde_json::json!({}) });
/// }
/// j.append(1, Event::RunEnded { run: a, status: "completed".into(), step: "s".into(), reason: None });
/// let open = muster_serve::unfinished_runs(&j);
/// assert_eq!(open.iter().map(|e| e.run).collect::<Vec<_>>(), vec![b]);
/// ```
pub fn unfinished_runs(journal: &dyn Journal) -> Vec<RunEntry> {
    let mut out: Vec<RunEntry> = [RunStatus::Unfinished, RunStatus::Waiting]
        .into_iter()
        .flat_map(|status| {
            journal.runs(&RunQuery {
                status: Some(status),
                limit: usize::MAX,
                ..RunQuery::default()
            })
        })
        .collect();
    out.sort_by_key(|e| e.started_seq);
    out
}

/// How many runs one read of the background resumption rebuilds.
const RESUME_CHUNK: usize = 64;

/// Resumes `runs` in order, a chunk at a time: each run's records are read through the
/// journal's run index off the runtime's thread, rebuilt, and handed to the node. The API
/// answers meanwhile (`GET /readyz` counts them).
async fn resume_in_background(
    journal: Arc<TapJournal>,
    runs: Vec<(Arc<Workflow>, uuid::Uuid)>,
    node: mpsc::Sender<Command>,
    live: Arc<Live>,
) {
    let mut runs = runs.into_iter().peekable();
    while runs.peek().is_some() {
        let chunk: Vec<_> = runs.by_ref().take(RESUME_CHUNK).collect();
        let j = journal.clone();
        let ids: Vec<uuid::Uuid> = chunk.iter().map(|(_, r)| *r).collect();
        let rebuilt = tokio::task::spawn_blocking(move || {
            ids.into_iter()
                .map(|id| (id, Unfinished::of(&j.records_of(id))))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for ((wf, id), (_, open)) in chunk.into_iter().zip(rebuilt) {
            let Unfinished { runs, held } = open;
            match runs.into_iter().find(|r| r.run == id) {
                Some(run) => {
                    let c = Command::Resume {
                        workflow: wf,
                        run: Box::new(run),
                        held,
                    };
                    if node.send(c).await.is_err() {
                        return;
                    }
                }
                None => {
                    tracing::warn!(run = %id, "an unfinished run of the index has no records to resume from");
                    live.resumed(id);
                }
            }
        }
    }
}

/// Runs `work` on a thread of its own (a small multi-threaded tokio runtime), as
/// [`http_thread`] does; when it ends, `stop_tx` turns true (the node stops).
fn front_thread(
    name: &str,
    stop_tx: watch::Sender<bool>,
    work: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) -> Front {
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let served = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .and_then(|rt| {
                    let r = rt.block_on(work);
                    // Not dropped: a read of stdin cannot be cancelled, and dropping the
                    // runtime would wait for it (a stop by signal would hang).
                    rt.shutdown_background();
                    r
                });
            let _ = stop_tx.send(true);
            let _ = done_tx.send(served);
        })?;
    Ok(done)
}

/// Serves `app` on `listener` from a thread of its own (a small multi-threaded tokio
/// runtime), so that no work of the runtime's thread — resuming thousands of runs,
/// driving them — ever delays an answer (`/healthz` never waits). The returned receiver
/// answers once the server has stopped: after `shutdown` (then `stop` turns true, ending
/// the event streams and the node's queue) and the requests in flight, bounded by
/// [`GRACE`].
fn http_thread(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    stop_tx: watch::Sender<bool>,
    stop: watch::Receiver<bool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Front {
    let listener = listener.into_std()?;
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("muster-http".into())
        .spawn(move || {
            let served = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("muster-http")
                .enable_all()
                .build()
                .and_then(|rt| {
                    rt.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        let stop_for_server = stop_tx.clone();
                        let graceful = async move {
                            shutdown.await;
                            // Event streams and the node's queue end with the listener.
                            let _ = stop_for_server.send(true);
                        };
                        let server: std::pin::Pin<
                            Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>,
                        > = match tls {
                            None => Box::pin(std::future::IntoFuture::into_future(
                                axum::serve(listener, app).with_graceful_shutdown(graceful),
                            )),
                            Some(config) => {
                                let tls = tls::TlsListener::new(listener, config)?;
                                Box::pin(std::future::IntoFuture::into_future(
                                    axum::serve(tls, app).with_graceful_shutdown(graceful),
                                ))
                            }
                        };
                        // Requests in flight get a bounded time to finish once the stop
                        // is asked for.
                        let mut asked = stop;
                        let r = tokio::select! {
                            r = server => r,
                            _ = async {
                                let _ = asked.wait_for(|s| *s).await;
                                tokio::time::sleep(GRACE).await;
                            } => Ok(()),
                        };
                        let _ = stop_tx.send(true);
                        r
                    })
                });
            let _ = done_tx.send(served);
        })?;
    Ok(done)
}
