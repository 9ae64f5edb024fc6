//! Any control node answers for the cluster: what a control node needs to answer for runs
//! that other control nodes own (docs/distributed.md, "One system").
//!
//! - **Who owns a run**: the run's lease in `muster_runs` (an unfinished run), read
//!   without a round trip to any node ([`Peers::owner_of`]).
//! - **Which control nodes are live**: the keys of `muster_controls`
//!   ([`Peers::control_nodes`]).
//! - **Asking another node**: an HTTP API request forwarded over NATS request/reply on
//!   `muster.api.<node>` ([`Peers::ask`]); each control node answers the requests for it
//!   through its own API ([`Peers::serve`]), so a gate decision or a cancel for a run is
//!   always decided by the node that drives the run, exactly once.
//! - **A node's records, live**: its journal's copy in the `MUSTER_JOURNAL` stream, from
//!   the first record on, then as they are mirrored ([`Peers::journal_of`]).
//!
//! It owns the wire of forwarded requests. It must not interpret the API (the node of
//! `muster serve` does) nor hold anything per request beyond the request itself.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::ClusterError;
use super::failover::{Failover, JOURNAL_STREAM, RunLease, journal_subject};
use super::wire::{self, WireMessage};
use muster_core::journal::Record;

/// The subject control node `node` answers forwarded API requests on.
pub fn api_subject(node: &str) -> String {
    format!("muster.api.{node}")
}

/// How long a forwarded request waits for its answer.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwarded requests a node answers at once; more wait for a place.
pub const SERVE_AT_ONCE: usize = 64;

/// An API request forwarded to another control node (`cluster-api-request`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiRequest {
    /// The node that forwards it.
    pub from: String,
    /// `GET` or `POST`.
    pub method: String,
    /// Path and query, as the client sent them (`/v1/runs/…`).
    pub path: String,
    /// The headers the API reads (`authorization`, `content-type`), name and value.
    pub headers: Vec<(String, String)>,
    /// The body (JSON text, or empty).
    pub body: String,
}

impl WireMessage for ApiRequest {
    const SCHEMA: &'static str = "cluster-api-request";
}

/// A control node's answer to an [`ApiRequest`] (`cluster-api-reply`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiReply {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body, as text.
    pub body: String,
}

impl WireMessage for ApiReply {
    const SCHEMA: &'static str = "cluster-api-reply";
}

impl ApiReply {
    /// An error answer in the API's shape (`{"error": ...}`).
    ///
    /// # Example
    /// ```
    /// let r = muster_cluster::peers::ApiReply::error(502, "no answer");
    /// assert_eq!(r.status, 502);
    /// assert_eq!(r.body, r#"{"error":"no answer"}"#);
    /// ```
    pub fn error(status: u16, message: &str) -> ApiReply {
        ApiReply {
            status,
            body: serde_json::json!({ "error": message }).to_string(),
        }
    }
}

/// A control node's view of the other control nodes: who owns a run, who is live, and
/// the requests it forwards to them and answers for them. Made from the node's
/// [`Failover`] ([`Peers::of`]), on its connection.
///
/// # Example
/// ```no_run
/// # async fn demo(failover: muster_cluster::failover::Failover, run: uuid::Uuid) -> Result<(), muster_cluster::ClusterError> {
/// use muster_cluster::peers::ApiRequest;
///
/// let peers = muster_cluster::peers::Peers::of(&failover);
/// if let Some(owner) = peers.owner_of(run).await.filter(|o| o != peers.node()) {
///     let reply = peers
///         .ask(&owner, &ApiRequest {
///             from: peers.node().to_string(),
///             method: "GET".into(),
///             path: format!("/v1/runs/{run}"),
///             headers: vec![("authorization".into(), "Bearer …".into())],
///             body: String::new(),
///         })
///         .await?;
///     println!("{owner} answered {}: {}", reply.status, reply.body);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Peers {
    node: String,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    runs: async_nats::jetstream::kv::Store,
    controls: async_nats::jetstream::kv::Store,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").field("node", &self.node).finish()
    }
}

impl Peers {
    /// The view of control node `failover`'s peers, on its connection.
    pub fn of(failover: &Failover) -> Peers {
        let (node, js, runs, controls) = failover.parts();
        Peers {
            node,
            client: js.client(),
            js,
            runs,
            controls,
        }
    }

    /// This control node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The control node that drives `run` now, from its lease (`None`: the run has ended,
    /// was never leased, or the lease cannot be read).
    pub async fn owner_of(&self, run: Uuid) -> Option<String> {
        match self.runs.get(run.to_string()).await {
            Ok(Some(body)) => wire::decode::<RunLease>(&body).ok().map(|l| l.owner),
            _ => None,
        }
    }

    /// The live control nodes (this one included), by name.
    pub async fn control_nodes(&self) -> Vec<String> {
        let mut out = vec![self.node.clone()];
        if let Ok(mut keys) = self.controls.keys().await {
            let limit = tokio::time::sleep(ASK_TIMEOUT);
            tokio::pin!(limit);
            loop {
                tokio::select! {
                    _ = &mut limit => break,
                    k = keys.next() => match k {
                        Some(Ok(k)) if !out.contains(&k) => out.push(k),
                        Some(_) => {}
                        None => break,
                    },
                }
            }
        }
        out.sort();
        out
    }

    /// Forwards `req` to control node `node` and waits (at most [`ASK_TIMEOUT`]) for its
    /// answer.
    pub async fn ask(&self, node: &str, req: &ApiRequest) -> Result<ApiReply, ClusterError> {
        let body = serde_json::to_vec(req).map_err(|e| ClusterError::Runtime(e.to_string()))?;
        let answer = tokio::time::timeout(
            ASK_TIMEOUT,
            self.client.request(api_subject(node), body.into()),
        )
        .await
        .map_err(|_| {
            ClusterError::Nats(format!(
                "control node `{node}` did not answer within {ASK_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| ClusterError::Nats(format!("control node `{node}` did not answer: {e}")))?;
        wire::decode::<ApiReply>(&answer.payload).map_err(|e| {
            ClusterError::Nats(format!(
                "control node `{node}` answered something unreadable: {e}"
            ))
        })
    }

    /// Answers the requests forwarded to this node with `answer`, [`SERVE_AT_ONCE`] at a
    /// time, until the connection closes. A request its schema refuses is answered 400
    /// with the schema's words; an answer larger than the server's payload limit is
    /// replaced by a 502 that says so.
    pub async fn serve<F, Fut>(&self, answer: F) -> Result<(), ClusterError>
    where
        F: Fn(ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ApiReply> + Send + 'static,
    {
        let mut sub = self
            .client
            .subscribe(api_subject(&self.node))
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        let client = self.client.clone();
        let answer = Arc::new(answer);
        let places = Arc::new(Semaphore::new(SERVE_AT_ONCE));
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let Some(reply_to) = m.reply.clone() else {
                    continue;
                };
                let Ok(place) = places.clone().acquire_owned().await else {
                    return;
                };
                let (client, answer) = (client.clone(), answer.clone());
                tokio::spawn(async move {
                    let _place = place;
                    let reply = match wire::decode::<ApiRequest>(&m.payload) {
                        Ok(req) => answer(req).await,
                        Err(e) => ApiReply::error(400, &e.to_string()),
                    };
                    let mut body = serde_json::to_vec(&reply).unwrap_or_default();
                    let limit = client.server_info().max_payload;
                    if body.len() > limit {
                        let too_big = ApiReply::error(
                            502,
                            &format!(
                                "the answer ({} bytes) is larger than the NATS server's payload limit ({limit} bytes); ask this control node directly",
                                body.len()
                            ),
                        );
                        body = serde_json::to_vec(&too_big).unwrap_or_default();
                    }
                    if let Err(e) = client.publish(reply_to, body.into()).await {
                        tracing::warn!(error = %e, "a forwarded request's answer was not sent");
                    }
                });
            }
        });
        Ok(())
    }

    /// Control node `node`'s journal records as the `MUSTER_JOURNAL` stream holds them,
    /// from its first on and then live as they are mirrored (an ordered consumer: in
    /// order, with flow control). A record that does not read ends the stream.
    pub async fn journal_of(
        &self,
        node: &str,
    ) -> Result<impl Stream<Item = Record> + Send + use<>, ClusterError> {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull};
        let nats = |e: &dyn std::fmt::Display| {
            ClusterError::Nats(format!("cannot read the journal stream: {e}"))
        };
        let stream = self
            .js
            .get_stream(JOURNAL_STREAM)
            .await
            .map_err(|e| nats(&e))?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: journal_subject(node),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| nats(&e))?;
        let messages = consumer.messages().await.map_err(|e| nats(&e))?;
        Ok(messages
            .take_while(|m| std::future::ready(m.is_ok()))
            .filter_map(|m| std::future::ready(m.ok()))
            .map(|m| serde_json::from_slice::<Record>(&m.payload).ok())
            .take_while(|r| std::future::ready(r.is_some()))
            .filter_map(std::future::ready))
    }
}
