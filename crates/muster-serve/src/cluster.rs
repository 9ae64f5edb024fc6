//! Any control node answers for the cluster (docs/distributed.md, "One system"): a layer
//! over the API of a control node that sends what concerns another control node's run to
//! that node and marks every answer with the node that owns the run (`owner_node`).
//!
//! ```text
//!  GET /v1/runs             this node's page + every live control node's page, merged
//!  /v1/runs/{id}[/gates/g|/cancel|/retry]
//!                           lease names another node ─▶ forwarded to it (NATS request/reply)
//!                           else this node; not here ─▶ asked of the other live nodes
//!  GET /v1/records?run=R    as a run's (what `muster inspect --server --run` reads)
//!  GET /v1/tasks/{id}[/llm] this node; not here ─▶ asked of the other live nodes
//!  GET /v1/events?run=R     R another node's ─▶ its records from the journal stream
//!  GET /v1/cluster          the control nodes, live or gone (the dashboard's panel)
//! ```
//!
//! A gate decision or a cancel is decided only by the node that drives the run (its
//! node actor takes one command at a time), so two nodes asked at the same moment decide
//! a gate once: the other request gets the owner's 409. A forwarded request carries the
//! caller's own `Authorization` (control nodes of one cluster share their tokens) and is
//! checked by the owner as any request; it is marked ([`FORWARDED`]) so it is answered
//! where it arrives, never forwarded again.
//!
//! It owns the forwarding, the merge and the list of control nodes. It must not answer
//! for a run or task itself: every such answer is some node's API's.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use super::error::{ApiError, BODY_LIMIT};
use super::events::{self, Streams};
use muster_cluster::peers::{ApiReply, ApiRequest, Peers};

/// The header that marks a request forwarded by another control node (its name as the
/// value): it is answered here, never forwarded again.
pub const FORWARDED: &str = "x-muster-forwarded";

/// The largest answer this layer reads to add `owner_node` to it.
const ANSWER_LIMIT: usize = 64 << 20;

/// What the layer needs: the node's view of its peers, and the event streams' cap and
/// stop signal.
#[derive(Clone)]
pub struct ClusterApi {
    peers: Peers,
    streams: Arc<Streams>,
    stop: watch::Receiver<bool>,
    /// Control nodes seen live since this node started (those gone are shown gone).
    seen: Arc<parking_lot::Mutex<std::collections::BTreeSet<String>>>,
    /// This node's API without this layer: what a caller's token is checked against (a
    /// layer's `next` is the matched route only).
    inner: axum::Router,
}

/// The most control nodes [`ClusterApi`] remembers as gone.
const MAX_SEEN: usize = 256;

impl std::fmt::Debug for ClusterApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterApi")
            .field("node", &self.peers.node())
            .finish()
    }
}

/// Which of the cluster's routes a request is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    List,
    Run(Uuid),
    Task(Uuid),
    Events(Uuid),
    Cluster,
    Other,
}

fn target(method: &Method, path: &str, query: Option<&str>) -> Target {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let id = |s: &str| Uuid::parse_str(s).ok();
    match (method, parts.as_slice()) {
        (&Method::GET, ["v1", "runs"]) => Target::List,
        (&Method::GET, ["v1", "cluster"]) => Target::Cluster,
        (&Method::GET, ["v1", "runs", r])
        | (&Method::POST, ["v1", "runs", r, "gates", _])
        | (&Method::POST, ["v1", "runs", r, "cancel" | "retry"]) => {
            id(r).map_or(Target::Other, Target::Run)
        }
        (&Method::GET, ["v1", "tasks", t] | ["v1", "tasks", t, "llm"]) => {
            id(t).map_or(Target::Other, Target::Task)
        }
        (&Method::GET, ["v1", "records"]) => query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix("run=").and_then(id))
            .map_or(Target::Other, Target::Run),
        (&Method::GET, ["v1", "events"]) => query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix("run=").and_then(id))
            .map_or(Target::Other, Target::Events),
        _ => Target::Other,
    }
}

impl ClusterApi {
    /// The layer's state for a control node with these peers, sharing the node's event
    /// streams' cap and stop signal; `inner` is the node's API (without this layer).
    pub fn new(
        peers: Peers,
        streams: Arc<Streams>,
        stop: watch::Receiver<bool>,
        inner: axum::Router,
    ) -> Self {
        ClusterApi {
            peers,
            streams,
            stop,
            seen: Arc::default(),
            inner,
        }
    }

    /// The caller's token checked by this node's API (`GET /v1/whoami`): its answer.
    async fn let_in(&self, parts: &Parts) -> Response {
        let req = Request::from_parts(probe(parts, "/v1/whoami"), Body::empty());
        match tower::ServiceExt::oneshot(self.inner.clone(), req).await {
            Ok(r) => r,
            Err(e) => match e {},
        }
    }

    /// Answers the requests other control nodes forward to this one through `app` (this
    /// node's whole API, authentication included), until the connection closes.
    pub async fn answer_forwarded(&self, app: axum::Router) -> Result<(), ApiError> {
        self.peers
            .serve(move |req| {
                let app = app.clone();
                async move { answer(app, req).await }
            })
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))
    }

    /// The other live control nodes.
    async fn others(&self) -> Vec<String> {
        let me = self.peers.node();
        self.peers
            .control_nodes()
            .await
            .into_iter()
            .filter(|n| n != me)
            .collect()
    }

    /// Forwards the request to control node `node`; its answer as a response.
    async fn forward(&self, node: &str, parts: &Parts, body: &Bytes) -> Result<Response, String> {
        let headers = [header::AUTHORIZATION, header::CONTENT_TYPE]
            .iter()
            .filter_map(|h| {
                let v = parts.headers.get(h)?.to_str().ok()?;
                Some((h.as_str().to_string(), v.to_string()))
            })
            .collect();
        let req = ApiRequest {
            from: self.peers.node().to_string(),
            method: parts.method.as_str().to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string()),
            headers,
            body: String::from_utf8_lossy(body).into_owned(),
        };
        let reply = self
            .peers
            .ask(node, &req)
            .await
            .map_err(|e| e.to_string())?;
        Ok(response(reply))
    }

    /// This node's own answer, with `owner_node` added.
    async fn here(&self, parts: &Parts, body: &Bytes, next: Next) -> Response {
        let req = Request::from_parts(parts.clone(), Body::from(body.clone()));
        owned_here(next.run(req).await, self.peers.node()).await
    }

    async fn run(&self, run: Uuid, parts: Parts, body: Bytes, next: Next) -> Response {
        let owner = self.peers.owner_of(run).await;
        match owner {
            Some(o) if o != self.peers.node() => {
                self.forward(&o, &parts, &body).await.unwrap_or_else(|e| {
                    ApiError::unavailable(format!(
                        "run {run} is driven by control node `{o}`, which did not answer ({e}); \
                         retry shortly: should it be gone, another control node takes its runs \
                         over within about two TTLs"
                    ))
                    .into_response()
                })
            }
            _ => {
                let local = self.here(&parts, &body, next).await;
                if local.status() != StatusCode::NOT_FOUND || owner.is_some() {
                    return local;
                }
                self.elsewhere(&parts, &body).await.unwrap_or(local)
            }
        }
    }

    /// The first answer other than 404 of the other live control nodes, asked in turn.
    async fn elsewhere(&self, parts: &Parts, body: &Bytes) -> Option<Response> {
        for node in self.others().await {
            match self.forward(&node, parts, body).await {
                Ok(r) if r.status() != StatusCode::NOT_FOUND => return Some(r),
                Ok(_) => {}
                Err(e) => tracing::warn!(%node, error = %e, "a control node did not answer"),
            }
        }
        None
    }

    async fn task(&self, parts: Parts, body: Bytes, next: Next) -> Response {
        let local = self.here(&parts, &body, next).await;
        if local.status() != StatusCode::NOT_FOUND {
            return local;
        }
        self.elsewhere(&parts, &body).await.unwrap_or(local)
    }

    async fn list(&self, parts: Parts, body: Bytes, next: Next) -> Response {
        let local = self.here(&parts, &body, next).await;
        if !local.status().is_success() {
            return local;
        }
        let Some(mut doc) = read_json(local).await else {
            return ApiError::unavailable("this node's run list did not read").into_response();
        };
        let limit = parts
            .uri
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix("limit=")?.parse::<usize>().ok())
            .unwrap_or(50);
        let mut more = !doc["next"].is_null();
        let mut runs: Vec<Value> = doc["runs"].as_array().cloned().unwrap_or_default();
        let others = self.others().await;
        let answers =
            futures::future::join_all(others.iter().map(|n| self.forward(n, &parts, &body))).await;
        let mut unanswered = Vec::new();
        for (node, answer) in others.iter().zip(answers) {
            let page = match answer {
                Ok(r) if r.status().is_success() => read_json(r).await,
                _ => None,
            };
            let Some(page) = page else {
                unanswered.push(node.clone());
                continue;
            };
            more |= !page["next"].is_null();
            for r in page["runs"].as_array().into_iter().flatten() {
                // A run taken over is in two journals: the first answer counts.
                if !runs.iter().any(|x| x["run"] == r["run"]) {
                    runs.push(r.clone());
                }
            }
        }
        // Newest first across nodes: run ids are UUID v7, ordered by their start time.
        runs.sort_by(|a, b| b["run"].as_str().cmp(&a["run"].as_str()));
        more |= runs.len() > limit;
        runs.truncate(limit);
        doc["next"] = if more {
            runs.last().map_or(Value::Null, |r| r["run"].clone())
        } else {
            Value::Null
        };
        doc["runs"] = Value::Array(runs);
        if !unanswered.is_empty() {
            doc["unanswered"] = json!(unanswered);
        }
        axum::Json(doc).into_response()
    }

    async fn events(&self, run: Uuid, parts: Parts, body: Bytes, next: Next) -> Response {
        let me = self.peers.node().to_string();
        let owner = match self.peers.owner_of(run).await {
            Some(o) => Some(o),
            // Ended (or never leased): whoever has it in its journal.
            None => {
                let probe = probe(&parts, &format!("/v1/runs/{run}"));
                match self.elsewhere(&probe, &Bytes::new()).await {
                    Some(r) if r.status().is_success() => read_json(r)
                        .await
                        .and_then(|d| d["owner_node"].as_str().map(String::from)),
                    _ => None,
                }
            }
        };
        let Some(owner) = owner.filter(|o| *o != me) else {
            return next.run(Request::from_parts(parts, Body::from(body))).await;
        };
        match self.remote_events(run, &owner, &parts).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    /// `GET /v1/cluster`: this node's name and the control nodes, live or gone since
    /// this node saw them (the dashboard's cluster panel; workers are in `/v1/agents`).
    async fn nodes(&self) -> Response {
        let live = self.peers.control_nodes().await;
        let nodes: Vec<Value> = {
            let mut seen = self.seen.lock();
            seen.extend(live.iter().cloned());
            if seen.len() > MAX_SEEN {
                seen.retain(|n| live.contains(n));
            }
            seen.iter()
                .map(|n| json!({"node": n, "live": live.contains(n)}))
                .collect()
        };
        axum::Json(json!({"node": self.peers.node(), "control_nodes": nodes})).into_response()
    }

    async fn remote_events(
        &self,
        run: Uuid,
        owner: &str,
        parts: &Parts,
    ) -> Result<Response, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let from_header = parts
            .headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "Last-Event-ID `{}` must be a sequence number",
                        muster_core::util::bounded_text(v)
                    ))
                    .field("Last-Event-ID")
                })
            })
            .transpose()?;
        let from_query = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("after="))
            .filter(|a| *a != "now")
            .map(|a| {
                a.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "after `{}` must be a sequence number or `now`",
                        muster_core::util::bounded_text(a)
                    ))
                    .field("after")
                })
            })
            .transpose()?;
        let after = from_header.or(from_query).unwrap_or(0);
        if *self.stop.borrow() {
            return Err(ApiError::unavailable("the node is shutting down"));
        }
        let slot = self.streams.open().ok_or_else(|| {
            ApiError::unavailable(format!(
                "too many event streams are open (at most {})",
                events::MAX_STREAMS
            ))
        })?;
        let records = self.peers.journal_of(owner).await.map_err(|e| {
            ApiError::unavailable(format!(
                "run {run} is control node `{owner}`'s; its records cannot be read: {e}"
            ))
        })?;
        let s = events::remote_stream(records, after, run, self.stop.clone(), slot);
        let mut resp = Sse::new(s)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response();
        if let Ok(v) = HeaderValue::from_str(owner) {
            resp.headers_mut().insert("x-muster-owner-node", v);
        }
        Ok(resp)
    }
}

/// The route `/v1/cluster` stands on: [`layer`] answers it before it is reached.
pub async fn not_here() -> Response {
    ApiError::not_found("no such route (see docs/api.md)").into_response()
}

/// A GET of `path` with the request's credentials.
fn probe(parts: &Parts, path: &str) -> Parts {
    let mut p = parts.clone();
    p.method = Method::GET;
    p.uri = path.parse().unwrap_or_default();
    p.headers.remove(header::CONTENT_TYPE);
    p.headers.remove(header::CONTENT_LENGTH);
    p
}

/// The layer: see the module's doc. Applied to a control node's whole API.
pub async fn layer(State(c): State<Arc<ClusterApi>>, req: Request, next: Next) -> Response {
    let t = target(req.method(), req.uri().path(), req.uri().query());
    if t == Target::Other {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {BODY_LIMIT} bytes"),
            )
            .into_response();
        }
    };
    if parts.headers.contains_key(FORWARDED) && t != Target::Cluster {
        return c.here(&parts, &body, next).await;
    }
    // The caller is let in here, by this node's API, before anything is read from the
    // cluster or forwarded: a request without a valid token costs no KV read and no
    // round trip to another node.
    let checked = c.let_in(&parts).await;
    if !checked.status().is_success() {
        return checked;
    }
    match t {
        Target::List => c.list(parts, body, next).await,
        Target::Run(run) => c.run(run, parts, body, next).await,
        Target::Task(_) => c.task(parts, body, next).await,
        Target::Events(run) => c.events(run, parts, body, next).await,
        Target::Cluster => c.nodes().await,
        Target::Other => next.run(Request::from_parts(parts, Body::from(body))).await,
    }
}

/// A forwarded request answered through `app`.
async fn answer(app: axum::Router, req: ApiRequest) -> ApiReply {
    let mut b = Request::builder()
        .method(req.method.as_str())
        .uri(req.path.as_str())
        .header(FORWARDED, req.from.as_str());
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let Ok(http) = b.body(Body::from(req.body)) else {
        return ApiReply::error(400, "the forwarded request is not a valid HTTP request");
    };
    let resp = match tower::ServiceExt::oneshot(app, http).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let status = resp.status().as_u16();
    match axum::body::to_bytes(resp.into_body(), ANSWER_LIMIT).await {
        Ok(b) => ApiReply {
            status,
            body: String::from_utf8_lossy(&b).into_owned(),
        },
        Err(e) => ApiReply::error(502, &format!("the answer did not read: {e}")),
    }
}

fn response(reply: ApiReply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response()
}

async fn read_json(r: Response) -> Option<Value> {
    let b = axum::body::to_bytes(r.into_body(), ANSWER_LIMIT)
        .await
        .ok()?;
    serde_json::from_slice(&b).ok()
}

/// Adds `owner_node` (this node) to a JSON answer: to the document, and to each run of a
/// run list.
async fn owned_here(r: Response, node: &str) -> Response {
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, ANSWER_LIMIT).await else {
        return ApiError::unavailable("the answer was too large to read").into_response();
    };
    let Ok(mut doc) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if let Some(runs) = doc.get_mut("runs").and_then(Value::as_array_mut) {
        for r in runs.iter_mut().filter_map(Value::as_object_mut) {
            r.entry("owner_node").or_insert_with(|| json!(node));
        }
    } else if let Some(o) = doc.as_object_mut() {
        o.entry("owner_node").or_insert_with(|| json!(node));
    }
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_routes_are_told_apart() {
        let r = Uuid::now_v7();
        assert_eq!(target(&Method::GET, "/v1/runs", None), Target::List);
        assert_eq!(target(&Method::GET, "/v1/cluster", None), Target::Cluster);
        assert_eq!(target(&Method::POST, "/v1/runs", None), Target::Other);
        assert_eq!(
            target(&Method::GET, &format!("/v1/runs/{r}"), None),
            Target::Run(r)
        );
        assert_eq!(
            target(&Method::POST, &format!("/v1/runs/{r}/gates/ship"), None),
            Target::Run(r)
        );
        assert_eq!(
            target(&Method::POST, &format!("/v1/runs/{r}/cancel"), None),
            Target::Run(r)
        );
        assert_eq!(target(&Method::GET, "/v1/runs/nope", None), Target::Other);
        assert_eq!(
            target(&Method::GET, &format!("/v1/tasks/{r}"), None),
            Target::Task(r)
        );
        assert_eq!(
            target(
                &Method::GET,
                "/v1/events",
                Some(&format!("after=3&run={r}"))
            ),
            Target::Events(r)
        );
        assert_eq!(target(&Method::GET, "/v1/events", None), Target::Other);
        assert_eq!(
            target(
                &Method::GET,
                "/v1/records",
                Some(&format!("run={r}&after=0"))
            ),
            Target::Run(r)
        );
        assert_eq!(
            target(&Method::GET, "/v1/records", Some("after=0")),
            Target::Other
        );
    }
}
