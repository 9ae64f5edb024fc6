//! One MCP session: starting a stdio server (as a command agent's process is started) or
//! reaching a streamable-HTTP one, `initialize` through rmcp, routing the server's progress
//! notifications to whoever registered their token, and noticing when the session ends
//! (the server exited, its stdout closed, the HTTP session dropped), with why.
//!
//! It must not retry or restart anything (the instance's supervisor does), and it kills
//! what it started on every way out (the process group dies with the [`Session`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use rmcp::model::{
    ClientCapabilities, ClientConfig, Implementation, ProgressNotificationParam, ProgressToken,
};
use rmcp::service::{NotificationContext, RunningService, RunningServiceCancellationToken};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, Peer, RoleClient, ServiceExt};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::config::McpConfig;
use muster_command::ProcessGroup;

/// Called for each progress notification of one request.
pub(crate) type Heartbeat = Arc<dyn Fn() + Send + Sync>;

/// How many lines of a server's stderr are kept for error messages, and how long each.
const STDERR_LINES: usize = 20;
const STDERR_LINE_CHARS: usize = 500;

/// Progress token → what to call when a notification carries it.
#[derive(Clone, Default)]
pub(crate) struct Progress(Arc<Mutex<HashMap<ProgressToken, Heartbeat>>>);

impl Progress {
    pub(crate) fn insert(&self, token: ProgressToken, beat: Heartbeat) {
        self.0.lock().insert(token, beat);
    }

    pub(crate) fn remove(&self, token: &ProgressToken) {
        self.0.lock().remove(token);
    }
}

/// The client side of the session: muster's name, and progress routing.
struct Handler {
    progress: Progress,
}

impl ClientHandler for Handler {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let beat = self.progress.0.lock().get(&params.progress_token).cloned();
        if let Some(beat) = beat {
            beat();
        }
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("muster", env!("CARGO_PKG_VERSION")),
        )
    }
}

/// An initialised session to one server.
pub(crate) struct Session {
    /// Sends requests and notifications.
    pub(crate) peer: Peer<RoleClient>,
    /// Where progress notifications go.
    pub(crate) progress: Progress,
    /// `Some(why)` once the session has ended.
    pub(crate) ended: watch::Receiver<Option<String>>,
    cancel: Mutex<Option<RunningServiceCancellationToken>>,
    /// The stdio server's process group, killed when the session is dropped.
    group: Option<ProcessGroup>,
    /// The stdio server's pid.
    pub(crate) pid: Option<u32>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts or reaches the server of `config` for the instance `instance` and initialises
    /// a session, within `config.connect_timeout()`.
    pub(crate) async fn connect(instance: &str, config: &McpConfig) -> Result<Session, String> {
        let limit = config.connect_timeout();
        match tokio::time::timeout(limit, Self::open(instance, config)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "MCP server {}: no session within {} (start and `initialize`)",
                config.target(),
                humantime_secs(limit)
            )),
        }
    }

    async fn open(instance: &str, config: &McpConfig) -> Result<Session, String> {
        let progress = Progress::default();
        let handler = Handler {
            progress: progress.clone(),
        };
        let (tx, ended) = watch::channel(None);
        if let Some(command) = config.command() {
            let mut cmd = muster_command::agent_command(instance, &command)
                .map_err(|e| format!("MCP server {}: {}", config.target(), e.message))?;
            let mut child = cmd.spawn().map_err(|e| {
                format!(
                    "MCP server {}: {}",
                    config.target(),
                    muster_command::spawn_error(instance, &command, &e).message
                )
            })?;
            let group = ProcessGroup::of(&child);
            let pid = child.id();
            let (Some(stdin), Some(stdout), Some(stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                // `agent_command` pipes all three.
                return Err(format!("MCP server {}: no pipes", config.target()));
            };
            tracing::debug!(instance, ?pid, "MCP server started");
            let tail = Arc::new(Mutex::new(VecDeque::new()));
            let reader = tokio::spawn(keep_tail(stderr, tail.clone()));
            let service = match handler.serve((stdout, stdin)).await {
                Ok(s) => s,
                Err(e) => {
                    group.kill();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), reader).await;
                    return Err(format!(
                        "MCP server {}: the session did not initialise: {e}{}",
                        config.target(),
                        tail_text(&tail)
                    ));
                }
            };
            tracing::debug!(instance, ?pid, "MCP session initialised");
            let cancel = service.cancellation_token();
            let peer = service.peer().clone();
            let target = config.target();
            tokio::spawn(async move {
                let quit = tokio::select! {
                    status = child.wait() => Err(status),
                    quit = waiting(service) => Ok(quit),
                };
                // A session that ended because the server died is told by its exit
                // status; one that ended otherwise (stdout closed) waits for it briefly.
                let (status, ended) = match quit {
                    Err(status) => (Some(status), String::new()),
                    Ok(q) => (
                        tokio::time::timeout(std::time::Duration::from_secs(1), child.wait())
                            .await
                            .ok(),
                        q,
                    ),
                };
                // What it printed last says why; its stderr ends with it.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), reader).await;
                let why = match status {
                    Some(Ok(s)) => format!(
                        "MCP server {target} exited ({}){}",
                        muster_command::describe_status(s),
                        tail_text(&tail)
                    ),
                    Some(Err(e)) => format!("MCP server {target}: cannot wait for it: {e}"),
                    None => format!("MCP session to {target} ended: {ended}{}", tail_text(&tail)),
                };
                let _ = tx.send(Some(why));
            });
            Ok(Session {
                peer,
                progress,
                ended,
                cancel: Mutex::new(Some(cancel)),
                group: Some(group),
                pid,
            })
        } else if let Some(url) = &config.url {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut http = StreamableHttpClientTransportConfig::with_uri(url.clone());
            if let Some(var) = &config.token_env {
                let token = std::env::var(var).map_err(|_| {
                    format!("MCP server {url}: the bearer token variable `{var}` is not set")
                })?;
                http = http.auth_header(token);
            }
            let mut headers = HashMap::new();
            for (k, v) in &config.headers {
                let name = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| format!("MCP server {url}: header `{k}`: {e}"))?;
                let value = http::HeaderValue::from_str(v)
                    .map_err(|e| format!("MCP server {url}: header `{k}`: {e}"))?;
                headers.insert(name, value);
            }
            let transport =
                StreamableHttpClientTransport::from_config(http.custom_headers(headers));
            let service = handler
                .serve(transport)
                .await
                .map_err(|e| format!("MCP server {url}: the session did not initialise: {e}"))?;
            let cancel = service.cancellation_token();
            let peer = service.peer().clone();
            let target = url.clone();
            tokio::spawn(async move {
                let quit = waiting(service).await;
                let _ = tx.send(Some(format!("MCP session to {target} ended: {quit}")));
            });
            Ok(Session {
                peer,
                progress,
                ended,
                cancel: Mutex::new(Some(cancel)),
                group: None,
                pid: None,
            })
        } else {
            Err("an MCP backend needs `program` or `url`".into())
        }
    }

    /// Why the session ended, if it has.
    pub(crate) fn ended_why(&self) -> Option<String> {
        self.ended.borrow().clone()
    }

    /// Ends the session and kills what it started.
    pub(crate) fn close(&self) {
        if let Some(c) = self.cancel.lock().take() {
            c.cancel();
        }
        if let Some(g) = &self.group {
            g.kill();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

/// Waits for the service to end, saying how.
async fn waiting(service: RunningService<RoleClient, Handler>) -> String {
    match service.waiting().await {
        Ok(rmcp::service::QuitReason::Cancelled) => "cancelled".into(),
        Ok(rmcp::service::QuitReason::Closed) => "the connection closed".into(),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("its task failed: {e}"),
    }
}

/// How much of a server's stderr one read takes.
const STDERR_CHUNK: usize = 8 << 10;

/// Keeps the last [`STDERR_LINES`] lines of a server's stderr, each cut at
/// [`STDERR_LINE_CHARS`] bytes (a line is cut at a character boundary): what it holds is
/// bounded however long a line is, even one that never ends (a server printing 10 MB
/// without a newline costs [`STDERR_CHUNK`] and one cut line, not 10 MB).
async fn keep_tail(
    mut stderr: impl tokio::io::AsyncRead + Unpin,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut chunk = vec![0u8; STDERR_CHUNK];
    // The line being written, cut at the bound; the rest of it is skipped.
    let mut line: Vec<u8> = Vec::with_capacity(STDERR_LINE_CHARS);
    let push = |line: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line);
        let cut: String = text.chars().take(STDERR_LINE_CHARS).collect();
        line.clear();
        let mut t = tail.lock();
        if t.len() == STDERR_LINES {
            t.pop_front();
        }
        t.push_back(cut);
    };
    loop {
        let n = match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rest = &chunk[..n];
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let room = STDERR_LINE_CHARS.saturating_sub(line.len());
            line.extend_from_slice(&rest[..i.min(room)]);
            push(&mut line);
            rest = &rest[i + 1..];
        }
        let room = STDERR_LINE_CHARS.saturating_sub(line.len());
        line.extend_from_slice(&rest[..rest.len().min(room)]);
    }
    if !line.is_empty() {
        push(&mut line);
    }
}

/// `; stderr: ...` with the kept lines, or nothing.
fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    let t = tail.lock();
    if t.is_empty() {
        String::new()
    } else {
        let lines: Vec<&str> = t.iter().map(String::as_str).collect();
        format!("; stderr: {}", lines.join(" | "))
    }
}

fn humantime_secs(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// The test binary's allocator: the system's, noting the largest block each thread
    /// asked for (what a line buffered whole would need).
    struct Largest;

    thread_local! {
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    fn note(size: usize) {
        let _ = LARGEST.try_with(|c| {
            if size > c.get() {
                c.set(size);
            }
        });
    }

    // SAFETY: every call is handed to the system allocator unchanged; `note` only reads
    // and writes a thread-local `Cell` (const-initialised: it never allocates).
    unsafe impl GlobalAlloc for Largest {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: the caller's contract is passed on.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract is passed on.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            // SAFETY: the caller's contract is passed on.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Largest = Largest;

    #[tokio::test(flavor = "current_thread")]
    async fn a_ten_megabyte_stderr_line_without_a_newline_is_read_in_bounded_memory() {
        // A real child printing 10 MiB on one line, then a short last line with no end.
        let mut child = tokio::process::Command::new("python3")
            .args([
                "-c",
                "import sys\nsys.stderr.write('x' * (10 << 20))\nsys.stderr.write('\\nthe end')",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        LARGEST.with(|c| c.set(0));
        tokio::time::timeout(
            std::time::Duration::from_secs(120),
            keep_tail(stderr, tail.clone()),
        )
        .await
        .expect("stderr is read to its end");
        let largest = LARGEST.with(Cell::get);
        let _ = child.wait().await;
        assert!(
            largest < 1 << 20,
            "reading a 10 MiB stderr line asked for a block of {largest} bytes"
        );
        let t = tail.lock();
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[0].len(), STDERR_LINE_CHARS);
        assert_eq!(t[1], "the end");
    }
}
