//! The HTTP API of `muster serve` (docs/api.md), in process: any method, path, query
//! string, `Authorization`, `Last-Event-ID`, content type and body, sent through the
//! node's router to a node running a workflow with a gate on an echo agent; and a node's
//! token file (`--token-file`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use muster::journal::{Journal, MemoryJournal, TapJournal};
use muster::serve::admission::{Admission, Limits};
use muster::serve::{AppState, Live, Node, Role, Streams, Token, Tokens, router, views};
use muster::workflow::Workflow;
use muster::{AgentDef, CapabilitySpec, Muster, SchemaStore};
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

use super::arb::{self, Bytes};

/// The node's tokens: one per role, in [`Role`] order.
const TOKENS: [(&str, &str); 4] = [
    ("viewer-0123456789abcdef", "viewer"),
    ("submitter-0123456789abcdef", "submitter"),
    ("operator-0123456789abcdef", "operator"),
    ("admin-0123456789abcdef", "admin"),
];

/// The workflow the node serves: an echo step, then a gate.
const WORKFLOW: &str = r#"
name = "fz"
input = "echo"
start = "one"

[steps.one]
capability = "echo"
timeout = "5s"
attempts = 1
on_exhausted = "fail"
next = "review"

[steps.review]
gate = "approve or reject"
on_approve = "done"
on_reject = "dropped"

[steps.done]
terminal = "done"

[steps.dropped]
terminal = "fail"
"#;

/// How many requests one node takes before a fresh one (its journal only grows).
const REQUESTS_PER_NODE: u64 = 5_000;

/// A node on its own actix system thread, and a client runtime for its router.
struct ServedNode {
    app: axum::Router,
    muster: Muster,
    system: actix::System,
    thread: Option<std::thread::JoinHandle<()>>,
    client: tokio::runtime::Runtime,
    /// Runs this node started (their ids, for the routes that take one).
    runs: Vec<Uuid>,
    requests: u64,
}

impl ServedNode {
    fn start() -> ServedNode {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let sys = actix::System::new();
            let handle = actix::System::current();
            sys.block_on(async move {
                let schemas = SchemaStore::new();
                schemas
                    .add("echo", json!({"type": "object"}))
                    .expect("the echo schema");
                let workflow =
                    Workflow::parse(WORKFLOW, Path::new("fz.toml"), &schemas).expect("parses");
                let journal = Arc::new(TapJournal::new(
                    Arc::new(MemoryJournal::default()) as Arc<dyn Journal>,
                    1024,
                ));
                let m = Muster::builder()
                    .schema("echo", json!({"type": "object"}))
                    .journal(journal.clone())
                    .agent(
                        AgentDef::function("echo", |v, _| async move { Ok(v) })
                            .capability(CapabilitySpec::new("echo", "echo", "echo")),
                    )
                    .start()
                    .await
                    .expect("the runtime starts");
                let limits = Limits {
                    max_runs: 64,
                    max_tasks: 64,
                };
                let (node_tx, node_rx) = tokio::sync::mpsc::channel(1024);
                let (_stop_tx, stop) = tokio::sync::watch::channel(false);
                let live = Arc::new(Live::default());
                let node =
                    Node::new(m.clone(), live.clone(), node_tx.clone()).max_runs(limits.max_runs);
                let text: String = TOKENS.iter().map(|(t, r)| format!("{t} {r}\n")).collect();
                let tokens = Tokens::parse(&text, Path::new("tokens")).expect("tokens");
                let state = AppState {
                    node: node_tx,
                    muster: m.clone(),
                    journal: journal.clone(),
                    live,
                    workflows: Arc::new([("fz".to_string(), Arc::new(workflow))].into()),
                    groups: Arc::new(Vec::new()),
                    tokens: Arc::new(tokens),
                    admission: Arc::new(Admission::new(limits)),
                    restarts: Arc::new(views::Restarts::after(journal.len())),
                    streams: Arc::new(Streams::new(8)),
                    stop: stop.clone(),
                    metrics: Arc::new(muster::telemetry::Metrics::default()),
                };
                tx.send((router(state), m, handle))
                    .expect("hand the node over");
                actix::spawn(async move {
                    let _keep = _stop_tx;
                    node.serve(node_rx, stop).await;
                });
            });
            sys.run().expect("the actix system runs");
        });
        let (app, muster, system) = rx.recv().expect("the node started");
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a client runtime");
        ServedNode {
            app,
            muster,
            system,
            thread: Some(thread),
            client,
            runs: Vec::new(),
            requests: 0,
        }
    }
}

impl Drop for ServedNode {
    fn drop(&mut self) {
        futures::executor::block_on(self.muster.shutdown());
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `s` with everything but unreserved characters percent-encoded.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A short generated string, or (sometimes) one that is not short.
fn text(b: &mut Bytes) -> String {
    match b.below(8) {
        0 => "9".repeat(b.below(64)),
        1 => {
            let depth = b.below(40);
            arb::deep_json(b, depth).to_string()
        }
        _ => arb::string(b),
    }
}

/// A run id: one this node started, a fresh one, or any text.
fn run_id(b: &mut Bytes, runs: &[Uuid]) -> String {
    match b.below(4) {
        0 | 1 if !runs.is_empty() => runs[b.below(runs.len())].to_string(),
        2 => Uuid::from_u128(u128::from(b.u64())).to_string(),
        _ => encode(&text(b)),
    }
}

/// A JSON body: shaped like one of the API's, or any JSON, or raw bytes.
fn body(b: &mut Bytes) -> Vec<u8> {
    let keys = &[
        "workflow",
        "input",
        "decision",
        "note",
        "reason",
        "capability",
        "timeout_ms",
        "attempts",
    ];
    let v = match b.below(7) {
        0 => {
            json!({"workflow": if b.bool() { "fz".to_string() } else { text(b) }, "input": arb::json(b, 3, keys)})
        }
        1 => json!({"decision": b.pick(&["approve", "reject", "maybe", ""]), "note": text(b)}),
        2 => json!({"capability": if b.bool() { "echo".to_string() } else { text(b) },
                    "input": arb::json(b, 3, keys),
                    "timeout_ms": arb::number(b), "attempts": arb::number(b)}),
        3 => json!({"reason": text(b)}),
        4 => return b.rest().to_vec(),
        5 => {
            let depth = b.below(200);
            arb::deep_json(b, depth)
        }
        _ => arb::json(b, 4, keys),
    };
    let mut v = v;
    if b.below(4) == 0
        && let Value::Object(m) = &mut v
    {
        m.insert(b.pick(keys).to_string(), arb::json(b, 2, keys));
    }
    v.to_string().into_bytes()
}

/// One request, before it is built.
struct Plan {
    method: Method,
    path: String,
    query: Vec<String>,
    auth: Option<String>,
    last_event_id: Option<String>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

impl Plan {
    /// Changes one thing of a well-formed request.
    fn mutate(&mut self, b: &mut Bytes) {
        match b.below(7) {
            0 => {
                self.auth = [None, Some(format!("Bearer {}", encode(&text(b))))][b.below(2)].clone()
            }
            1 => self.query.push(format!(
                "{}={}",
                b.pick(&["status", "limit", "after", "run", "before", "token", "x"]),
                encode(&text(b))
            )),
            2 => {
                self.content_type = [
                    None,
                    Some("text/plain"),
                    Some("application/json; charset=utf-8"),
                ][b.below(3)]
            }
            3 => self.body = body(b),
            4 if !self.body.is_empty() => {
                let i = b.below(self.body.len());
                self.body[i] = b.u8();
            }
            5 => self.last_event_id = Some(encode(&text(b))),
            _ => self.method = [Method::GET, Method::POST, Method::DELETE][b.below(3)].clone(),
        }
    }
}

/// A request a client following docs/api.md would send: the right token for the route,
/// a JSON body of the route's shape, the known runs and the gate's name.
fn well_formed(b: &mut Bytes, runs: &[Uuid]) -> Plan {
    let admin = Some(format!("Bearer {}", TOKENS[3].0));
    let run = if runs.is_empty() || b.below(8) == 0 {
        Uuid::from_u128(u128::from(b.u64())).to_string()
    } else {
        runs[runs.len() - 1 - b.below(runs.len().min(16))].to_string()
    };
    let get = |path: String, query: Vec<String>| Plan {
        method: Method::GET,
        path,
        query,
        auth: admin.clone(),
        last_event_id: None,
        content_type: None,
        body: Vec::new(),
    };
    let post = |path: String, v: Value| Plan {
        method: Method::POST,
        path,
        query: Vec::new(),
        auth: admin.clone(),
        last_event_id: None,
        content_type: Some("application/json"),
        body: v.to_string().into_bytes(),
    };
    match b.below(10) {
        0..=2 => post(
            "/v1/runs".into(),
            json!({"workflow": "fz", "input": {"n": b.below(1000), "s": arb::string(b)}}),
        ),
        3 | 4 => post(
            format!("/v1/runs/{run}/gates/review"),
            json!({"decision": b.pick(&["approve", "reject"]), "note": arb::string(b)}),
        ),
        5 => post(
            format!("/v1/runs/{run}/cancel"),
            json!({"reason": arb::string(b)}),
        ),
        6 => post(
            "/v1/tasks".into(),
            json!({"capability": "echo", "input": {"n": b.below(10)}, "timeout_ms": 1 + b.below(60_000)}),
        ),
        7 => get(format!("/v1/runs/{run}"), Vec::new()),
        8 => {
            let mut q = vec![format!("limit={}", b.below(300))];
            if b.bool() {
                q.push(format!(
                    "status={}",
                    b.pick(&["waiting", "completed", "failed", "unfinished", "cancelled"])
                ));
            }
            if b.bool() {
                q.push(format!("after={}", b.below(100_000)));
            }
            get(b.pick(&["/v1/runs", "/v1/records"]).into(), q)
        }
        _ => {
            let mut p = get(
                "/v1/events".into(),
                if b.bool() {
                    vec![format!("run={run}")]
                } else {
                    Vec::new()
                },
            );
            p.last_event_id = Some(b.below(100_000).to_string());
            p
        }
    }
}

/// A request made of anything: any method, route, query, token and body.
fn free(b: &mut Bytes, runs: &[Uuid]) -> Plan {
    let method = match b.below(10) {
        0..=3 => Method::GET,
        4..=6 => Method::POST,
        7 => Method::DELETE,
        8 => Method::PUT,
        _ => [Method::HEAD, Method::OPTIONS, Method::PATCH][b.below(3)].clone(),
    };
    let id = run_id(b, runs);
    let path = match b.below(16) {
        0 => "/healthz".to_string(),
        1 => "/readyz".to_string(),
        2 | 3 => "/v1/runs".to_string(),
        4 => format!("/v1/runs/{id}"),
        5 | 6 => format!(
            "/v1/runs/{id}/gates/{}",
            if b.bool() {
                "review".to_string()
            } else {
                encode(&text(b))
            }
        ),
        7 => format!("/v1/runs/{id}/cancel"),
        8 => "/v1/tasks".to_string(),
        9 => format!("/v1/tasks/{id}"),
        10 => b
            .pick(&["/v1/agents", "/v1/tree", "/metrics", "/v1/whoami"])
            .to_string(),
        11 => "/v1/records".to_string(),
        12 => "/v1/events".to_string(),
        13 => b
            .pick(&["/", "/index.html", "/app.js", "/style.css"])
            .to_string(),
        _ => format!("/{}", encode(&text(b))),
    };
    let mut query = Vec::new();
    for _ in 0..b.below(4) {
        let k = b.pick(&[
            "status", "workflow", "limit", "after", "run", "before", "token", "x",
        ]);
        let v = match b.below(4) {
            0 => b.below(100_000).to_string(),
            1 => b
                .pick(&[
                    "waiting",
                    "completed",
                    "failed",
                    "unfinished",
                    "cancelled",
                    "fz",
                ])
                .to_string(),
            2 => id.clone(),
            _ => encode(&text(b)),
        };
        query.push(format!("{k}={v}"));
    }
    let auth = match b.below(7) {
        role @ 0..=3 => Some(format!("Bearer {}", TOKENS[role].0)),
        4 => Some(format!("Bearer {}", encode(&text(b)))),
        5 => Some(encode(&text(b))),
        _ => None,
    };
    let last_event_id = (b.below(3) == 0).then(|| match b.below(3) {
        0 => b.u64().to_string(),
        1 => format!("-{}", b.u64()),
        _ => encode(&text(b)),
    });
    let content_type = match b.below(5) {
        0..=2 => Some("application/json"),
        3 => Some("text/plain"),
        _ => None,
    };
    let body = if method == Method::POST || b.below(8) == 0 {
        body(b)
    } else {
        Vec::new()
    };
    Plan {
        method,
        path,
        query,
        auth,
        last_event_id,
        content_type,
        body,
    }
}

/// One request through a node's router. Invariants: no panic and no hang; no 5xx other
/// than 503; every refusal (4xx, 503) is a JSON object with an `error` text (docs/api.md);
/// a request without a valid token never gets data from a protected route; a token in
/// the URL is refused with 400.
pub fn request(data: &[u8]) {
    static NODE: Mutex<Option<ServedNode>> = Mutex::new(None);
    let mut guard = NODE.lock().unwrap_or_else(|e| e.into_inner());
    if guard
        .as_ref()
        .is_none_or(|n| n.requests >= REQUESTS_PER_NODE)
    {
        *guard = None;
        *guard = Some(ServedNode::start());
    }
    let node = guard.as_mut().expect("a node");
    node.requests += 1;
    let mut b = Bytes::new(data);
    let plan = if b.bool() {
        let mut plan = well_formed(&mut b, &node.runs);
        if b.below(3) == 0 {
            plan.mutate(&mut b);
        }
        plan
    } else {
        free(&mut b, &node.runs)
    };
    let Plan {
        method,
        path,
        query,
        auth,
        last_event_id,
        content_type,
        body: bytes,
    } = plan;
    let valid_token = auth
        .as_deref()
        .is_some_and(|a| TOKENS.iter().any(|(t, _)| a == format!("Bearer {t}")));
    let token_in_url = query.iter().any(|q| q.starts_with("token="));
    let uri = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{}", query.join("&"))
    };
    let mut req = Request::builder().method(method.clone()).uri(&uri);
    if let Some(a) = &auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    if let Some(v) = &last_event_id {
        req = req.header("last-event-id", v);
    }
    if let Some(c) = content_type {
        req = req.header(header::CONTENT_TYPE, c);
    }
    let Ok(req) = req.body(Body::from(bytes)) else {
        // Not a request hyper would hand over (an invalid URI or header).
        return;
    };
    let app = node.app.clone();
    let events = path == "/v1/events";
    let (status, content, ctype) = node.client.block_on(async move {
        let resp = app.oneshot(req).await.expect("the router answers");
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if events && status == StatusCode::OK {
            // An event stream does not end: its first bytes are enough.
            return (status, Vec::new(), ctype);
        }
        let body = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .expect("a body under 64 MiB");
        (status, body.to_vec(), ctype)
    });
    tally(&method, &path, status);
    let shown = || {
        format!(
            "{method} {uri} -> {status}: {}",
            String::from_utf8_lossy(&content[..content.len().min(300)])
        )
    };
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "a server error: {}",
        shown()
    );
    if (status.is_client_error() || status.is_server_error()) && method != Method::HEAD {
        let v: Value = serde_json::from_slice(&content)
            .unwrap_or_else(|e| panic!("a refusal that is not JSON ({e}): {}", shown()));
        assert!(
            v.get("error").is_some_and(Value::is_string),
            "a refusal without an `error` text: {}",
            shown()
        );
        assert!(
            ctype.starts_with("application/json"),
            "{ctype}: {}",
            shown()
        );
    }
    let protected = path.starts_with("/v1/") || path == "/metrics";
    if protected && !valid_token && status.is_success() {
        panic!(
            "a protected route answered without a valid token: {}",
            shown()
        );
    }
    if protected && token_in_url && status.is_success() {
        panic!("a token in the URL was not refused: {}", shown());
    }
    if method == Method::POST
        && path == "/v1/runs"
        && status.is_success()
        && let Some(run) = serde_json::from_slice::<Value>(&content)
            .ok()
            .and_then(|v| v.get("run")?.as_str()?.parse::<Uuid>().ok())
    {
        node.runs.push(run);
    }
}

/// What the requests got, by method, route and status (`http_api_requests` prints it, so
/// a run shows which routes its inputs reached).
static TALLY: Mutex<std::collections::BTreeMap<(String, String, u16), u64>> =
    Mutex::new(std::collections::BTreeMap::new());

fn tally(method: &Method, path: &str, status: StatusCode) {
    // The route's pattern: ids and free text folded away.
    let route = match path.split('/').nth(2) {
        Some("runs") if path.contains("/gates/") => "/v1/runs/{id}/gates/{gate}",
        Some("runs") if path.ends_with("/cancel") => "/v1/runs/{id}/cancel",
        Some("runs") if path.len() > "/v1/runs".len() => "/v1/runs/{id}",
        Some("tasks") if path.len() > "/v1/tasks".len() => "/v1/tasks/{id}",
        _ if path.starts_with("/v1/")
            || ["/healthz", "/readyz", "/metrics", "/"].contains(&path) =>
        {
            path
        }
        _ => "(other)",
    };
    if let Ok(mut t) = TALLY.lock() {
        *t.entry((method.to_string(), route.to_string(), status.as_u16()))
            .or_default() += 1;
    }
}

/// The tally so far, one line per method, route and status.
pub fn tally_lines() -> Vec<String> {
    TALLY
        .lock()
        .map(|t| {
            t.iter()
                .map(|((m, r, s), n)| format!("{m} {r} {s}: {n}"))
                .collect()
        })
        .unwrap_or_default()
}

/// A token file's text: lines a user may write (`token role [name]`, comments, blanks),
/// some of them wrong, or the input's bytes as text.
fn token_file_text(b: &mut Bytes) -> String {
    if b.below(4) == 0 {
        return String::from_utf8_lossy(b.rest()).into_owned();
    }
    let mut out = String::new();
    for _ in 0..b.below(8) {
        match b.below(8) {
            0 => out.push_str("# a comment"),
            1 => {}
            _ => {
                let len = match b.below(6) {
                    0 => b.below(20),
                    1 => 4090 + b.below(12),
                    _ => 16 + b.below(48),
                };
                let token: String = (0..len)
                    .map(|_| {
                        let c = b.below(97) as u8 + 30;
                        if c > 126 { ' ' } else { c as char }
                    })
                    .collect();
                out.push_str(&token);
                if b.bool() {
                    out.push(if b.bool() { ' ' } else { '\t' });
                    out.push_str(b.pick(&["viewer", "submitter", "operator", "admin", "root", ""]));
                }
                if b.below(3) == 0 {
                    out.push(' ');
                    out.push_str(&arb::string(b));
                }
            }
        }
        out.push_str(b.pick(&["\n", "\r\n", "\n\n"]));
    }
    out
}

/// One token file read as `muster serve --token-file` reads it. Invariants: no panic; an
/// error names the file (and the line, for a bad line) and never quotes the token; a file
/// that loads gives each listed token its role, and `find` knows no other.
pub fn token_file(data: &[u8]) {
    let mut b = Bytes::new(data);
    let text = token_file_text(&mut b);
    let path = Path::new("/etc/muster/tokens");
    match Tokens::parse(&text, path) {
        Ok(tokens) => {
            let mut seen = 0;
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let fields: Vec<&str> = line.split_whitespace().collect();
                let caller = tokens
                    .find(fields[0])
                    .unwrap_or_else(|| panic!("a listed token is unknown: {line:?}"));
                let role = fields.get(1).map_or(Ok(Role::Admin), |r| r.parse::<Role>());
                assert_eq!(Ok(caller.role), role.map_err(|_| ()), "{line:?}");
                assert_eq!(caller.name.as_deref(), fields.get(2).copied());
                seen += 1;
            }
            assert_eq!(tokens.len(), seen);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("/etc/muster/tokens"), "names the file: {msg}");
            for line in text.lines() {
                let Some(first) = line.split_whitespace().next() else {
                    continue;
                };
                // A token that appears once in the file (so no name or role quotes it).
                if first.len() >= 16 && text.matches(first).count() == 1 && !first.starts_with('#')
                {
                    assert!(!msg.contains(first), "quotes a token: {msg}");
                }
            }
        }
    }
    // A token on its own, as a variable gives it.
    let one = String::from_utf8_lossy(data);
    match Token::parse(&one, "MUSTER_TOKEN") {
        Ok(t) => assert!(t.matches(one.trim())),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("MUSTER_TOKEN"), "names the variable: {msg}");
            if one.trim().len() >= 16 {
                assert!(!msg.contains(one.trim()), "quotes the token: {msg}");
            }
        }
    }
}
