//! The routes of docs/api.md: each handler parses and checks its input, reads the journal
//! (off the runtime's thread) or sends a command to the node, and answers JSON.
//!
//! It owns the mapping from requests to the node's commands and the views. It must not
//! run workflows or tasks itself (the node does) nor hold state of its own.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::admission::{Admission, RETRY_AFTER_SECS, Slot};
use super::auth::{Caller, Role, Tokens, bearer, needed_role};
use super::error::{ApiError, BODY_LIMIT, Body};
use super::events::{self, Streams};
use super::node::{DECIDE_RETRIES, Live};
use super::protocol::{Cancelled, Command, DecideRefused, RetryRefused, RunsFull};
use super::tree::GroupInfo;
use super::views;
use muster_core::delegation::{SubmitError, Task};
use muster_core::journal::runs::{InputMatch, MAX_INPUT_DEPTH};
use muster_core::journal::{Event, Journal, Record, RunQuery, TapJournal};
use muster_core::messaging::SchemaStore;
use muster_core::runtime::Muster;
use muster_telemetry::AdmissionKind;
use muster_workflow::Workflow;
use muster_workflow::inspect::{self, RunState};

/// The most runs one `GET /v1/runs` page lists.
pub const MAX_PAGE: usize = 500;
/// The most records one `GET /v1/records` page holds.
pub const MAX_RECORDS_PAGE: usize = 10_000;
/// The largest `timeout_ms` of a task.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// The largest `attempts` of a task.
pub const MAX_ATTEMPTS: u32 = 100;

/// What every handler shares: the node's command queue and read-only views of the node.
#[derive(Clone)]
pub struct AppState {
    /// The node's command queue.
    pub node: mpsc::Sender<Command>,
    /// The runtime (read-only uses: agents, schemas, load).
    pub muster: Muster,
    /// The journal, with its live tap.
    pub journal: Arc<TapJournal>,
    /// Runs the node drives.
    pub live: Arc<Live>,
    /// Loaded workflows, by name.
    pub workflows: Arc<std::collections::BTreeMap<String, Arc<Workflow>>>,
    /// Agent types, for the tree.
    pub groups: Arc<Vec<GroupInfo>>,
    /// The API tokens, each with its role.
    pub tokens: Arc<Tokens>,
    /// The bounds of work in flight, and the bare tasks' places.
    pub admission: Arc<Admission>,
    /// The restarts counted since the node started (the tree's), read on from where the
    /// last request left off.
    pub restarts: Arc<views::Restarts>,
    /// Open event streams.
    pub streams: Arc<Streams>,
    /// Turns true when the node shuts down.
    pub stop: watch::Receiver<bool>,
    /// The node's metrics (`GET /metrics`).
    pub metrics: Arc<muster_telemetry::Metrics>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Every route of the API, with its authentication and body limit.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new(), Router::new())
}

/// Every route of the API, and more: `public_extra` without a token (the A2A agent card),
/// `protected_extra` behind the same authentication and roles (MCP's `/mcp`, A2A's
/// `/a2a`); all with the API's JSON errors and body limit.
///
/// # Example
/// ```no_run
/// # fn demo(state: muster_serve::AppState) {
/// let mcp = muster_serve::mcp::router(state.clone());
/// let app = muster_serve::routes::router_with(state, axum::Router::new(), mcp);
/// # let _ = app;
/// # }
/// ```
pub fn router_with(
    state: AppState,
    public_extra: Router<AppState>,
    protected_extra: Router<AppState>,
) -> Router {
    let protected = Router::new()
        .route("/v1/runs", post(start_run).get(list_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/gates/{gate}", post(decide))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/runs/{id}/retry", post(retry_run))
        .route("/v1/workflows", get(list_workflows))
        .route("/v1/workflows/{name}", get(get_workflow))
        .route("/v1/tasks", post(submit_task))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/tasks/{id}/llm", get(get_task_llm))
        .route("/v1/agents", get(agents))
        .route("/v1/tree", get(tree))
        .route("/v1/records", get(records))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .route("/v1/metrics/history", get(metrics_history))
        .merge(protected_extra)
        .route("/v1/whoami", get(whoami))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(public_extra)
        // The dashboard (docs/dashboard.md): its files hold no data and need no token.
        .merge(super::assets::router())
        .merge(protected)
        .fallback(|| async { ApiError::not_found("no such route (see docs/api.md)") })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

/// Gives every error answer the API's JSON shape `{"error": ...}`: the handlers' own
/// errors are JSON already; this catches what axum answers by itself (405 for a method a
/// route does not take, 413 from the body limit, 415 or 400 from an extractor's
/// rejection, 404 with no route), keeping its headers (`Allow`, `WWW-Authenticate`,
/// `Retry-After`).
async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let error = match status {
        // The router adds the `Allow` header after this layer: point to it.
        StatusCode::METHOD_NOT_ALLOWED => format!(
            "`{method} {path}` is not a route: {path} does not take {method} (the Allow \
             header lists the methods it takes; see docs/api.md)"
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the request body is over the limit of {BODY_LIMIT} bytes")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "the request body must be JSON (Content-Type: application/json)".to_string()
        }
        StatusCode::NOT_FOUND if text.is_empty() => {
            format!("no such route `{path}` (see docs/api.md)")
        }
        _ if text.is_empty() => format!(
            "`{method} {path}`: {}",
            status.canonical_reason().unwrap_or("refused")
        ),
        _ => format!(
            "`{method} {path}`: {}",
            muster_core::util::bounded_text(&text)
        ),
    };
    let mut r = ApiError::new(status, error).into_response();
    for name in [header::ALLOW, header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            r.headers_mut().insert(name, v.clone());
        }
    }
    r
}

/// Refuses a request that puts a token in its URL (400), one without a valid token (401)
/// and one whose token's role does not allow it (403), all before its body is read; puts
/// the [`Caller`] in the request's extensions for the handlers.
async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    // Tokens never travel in URLs (they end up in logs, histories and Referer headers).
    if form_pairs(req.uri()).iter().any(|(k, _)| k == "token") {
        return ApiError::bad_request(
            "the `token` query parameter is refused: tokens never go in URLs; \
             send the token as `Authorization: Bearer <token>`",
        )
        .field("token")
        .into_response();
    }
    let caller = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .and_then(|t| st.tokens.find(t))
        .cloned();
    let Some(caller) = caller else {
        // The refused request's body is never read, so it can never be logged.
        tracing::info!(path = %req.uri().path(), "refused a request without a valid token");
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid token is required: Authorization: Bearer <token>",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
    let needed = needed_role(req.method().as_str(), &route);
    if !caller.role.allows(needed) {
        tracing::info!(%route, role = %caller.role, "refused a request beyond its token's role");
        return ApiError::forbidden(format!(
            "`{} {route}` needs role `{needed}`; {}",
            req.method(),
            caller.describe()
        ))
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn form_pairs(uri: &axum::http::Uri) -> Vec<(String, String)> {
    Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|Query(v)| v)
        .unwrap_or_default()
}

async fn healthz() -> Json<Value> {
    Json(json!({"ok": true, "version": env!("CARGO_PKG_VERSION")}))
}

/// `GET /v1/whoami`: the role and name of the token that asks (the dashboard hides what
/// it may not do).
async fn whoami(Extension(caller): Extension<Caller>) -> Json<Value> {
    Json(json!({"role": caller.role.as_str(), "name": caller.name}))
}

/// Ready once every unfinished run of the journal is resumed: `200 {"ready": true}`, or
/// `503 {"ready": false, "resuming": {"done": N, "of": M}}` with `Retry-After` before.
/// Reads no journal.
async fn readyz(State(st): State<AppState>) -> Response {
    let (done, of) = st.live.resume_progress();
    let doc = json!({"ready": done == of, "resuming": {"done": done, "of": of}});
    if done == of {
        return Json(doc).into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(doc),
    )
        .into_response()
}

/// A decision or a cancel for a run the node has not resumed yet comes back later.
fn not_resumed_yet(st: &AppState, run: Uuid) -> Result<(), ApiError> {
    if !st.live.is_pending(run) {
        return Ok(());
    }
    let (done, of) = st.live.resume_progress();
    Err(ApiError::unavailable(format!(
        "run {run} is not resumed yet (the node is resuming runs: {done} of {of}); retry shortly"
    )))
}

/// Runs a journal read on the blocking pool (never on the runtime's or the API's
/// threads): a read waits for the writer's pending commit and then the disk.
pub(crate) async fn read<T: Send + 'static>(
    journal: &Arc<TapJournal>,
    f: impl FnOnce(&TapJournal) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let j = journal.clone();
    tokio::task::spawn_blocking(move || f(&j))
        .await
        .map_err(|e| ApiError::unavailable(format!("the journal read did not finish: {e}")))
}

/// The records of one run or task (a run's: its own and its tasks'), read through the
/// journal's run index: a view costs that run's records, not the history.
pub(crate) fn records_of(journal: &TapJournal, id: Uuid) -> Vec<Record> {
    let mut tasks = std::collections::HashSet::from([id]);
    journal
        .records_of(id)
        .into_iter()
        .filter(|r| views::belongs(&r.event, id, &mut tasks))
        .collect()
}

fn parse_id(text: &str, field: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text.trim()).map_err(|_| {
        ApiError::bad_request(format!(
            "`{}` is not a run or task id (a UUID)",
            muster_core::util::bounded_text(text)
        ))
        .field(field)
    })
}

pub(crate) async fn ask<T>(
    st: &AppState,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, ApiError> {
    let gone = || ApiError::unavailable("the node is shutting down");
    if *st.stop.borrow() {
        return Err(gone());
    }
    let (tx, rx) = oneshot::channel();
    st.node.send(make(tx)).await.map_err(|_| gone())?;
    rx.await.map_err(|_| gone())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRun {
    workflow: String,
    input: Value,
}

async fn start_run(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<StartRun>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (run, name) = start(&st, &caller, req.workflow, req.input).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"run": run, "workflow": name})),
    ))
}

/// Starts a run of `workflow` for `caller` (its input checked against the workflow's
/// schema); answers the run id and the workflow's name. `POST /v1/runs` and the MCP
/// workflow tools.
pub(crate) async fn start(
    st: &AppState,
    caller: &Caller,
    workflow: String,
    input: Value,
) -> Result<(Uuid, String), ApiError> {
    let req = StartRun { workflow, input };
    let wf = st.workflows.get(&req.workflow).cloned().ok_or_else(|| {
        ApiError::not_found(format!(
            "no workflow `{}` is loaded (loaded: {})",
            req.workflow,
            st.workflows.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
        .field("workflow")
    })?;
    if !wf.input.is_empty() {
        check_input(&st.muster.schemas(), &wf.input, &req.input)?;
    }
    let name = wf.name.clone();
    let run = ask(st, |reply| Command::StartRun {
        workflow: wf,
        input: req.input,
        by: Some(caller.id),
        reply,
    })
    .await?
    .map_err(|full| runs_full(st, full))?;
    Ok((run, name))
}

/// The 429 of a run refused at the node's bound (`--max-runs`), counted.
fn runs_full(st: &AppState, full: RunsFull) -> ApiError {
    st.metrics.admission_refused(AdmissionKind::Run);
    ApiError::too_many(
        format!(
            "this node has {} runs in flight, its bound (--max-runs {}); try again later",
            full.in_flight, full.max
        ),
        RETRY_AFTER_SECS,
    )
}

/// `GET /v1/workflows`: the loaded workflows, by name.
async fn list_workflows(State(st): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = st
        .workflows
        .values()
        .map(|wf| {
            json!({"name": wf.name, "description": wf.description, "input": wf.input,
                   "start": wf.start, "steps": wf.steps.len()})
        })
        .collect();
    Json(json!({ "workflows": list }))
}

/// `GET /v1/workflows/{name}`: the workflow as a graph ([`muster_workflow::shape`]) and
/// its input schema's document (`null` when it names none or the node lacks it).
async fn get_workflow(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let wf = st.workflows.get(&name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no workflow `{name}` is loaded (loaded: {})",
            st.workflows.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
        .field("name")
    })?;
    let mut doc = muster_workflow::shape::of(wf);
    doc["input_schema"] = st
        .muster
        .schemas()
        .get(&wf.input)
        .map(|s| s.document.clone())
        .unwrap_or(Value::Null);
    Ok(Json(doc))
}

/// The CLI's message for a run input that breaks the workflow's input schema.
fn check_input(store: &SchemaStore, schema: &str, input: &Value) -> Result<(), ApiError> {
    store.validate(schema, input).map_err(|e| {
        ApiError::unprocessable(format!("the run input does not fit schema `{schema}`: {e}"))
            .field("input")
    })
}

/// The query of `GET /v1/runs` (and the arguments of the MCP tool `muster_runs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListRuns {
    pub(crate) status: Option<String>,
    pub(crate) workflow: Option<String>,
    pub(crate) limit: Option<String>,
    pub(crate) after: Option<String>,
    pub(crate) started_after: Option<String>,
    pub(crate) started_before: Option<String>,
    /// `input.FIELD=value` pairs: (`FIELD`, value).
    #[serde(skip)]
    pub(crate) input: Vec<(String, String)>,
}

/// The most `input.FIELD` filters one run list takes.
pub const MAX_INPUT_FILTERS: usize = 8;

/// The parameters `GET /v1/runs` takes, for the error naming an unknown one.
const LIST_PARAMETERS: &str =
    "status, workflow, limit, after, started_after, started_before, input.FIELD";

impl ListRuns {
    /// The query's pairs, each known parameter once; `input.FIELD` any number of times
    /// (up to [`MAX_INPUT_FILTERS`]).
    fn from_pairs(pairs: Vec<(String, String)>) -> Result<ListRuns, ApiError> {
        let mut q = ListRuns::default();
        for (k, v) in pairs {
            if let Some(field) = k.strip_prefix("input.") {
                if q.input.len() == MAX_INPUT_FILTERS {
                    return Err(ApiError::bad_request(format!(
                        "more than {MAX_INPUT_FILTERS} `input.FIELD` parameters"
                    ))
                    .field(&k));
                }
                q.input.push((field.to_string(), v));
                continue;
            }
            let slot = match k.as_str() {
                "status" => &mut q.status,
                "workflow" => &mut q.workflow,
                "limit" => &mut q.limit,
                "after" => &mut q.after,
                "started_after" => &mut q.started_after,
                "started_before" => &mut q.started_before,
                other => {
                    let other = muster_core::util::bounded_text(other);
                    return Err(ApiError::bad_request(format!(
                        "`{other}` is not a parameter of `GET /v1/runs` (its parameters: \
                         {LIST_PARAMETERS})"
                    ))
                    .field(other.to_string()));
                }
            };
            if slot.is_some() {
                return Err(
                    ApiError::bad_request(format!("`{k}` is given twice; give it once")).field(&k),
                );
            }
            *slot = Some(v);
        }
        Ok(q)
    }
}

/// The 400 of a query string that does not parse, with what the parser said (bounded).
fn bad_query(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::bad_request(format!(
        "the query: {}",
        muster_core::util::bounded_text(&e.body_text())
    ))
}

async fn list_runs(
    State(st): State<AppState>,
    uri: axum::http::Uri,
) -> Result<Json<Value>, ApiError> {
    let pairs = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|Query(v)| v)
        .map_err(bad_query)?;
    run_list(&st, ListRuns::from_pairs(pairs)?).await.map(Json)
}

/// A point in time of a run list's query: Unix milliseconds, or an RFC 3339 time
/// (`2026-12-07T14:00:00Z`).
fn parse_time(text: &str, field: &str) -> Result<u64, ApiError> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(t)
        .ok()
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{field} `{}` is not a time: Unix milliseconds, or RFC 3339 \
                 (2026-12-07T14:00:00Z)",
                muster_core::util::bounded_text(text)
            ))
            .field(field)
        })
}

/// One page of the journal's runs: `GET /v1/runs` and the MCP tool `muster_runs`.
pub(crate) async fn run_list(st: &AppState, q: ListRuns) -> Result<Value, ApiError> {
    if let Some(s) = &q.status
        && !views::RUN_STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "`{s}` is not a run status; one of {}",
            views::RUN_STATUSES.join(", ")
        ))
        .field("status"));
    }
    let limit = match &q.limit {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit `{l}` must be a number from 1 to {MAX_PAGE}"))
                    .field("limit")
            })?,
    };
    let after = q
        .after
        .as_deref()
        .map(|a| parse_id(a, "after"))
        .transpose()?;
    let started_after = q
        .started_after
        .as_deref()
        .map(|t| parse_time(t, "started_after"))
        .transpose()?;
    let started_before = q
        .started_before
        .as_deref()
        .map(|t| parse_time(t, "started_before"))
        .transpose()?;
    let mut input = Vec::new();
    for (field, value) in &q.input {
        let m = InputMatch::parse(field, value).map_err(|e| {
            ApiError::bad_request(format!(
                "input.{}: {e} (at most {MAX_INPUT_DEPTH} names deep)",
                muster_core::util::bounded_text(field)
            ))
            .field(format!("input.{}", muster_core::util::bounded_text(field)))
        })?;
        input.push(m);
    }
    let filter = RunQuery {
        workflow: q.workflow,
        started_after,
        started_before,
        input,
        ..RunQuery::default()
    };
    let live = st.live.clone();
    let status = q.status;
    let (page, next) = read(&st.journal, move |j| {
        views::run_page_where(
            j,
            &|r| live.contains(r),
            status.as_deref(),
            filter,
            after,
            limit,
        )
    })
    .await?;
    Ok(json!({"runs": page, "next": next}))
}

async fn get_run(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    run_view(&st, &id).await.map(Json)
}

/// A run's detail: `GET /v1/runs/{id}` and the MCP tool `muster_run`.
pub(crate) async fn run_view(st: &AppState, id: &str) -> Result<Value, ApiError> {
    let id = parse_id(id, "id")?;
    // Whether this node drives the run, asked before the records are read: a run started
    // a moment ago may have journaled nothing yet when they are read, and have ended and
    // left the live set by the time they are looked at (a one-step run takes well under a
    // millisecond). Asked after the read only, such a run would be reported unknown.
    let live_before = st.live.workflow(id);
    // The run's records hold no model call (they are its tasks' alone): the leases'
    // counts come from the journal, without decoding a prompt.
    let (records, model_calls) = read(&st.journal, move |j| {
        let records = records_of(j, id);
        let calls = j.model_call_counts(&views::submitted_tasks(&records));
        (records, calls)
    })
    .await?;
    match views::run_detail(&records, id, st.live.contains(id), &model_calls) {
        Some(doc) => Ok(doc),
        // Started by this node a moment ago: not journaled yet when read.
        None => match live_before.or_else(|| st.live.workflow(id)) {
            Some(w) => Ok(json!({
                "run": id, "workflow": w, "status": "running", "steps": [], "gates": [],
            })),
            None => Err(ApiError::not_found(format!("no run `{id}` in the journal")).field("id")),
        },
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    decision: String,
    #[serde(default)]
    note: String,
}

async fn decide(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, gate)): Path<(String, String)>,
    Body(req): Body<DecideBody>,
) -> Result<Json<Value>, ApiError> {
    decide_gate(&st, &caller, &id, gate, &req.decision, req.note)
        .await
        .map(Json)
}

/// Decides gate `gate` of run `id` (`approve` or `reject`), exactly once: `POST
/// /v1/runs/{id}/gates/{gate}` and the MCP tool `muster_decide`.
pub(crate) async fn decide_gate(
    st: &AppState,
    caller: &Caller,
    id: &str,
    gate: String,
    decision: &str,
    note: String,
) -> Result<Value, ApiError> {
    let run = parse_id(id, "id")?;
    let approved = match decision {
        "approve" => true,
        "reject" => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "decision `{other}` must be `approve` or `reject`"
            ))
            .field("decision"));
        }
    };
    not_resumed_yet(st, run)?;
    let records = read(&st.journal, move |j| records_of(j, run)).await?;
    let summary = inspect::runs(&records)
        .into_iter()
        .find(|s| s.run == run)
        .ok_or_else(|| ApiError::not_found(format!("no run `{id}` in the journal")).field("id"))?;
    let decided = records.iter().rev().find_map(|r| match &r.event {
        muster_core::journal::Event::GateDecided {
            run: r,
            gate: g,
            approved,
            ..
        } if *r == run && *g == gate => Some(*approved),
        _ => None,
    });
    drop(records);
    let verdict = |a: bool| if a { "approved" } else { "rejected" };
    let already = |a: bool| {
        ApiError::conflict(format!(
            "gate `{gate}` of run {run} is already decided ({})",
            verdict(a)
        ))
    };
    if summary.status == RunState::Completed || summary.status == RunState::Failed {
        // A gate decided on the way: the loser of a race is told the decision that stands.
        if let Some(a) = decided {
            return Err(already(a));
        }
        return Err(ApiError::conflict(format!(
            "run {run} has already ended ({}); there is nothing to decide",
            summary.status
        )));
    }
    let waits_here = summary.status == RunState::Waiting && summary.gate.as_deref() == Some(&gate);
    if !waits_here
        && let Some(a) =
            decided.filter(|_| summary.step.as_deref() != Some(&gate) || summary.gate.is_none())
    {
        return Err(already(a));
    }
    let where_ = match (&summary.gate, &summary.step) {
        (Some(g), _) => format!("it waits at gate `{g}`"),
        (None, Some(s)) => format!("it is at step `{s}`, not at a gate"),
        (None, None) => "it has not entered a step yet".to_string(),
    };
    let not_waiting = ApiError::conflict(format!(
        "run {run} does not wait at gate `{gate}`: {where_}"
    ));
    let r = ask(st, |reply| Command::Decide {
        run,
        gate: gate.clone(),
        approved,
        note,
        by: caller.name.clone(),
        // Only a run the journal shows waiting here is worth looking at again.
        retries: if waits_here { DECIDE_RETRIES } else { 0 },
        reply,
    })
    .await?;
    match r {
        Ok(()) => Ok(json!({"run": run, "gate": gate, "approved": approved})),
        Err(DecideRefused::AlreadyDecided { approved }) => Err(already(approved)),
        Err(DecideRefused::NotWaiting) => Err(not_waiting),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: String,
}

async fn cancel_run(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let run = parse_id(&id, "id")?;
    let req: CancelBody = if body.iter().all(|b| b.is_ascii_whitespace()) {
        CancelBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            let e = e.to_string();
            ApiError::bad_request(format!(
                "the request body: {}",
                muster_core::util::bounded_text(&e)
            ))
        })?
    };
    not_resumed_yet(&st, run)?;
    // An operator cancels any run; a submitter only the runs it started.
    let own_only = !caller.role.allows(Role::Operator);
    match ask(&st, |reply| Command::CancelRun {
        run,
        reason: req.reason,
        by: caller.name.clone(),
        only_if_started_by: own_only.then_some(caller.id),
        reply,
    })
    .await?
    {
        Cancelled::Done => return Ok(Json(json!({"run": run, "status": "cancelled"}))),
        Cancelled::NotStarter => {
            return Err(ApiError::forbidden(format!(
                "cancelling run {run} needs role `operator`: a `submitter` cancels only the runs it started; {}",
                caller.describe()
            )));
        }
        Cancelled::NotDriven => {}
    }
    let records = read(&st.journal, move |j| records_of(j, run)).await?;
    match inspect::runs(&records).into_iter().find(|s| s.run == run) {
        None => Err(ApiError::not_found(format!("no run `{id}` in the journal")).field("id")),
        Some(s) => Err(ApiError::conflict(match s.status {
            RunState::Completed | RunState::Failed => {
                format!(
                    "run {run} has already ended ({}); there is nothing to cancel",
                    s.status
                )
            }
            _ => format!("run {run} is not driven by this node; there is nothing to cancel here"),
        })),
    }
}

/// `POST /v1/runs/{id}/retry`: a new run that retries failed run `id` from its failed
/// step, carrying its completed steps over ([`muster_workflow::retry`]).
async fn retry_run(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let run = parse_id(&id, "id")?;
    // A plan read while an earlier retry of this run was being written may miss its
    // `run_retried`; the node says so and the journal is read again. Another retry has
    // to end in between each time, so a few reads settle it.
    for _ in 0..4 {
        let read_at = st.live.retries_ended();
        let (wf, plan) = retry_plan(&st, run, &id).await?;
        let step = plan.step.clone();
        let carried: Vec<String> = plan.carried.iter().map(|c| c.step.clone()).collect();
        let name = wf.name.clone();
        let r = ask(&st, |reply| Command::RetryRun {
            workflow: wf,
            plan: Box::new(plan),
            by: Some(caller.id),
            read_at,
            reply,
        })
        .await?;
        return match r {
            Ok(new) => Ok((
                StatusCode::ACCEPTED,
                Json(
                    json!({"run": new, "workflow": name, "retry_of": run, "step": step,
                            "carried": carried}),
                ),
            )),
            Err(RetryRefused::ReadAgain) => continue,
            Err(RetryRefused::Retried(retry)) => Err(ApiError::conflict(format!(
                "run {run} was already retried as run {retry}"
            ))),
            Err(RetryRefused::Full(full)) => Err(runs_full(&st, full)),
        };
    }
    Err(ApiError::too_many(
        format!("retries of other runs kept ending while run {run}'s was planned; try again"),
        RETRY_AFTER_SECS,
    ))
}

/// Failed run `run`'s workflow and where its retry would start, from its records.
async fn retry_plan(
    st: &AppState,
    run: Uuid,
    id: &str,
) -> Result<(Arc<Workflow>, muster_workflow::RetryPlan), ApiError> {
    let records = read(&st.journal, move |j| records_of(j, run)).await?;
    let unknown = || ApiError::not_found(format!("no run `{id}` in the journal")).field("id");
    let workflow = records
        .iter()
        .find_map(|r| match &r.event {
            Event::RunStarted {
                run: r, workflow, ..
            } if *r == run => Some(workflow.clone()),
            _ => None,
        })
        .ok_or_else(unknown)?;
    let wf = st.workflows.get(&workflow).cloned().ok_or_else(|| {
        ApiError::conflict(format!(
            "run {run} is a run of workflow `{workflow}`, which this node has not loaded \
             (loaded: {})",
            st.workflows.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let plan = muster_workflow::retry::plan(&wf, &records, run).map_err(|e| match e {
        muster_workflow::NotRetryable::Unknown(_) => unknown(),
        e => ApiError::conflict(e.to_string()),
    })?;
    Ok((wf, plan))
}

/// `GET /v1/metrics/history`: the last hour of the node's work in ten-second samples
/// ([`muster_telemetry::history`]).
async fn metrics_history(State(st): State<AppState>) -> Json<Value> {
    let now = st.muster.recorder().now_ms();
    Json(json!(st.metrics.history(now)))
}

/// The body of `POST /v1/tasks` (and what an MCP capability tool submits).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitTask {
    pub(crate) capability: String,
    pub(crate) input: Value,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) attempts: Option<u32>,
}

async fn submit_task(
    State(st): State<AppState>,
    Body(req): Body<SubmitTask>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (task, slot) = bare_task(&st, req)?;
    let r = ask(&st, |reply| Command::SubmitTask {
        task: Box::new(task),
        slot: Some(slot),
        reply,
    })
    .await?;
    match r {
        Ok(id) => Ok((StatusCode::ACCEPTED, Json(json!({"task": id})))),
        Err(e) => Err(submit_refused(e)),
    }
}

/// The API error of a task refused at submission.
pub(crate) fn submit_refused(e: SubmitError) -> ApiError {
    match e {
        e @ SubmitError::InvalidInput { .. } => {
            ApiError::unprocessable(e.to_string()).field("input")
        }
        e @ SubmitError::InvalidTask { .. } => ApiError::unprocessable(e.to_string()),
        e @ SubmitError::Stopped(_) => ApiError::unavailable(e.to_string()),
    }
}

/// A bare task checked as `POST /v1/tasks` checks it (bounds, a declared capability) with
/// the admission place it holds until it ends.
pub(crate) fn bare_task(st: &AppState, req: SubmitTask) -> Result<(Task, Slot), ApiError> {
    let timeout_ms = req.timeout_ms.unwrap_or(30_000);
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(ApiError::unprocessable(format!(
            "timeout_ms {timeout_ms} must be from 1 to {MAX_TIMEOUT_MS}"
        ))
        .field("timeout_ms"));
    }
    let attempts = req.attempts.unwrap_or(3);
    if !(1..=MAX_ATTEMPTS).contains(&attempts) {
        return Err(ApiError::unprocessable(format!(
            "attempts {attempts} must be from 1 to {MAX_ATTEMPTS}"
        ))
        .field("attempts"));
    }
    let declared = st
        .muster
        .agents()
        .iter()
        .any(|a| a.capabilities.iter().any(|c| c.name == req.capability));
    if !declared {
        return Err(ApiError::not_found(format!(
            "no agent declares capability `{}`",
            req.capability
        ))
        .field("capability"));
    }
    // The place is taken before the task is accepted and held until it ends.
    let slot = st.admission.tasks.take().ok_or_else(|| {
        st.metrics.admission_refused(AdmissionKind::Task);
        ApiError::too_many(
            format!(
                "this node has {} bare tasks in flight, its bound (--max-tasks {}); try again later",
                st.admission.tasks.in_use(),
                st.admission.tasks.max()
            ),
            RETRY_AFTER_SECS,
        )
    })?;
    let task = Task::new(req.capability, req.input)
        .timeout(Duration::from_millis(timeout_ms))
        .attempts(attempts)
        .sender("api");
    Ok((task, slot))
}

async fn get_task(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "id")?;
    let records = read(&st.journal, move |j| records_of(j, id)).await?;
    views::task(&records, id)
        .map(|t| Json(json!(t)))
        .ok_or_else(|| ApiError::not_found(format!("no task `{id}` in the journal")).field("id"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LlmQuery {
    epoch: Option<String>,
}

/// The model calls recorded for a task (`record = "prompts"`), of one attempt with
/// `?epoch=`.
async fn get_task_llm(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<LlmQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let id = parse_id(&id, "id")?;
    let epoch: Option<u64> = q
        .epoch
        .as_deref()
        .map(|e| parse_number(e, "epoch", "a lease epoch"))
        .transpose()?;
    let records = read(&st.journal, move |j| records_of(j, id)).await?;
    views::model_calls(&records, id, epoch)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no task `{id}` in the journal")).field("id"))
}

async fn agents(State(st): State<AppState>) -> Json<Value> {
    let agents = st.muster.agents();
    let caps: std::collections::BTreeSet<String> = agents
        .iter()
        .flat_map(|a| a.capabilities.iter().map(|c| c.name.clone()))
        .collect();
    Json(json!({
        "ok": true,
        "agents": agents,
        "capabilities": caps,
        "schemas": st.muster.schemas().names(),
    }))
}

async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            muster_telemetry::Metrics::CONTENT_TYPE,
        )],
        st.metrics.render(&st.muster),
    )
        .into_response()
}

async fn tree(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let counted = st.restarts.clone();
    let restarts = read(&st.journal, move |j| counted.update(j)).await?;
    Ok(Json(super::tree::tree(
        &st.groups,
        &st.muster.agents(),
        &restarts,
        st.muster.live_tasks(),
        st.muster.stopped().is_some(),
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsQuery {
    after: Option<String>,
    limit: Option<String>,
    /// Only this run's records (its own and its tasks'): `muster inspect --server --run`.
    run: Option<String>,
}

fn parse_number<T: std::str::FromStr>(text: &str, field: &str, what: &str) -> Result<T, ApiError> {
    text.trim().parse().map_err(|_| {
        let text = muster_core::util::bounded_text(text);
        ApiError::bad_request(format!("{field} `{text}` must be {what}")).field(field)
    })
}

async fn records(
    State(st): State<AppState>,
    q: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let after: u64 = match &q.after {
        Some(a) => parse_number(a, "after", "a sequence number")?,
        None => 0,
    };
    let limit: usize = match &q.limit {
        Some(l) => parse_number::<usize>(l, "limit", "a number").and_then(|n| {
            (1..=MAX_RECORDS_PAGE)
                .contains(&n)
                .then_some(n)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "limit `{l}` must be a number from 1 to {MAX_RECORDS_PAGE}"
                    ))
                    .field("limit")
                })
        })?,
        None => 1000,
    };
    let run = q.run.as_deref().map(|r| parse_id(r, "run")).transpose()?;
    let mut records = match run {
        Some(run) => read(&st.journal, move |j| {
            let mut rs = records_of(j, run);
            let held = !rs.is_empty();
            rs.retain(|r| r.seq > after);
            rs.truncate(limit + 1);
            held.then_some(rs)
        })
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("no run `{run}` in the journal")).field("run")
        })?,
        None => read(&st.journal, move |j| j.read_batch(after, limit + 1)).await?,
    };
    let more = records.len() > limit;
    records.truncate(limit);
    let next = if more {
        records.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(Json(json!({"records": records, "next": next})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    run: Option<String>,
    after: Option<String>,
}

/// Where an event stream starts.
enum Start {
    /// After this sequence number (replaying from the journal up to now).
    After(u64),
    /// After the journal's last record now, announced by a `start` event.
    Now(u64),
}

async fn events(
    State(st): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let run = q.run.as_deref().map(|r| parse_id(r, "run")).transpose()?;
    let from_header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_number::<u64>(v, "Last-Event-ID", "a sequence number"))
        .transpose()?;
    // `after=now`: only what is written from now on, announced by a first `start` event
    // whose id is the point it starts after (what a reconnect then resumes from).
    let now = q.after.as_deref() == Some("now");
    let from_query = q
        .after
        .as_deref()
        .filter(|_| !now)
        .map(|a| parse_number::<u64>(a, "after", "a sequence number or `now`"))
        .transpose()?;
    let start = match from_header {
        Some(n) => Start::After(n),
        None if now => Start::Now(st.journal.len()),
        None => Start::After(from_query.unwrap_or(0)),
    };
    if *st.stop.borrow() {
        return Err(ApiError::unavailable("the node is shutting down"));
    }
    let slot = st.streams.open().ok_or_else(|| {
        ApiError::unavailable(format!(
            "too many event streams are open (at most {})",
            events::MAX_STREAMS
        ))
    })?;
    let (after, greeting) = match start {
        Start::After(n) => (n, None),
        Start::Now(n) => (n, Some(events::start_event(n))),
    };
    let s = events::stream(st.journal.clone(), after, run, st.stop.clone(), slot);
    let s = futures::stream::iter(greeting.map(Ok)).chain(s);
    Ok(Sse::new(s)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_decoded() {
        let uri: axum::http::Uri = "/v1/events?run=1&token=a%2Bb".parse().unwrap();
        assert_eq!(
            form_pairs(&uri),
            vec![("run".into(), "1".into()), ("token".into(), "a+b".into())]
        );
    }
}
