//! Stdio mode: one long-lived process per agent instance, speaking JSON lines both ways.
//! This module owns that process's pipes: it writes task and cancel lines, decodes each
//! stdout line, demultiplexes the answers to the tasks in flight, and settles every pending
//! task (and tells the link, once) when the process goes away.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::config::CommandConfig;
use super::process::{
    base_command, capture_stderr, clip_message, describe_status, quote, quote_bytes, remaining_ms,
    spawn_error, ProcessGroup, StderrTail, MAX_OUTPUT_BYTES,
};
use muster_core::agents::agent::{AgentError, AgentLink, TaskContext};

/// How long a stdio process may live on after closing its stdout before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How long stdout is still read once the process has exited: what it wrote is in the pipe
/// already, so only a process it left behind holding stdout open makes this wait.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);
/// How long to wait for the rest of a dead process's stderr.
const STDERR_DRAIN: Duration = Duration::from_millis(500);
/// How long `stop` waits for the reader task to reap the killed process.
const STOP_WAIT: Duration = Duration::from_secs(2);
/// How long a stopped process (stdin closed) gets to exit on its own before its group is
/// killed.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// How long a failed stdin write waits for the reader to report the exit status instead.
const WRITE_FAILURE_WAIT: Duration = Duration::from_millis(500);
/// How many recently cancelled tasks a stdio agent remembers (so it cancels each once).
const RECENT_CANCELS: usize = 64;

/// The stdio side of a command agent: one process, started by [`Stdio::start`]. Dropping it
/// kills the process.
pub(super) struct Stdio {
    shared: Rc<Shared>,
}

/// State shared by the agent, its in-flight tasks and its reader/writer tasks.
struct Shared {
    name: Arc<str>,
    config: Arc<CommandConfig>,
    inner: RefCell<Inner>,
    stderr: RefCell<StderrTail>,
}

#[derive(Default)]
struct Inner {
    next_seq: u64,
    started: bool,
    stopping: bool,
    /// Why the process is gone, once it is.
    dead: Option<String>,
    writer: Option<mpsc::UnboundedSender<Outgoing>>,
    kill: Option<oneshot::Sender<()>>,
    /// The process's group, killed by whoever ends the process first.
    group: Option<Rc<ProcessGroup>>,
    reader: Option<JoinHandle<()>>,
    pending: HashMap<(Uuid, u64), Pending>,
    /// Tasks a cancel line was written for, most recent last.
    cancelled: VecDeque<(Uuid, u64)>,
}

struct Pending {
    seq: u64,
    tx: oneshot::Sender<Result<Value, AgentError>>,
    ctx: TaskContext,
}

struct Outgoing {
    line: String,
    ack: Option<oneshot::Sender<std::io::Result<()>>>,
}

/// A line the program may print on stdout.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AgentLine {
    Result {
        task_id: Uuid,
        #[serde(deserialize_with = "epoch")]
        epoch: u64,
        output: Value,
        /// The paths the attempt changed, checked against the task's write scope.
        #[serde(default)]
        touched: Option<Value>,
    },
    Error {
        task_id: Uuid,
        #[serde(deserialize_with = "epoch")]
        epoch: u64,
        message: String,
    },
    Heartbeat {
        #[serde(default)]
        task_id: Option<Uuid>,
        #[serde(default, deserialize_with = "optional_epoch")]
        epoch: Option<u64>,
    },
}

/// An epoch as the protocol schema describes it: a JSON integer from 0 to `u64::MAX`,
/// which (in JSON Schema) includes a number written with a zero fraction, such as `3.0`.
fn epoch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(e) = n.as_u64() {
        return Ok(e);
    }
    match n.as_f64() {
        // 2^64 is the first float past u64::MAX.
        Some(f) if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) => {
            Ok(f as u64)
        }
        _ => Err(serde::de::Error::custom(format!(
            "invalid epoch {n}, expected an integer from 0 to {}",
            u64::MAX
        ))),
    }
}

fn optional_epoch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => epoch(Value::Number(n))
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Removes a task's registration when its future ends or is dropped.
struct Registration {
    shared: Rc<Shared>,
    key: (Uuid, u64),
    seq: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.shared.inner.try_borrow_mut() {
            if inner.pending.get(&self.key).map(|p| p.seq) == Some(self.seq) {
                // Dropped unanswered (timed out, or cancelled by the runtime): tell the
                // program to stop working on it.
                inner.pending.remove(&self.key);
                inner.send_cancel(self.key);
            }
        }
    }
}

impl Inner {
    /// Writes a cancel line for `key`, once per task, while the process is up.
    fn send_cancel(&mut self, key: (Uuid, u64)) {
        if self.dead.is_some() || self.cancelled.contains(&key) {
            return;
        }
        let Some(writer) = &self.writer else {
            return;
        };
        let line = json!({"type": "cancel", "task_id": key.0, "epoch": key.1});
        let _ = writer.send(Outgoing {
            line: format!("{line}\n"),
            ack: None,
        });
        if self.cancelled.len() >= RECENT_CANCELS {
            self.cancelled.pop_front();
        }
        self.cancelled.push_back(key);
    }
}

impl Stdio {
    /// The stdio side for the instance `name`; nothing runs until [`Stdio::start`].
    pub(super) fn new(name: Arc<str>, config: Arc<CommandConfig>) -> Self {
        Stdio {
            shared: Rc::new(Shared {
                name: name.clone(),
                config,
                inner: RefCell::new(Inner::default()),
                stderr: RefCell::new(StderrTail::new(name.clone())),
            }),
        }
    }

    /// Spawns the process and its reader and writer tasks (with `spawn_local`) when polled.
    pub(super) fn start(
        &self,
        link: AgentLink,
    ) -> impl Future<Output = Result<(), AgentError>> + 'static {
        let shared = self.shared.clone();
        async move { start_stdio(shared, link) }
    }

    /// Sends one task to the process and waits for its answer.
    pub(super) fn run(
        &self,
        input: Value,
        ctx: TaskContext,
    ) -> impl Future<Output = Result<Value, AgentError>> + 'static {
        run_stdio_task(self.shared.clone(), input, ctx)
    }

    /// Tells the process to stop working on `task_id` at `epoch`.
    pub(super) fn cancel(&self, task_id: Uuid, epoch: u64) {
        if let Ok(mut inner) = self.shared.inner.try_borrow_mut() {
            inner.send_cancel((task_id, epoch));
        }
    }

    /// Stops the process: closes its stdin and gives it [`STOP_GRACE`] to finish on its
    /// own (a program may clean up what it made), then kills its whole process group and
    /// waits (bounded) for the reader to reap it.
    pub(super) fn stop(&self) -> impl Future<Output = ()> + 'static {
        let shared = self.shared.clone();
        async move {
            let (kill, reader, group) = {
                let Ok(mut inner) = shared.inner.try_borrow_mut() else {
                    return;
                };
                inner.stopping = true;
                // Dropping the writer closes the program's stdin: its cue to exit.
                inner.writer = None;
                (inner.kill.take(), inner.reader.take(), inner.group.take())
            };
            let mut reader = reader;
            if let Some(r) = reader.as_mut() {
                if tokio::time::timeout(STOP_GRACE, r).await.is_ok() {
                    reader = None;
                }
            }
            // Whatever is left of the group (the program, if it did not exit, and anything
            // it started) is killed.
            if let Some(group) = group {
                group.kill();
            }
            if let Some(kill) = kill {
                let _ = kill.send(());
            }
            if let Some(reader) = reader {
                if tokio::time::timeout(STOP_WAIT, reader).await.is_err() {
                    tracing::warn!(agent = %shared.name, "agent process did not go away within {STOP_WAIT:?} of stop");
                }
            }
        }
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        // Never leave a process behind: the reader task owns the child and would otherwise
        // keep it alive, and may never run again (its runtime may be going away too). So
        // the group is killed here and now; the reader only reaps.
        if let Ok(mut inner) = self.shared.inner.try_borrow_mut() {
            inner.stopping = true;
            inner.writer = None;
            if let Some(group) = inner.group.take() {
                group.kill();
            }
            if let Some(kill) = inner.kill.take() {
                let _ = kill.send(());
            }
        }
    }
}

fn start_stdio(shared: Rc<Shared>, link: AgentLink) -> Result<(), AgentError> {
    let name = shared.name.clone();
    let config = shared.config.clone();
    {
        let inner = shared.inner.borrow();
        if inner.started {
            return Err(AgentError::new(format!(
                "agent {name}: started twice (a command agent runs one process per instance)"
            )));
        }
    }
    let mut child = base_command(&name, &config)
        .spawn()
        .map_err(|e| spawn_error(&name, &config, &e))?;
    let group = Rc::new(ProcessGroup::of(&child));
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(AgentError::new(format!(
            "agent {name}: the process's stdio pipes are missing"
        )));
    };

    let (writer_tx, writer_rx) = mpsc::unbounded_channel();
    let (kill_tx, kill_rx) = oneshot::channel();
    tokio::task::spawn_local(write_lines(name.clone(), stdin, writer_rx));
    let stderr_task = tokio::task::spawn_local({
        let shared = shared.clone();
        let mut stderr = stderr;
        async move { capture_stderr(&mut stderr, &shared.stderr).await }
    });
    let reader = tokio::task::spawn_local(read_stdout(
        shared.clone(),
        child,
        stdout,
        stderr_task,
        kill_rx,
        group.clone(),
        link,
    ));

    let mut inner = shared.inner.borrow_mut();
    inner.started = true;
    inner.writer = Some(writer_tx);
    inner.kill = Some(kill_tx);
    inner.group = Some(group);
    inner.reader = Some(reader);
    Ok(())
}

async fn run_stdio_task(
    shared: Rc<Shared>,
    input: Value,
    ctx: TaskContext,
) -> Result<Value, AgentError> {
    let name = shared.name.clone();
    let key = (ctx.task_id, ctx.epoch);
    let (tx, mut rx) = oneshot::channel();
    let (writer, _registration) = {
        let mut inner = shared.inner.borrow_mut();
        if let Some(why) = &inner.dead {
            return Err(AgentError::exited(format!(
                "agent {name}: the agent process is gone ({why}); cannot take task {}",
                ctx.task_id
            )));
        }
        let writer = match (&inner.writer, inner.started, inner.stopping) {
            (_, false, _) => {
                return Err(AgentError::new(format!(
                    "agent {name}: the agent process was not started"
                )))
            }
            (_, _, true) | (None, _, _) => {
                return Err(AgentError::exited(format!(
                    "agent {name}: the agent is stopping; cannot take task {}",
                    ctx.task_id
                )))
            }
            (Some(writer), true, false) => writer.clone(),
        };
        if inner.pending.contains_key(&key) {
            return Err(AgentError::new(format!(
                "agent {name}: task {} at epoch {} is already in flight on this instance",
                ctx.task_id, ctx.epoch
            )));
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.pending.insert(
            key,
            Pending {
                seq,
                tx,
                ctx: ctx.clone(),
            },
        );
        (
            writer,
            Registration {
                shared: shared.clone(),
                key,
                seq,
            },
        )
    };

    let line = json!({
        "type": "task",
        "task_id": ctx.task_id,
        "epoch": ctx.epoch,
        "attempt": ctx.attempt,
        "capability": &*ctx.capability,
        "input": input,
        "deadline_ms": remaining_ms(&ctx),
    });
    let mut line = line;
    if let (Some(scope), Some(obj)) = (ctx.scope(), line.as_object_mut()) {
        obj.insert("scope".into(), json!(scope));
    }
    let (ack_tx, ack_rx) = oneshot::channel();
    let sent = writer.send(Outgoing {
        line: format!("{line}\n"),
        ack: Some(ack_tx),
    });
    drop(writer);
    let written = match sent {
        Err(_) => Err("the stdin writer is gone".to_string()),
        Ok(()) => match ack_rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the stdin writer is gone".to_string()),
        },
    };
    if let Err(why) = written {
        // The process is most likely dead: give the reader a moment to report how it died,
        // which says more than "broken pipe".
        if let Ok(Ok(result)) = tokio::time::timeout(WRITE_FAILURE_WAIT, &mut rx).await {
            return result;
        }
        return Err(AgentError::exited(format!(
            "agent {name}: writing task {} to the agent's stdin failed: {why}",
            ctx.task_id
        )));
    }
    match rx.await {
        Ok(result) => result,
        Err(_) => Err(AgentError::exited(format!(
            "agent {name}: task {} was abandoned by the agent's reader",
            ctx.task_id
        ))),
    }
}

/// Owns the process's stdin: writes the queued lines in order.
async fn write_lines(
    name: Arc<str>,
    mut stdin: ChildStdin,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut broken: Option<String> = None;
    while let Some(msg) = rx.recv().await {
        let result = match &broken {
            Some(why) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                why.clone(),
            )),
            None => {
                let r = async {
                    stdin.write_all(msg.line.as_bytes()).await?;
                    stdin.flush().await
                }
                .await;
                if let Err(e) = &r {
                    broken = Some(e.to_string());
                }
                r
            }
        };
        match msg.ack {
            Some(ack) => {
                let _ = ack.send(result);
            }
            None => {
                if let Err(e) = result {
                    tracing::debug!(agent = %name, "writing to the agent's stdin failed: {e}");
                }
            }
        }
    }
    // Every sender is gone: dropping stdin closes the pipe.
}

/// One line the program printed on stdout.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line (without its `\n`).
    Text(String),
    /// A line longer than [`MAX_OUTPUT_BYTES`]; the rest of it is skipped.
    TooLong,
    /// A line that is not UTF-8: where the first bad byte is, and a quote of the line.
    NotUtf8 { offset: usize, quoted: String },
}

/// Splits a stream into [`Line`]s, holding at most [`MAX_OUTPUT_BYTES`] of one line.
/// Cancel-safe: a line cut short by a cancelled `next` is completed by the next call.
struct Lines<R> {
    reader: BufReader<R>,
    line: Vec<u8>,
    /// Inside a line already reported as too long: skip to its end.
    skipping: bool,
    /// The longest line kept ([`MAX_OUTPUT_BYTES`]; smaller in tests).
    limit: usize,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    fn new(reader: R) -> Self {
        Lines {
            reader: BufReader::new(reader),
            line: Vec::new(),
            skipping: false,
            limit: MAX_OUTPUT_BYTES,
        }
    }

    /// The next line; `None` at EOF or on a read error.
    async fn next(&mut self) -> Option<Line> {
        loop {
            let available = match self.reader.fill_buf().await {
                Ok(available) => available,
                Err(e) => {
                    tracing::debug!("reading an agent process's stdout failed: {e}");
                    &[]
                }
            };
            if available.is_empty() {
                // EOF: an unterminated last line is still a line.
                self.skipping = false;
                if self.line.is_empty() {
                    return None;
                }
                return Some(self.take_line());
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let len = newline.unwrap_or(available.len());
            let mut too_long = false;
            if self.skipping {
                // The rest of a line already reported: dropped.
            } else if self.line.len() + len > self.limit {
                self.line = Vec::new();
                self.skipping = true;
                too_long = true;
            } else {
                self.line.extend_from_slice(&available[..len]);
            }
            self.reader.consume(len + usize::from(newline.is_some()));
            if too_long {
                if newline.is_some() {
                    self.skipping = false;
                }
                return Some(Line::TooLong);
            }
            if newline.is_some() {
                if std::mem::replace(&mut self.skipping, false) {
                    continue;
                }
                return Some(self.take_line());
            }
        }
    }

    fn take_line(&mut self) -> Line {
        match String::from_utf8(std::mem::take(&mut self.line)) {
            Ok(line) => Line::Text(line.trim_end().to_string()),
            Err(e) => Line::NotUtf8 {
                offset: e.utf8_error().valid_up_to(),
                quoted: quote_bytes(e.as_bytes()),
            },
        }
    }
}

/// Why the reader stopped reading.
enum End {
    /// `stop` (or dropping the agent) asked for the process to be killed.
    Killed,
    /// The process exited.
    Exited(std::io::Result<std::process::ExitStatus>),
    /// The process closed its stdout.
    StdoutClosed,
}

/// Owns the process: demultiplexes its stdout lines, and when it ends (or is killed) fails
/// every task in flight and tells the link.
async fn read_stdout(
    shared: Rc<Shared>,
    mut child: Child,
    stdout: ChildStdout,
    stderr_task: JoinHandle<()>,
    mut kill_rx: oneshot::Receiver<()>,
    group: Rc<ProcessGroup>,
    link: AgentLink,
) {
    let name = shared.name.clone();
    let mut lines = Lines::new(stdout);
    let mut kill_gone = false;
    // The process's exit ends it, not the end of its stdout: a process it left running in
    // the background may hold stdout open for ever.
    let end = loop {
        tokio::select! {
            // `stop` kills the group before it says so: look at what it says first.
            biased;
            killed = &mut kill_rx, if !kill_gone => match killed {
                Ok(()) => break End::Killed,
                Err(_) => kill_gone = true,
            },
            line = lines.next() => match line {
                Some(line) => on_line(&shared, line, &link),
                None => break End::StdoutClosed,
            },
            status = child.wait() => break End::Exited(status),
        }
    };

    let status = match end {
        End::Killed => {
            group.kill();
            let _ = child.start_kill();
            child.wait().await
        }
        End::Exited(status) => {
            // Whatever it left running goes with it (and cannot hold stdout open).
            group.kill();
            // Answers it wrote just before exiting are in the pipe already: deliver them.
            let drain = async {
                while let Some(line) = lines.next().await {
                    on_line(&shared, line, &link);
                }
            };
            if tokio::time::timeout(OUTPUT_DRAIN, drain).await.is_err() {
                tracing::debug!(agent = %name, "agent process exited but its stdout is still open (held by a process it started)");
            }
            status
        }
        End::StdoutClosed => match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(agent = %name, "agent process closed its stdout but is still running; killing it");
                group.kill();
                let _ = child.start_kill();
                child.wait().await
            }
        },
    };
    // However it ended, nothing it started outlives it. (Right after the wait, before the
    // group's id could be reused.)
    group.kill();
    let _ = tokio::time::timeout(STDERR_DRAIN, stderr_task).await;

    let status_text = match &status {
        Ok(status) => describe_status(*status),
        Err(e) => format!("an unknown status ({e})"),
    };
    let tail = match shared.stderr.try_borrow() {
        Ok(tail) => tail.text(),
        Err(_) => "(unavailable)".to_string(),
    };
    let (pending, stopping) = {
        let Ok(mut inner) = shared.inner.try_borrow_mut() else {
            return;
        };
        inner.dead = Some(format!("it exited with {status_text}; stderr tail: {tail}"));
        inner.writer = None;
        inner.kill = None;
        inner.group = None;
        let pending: Vec<Pending> = inner.pending.drain().map(|(_, p)| p).collect();
        (pending, inner.stopping)
    };
    let message = if stopping {
        format!("agent {name}: the agent was stopped during the task")
    } else {
        format!(
            "agent {name}: agent process exited with {status_text} during the task; stderr tail: {tail}"
        )
    };
    for p in pending {
        let _ = p.tx.send(Err(AgentError::exited(message.clone())));
    }
    if stopping {
        tracing::debug!(agent = %name, "agent process stopped ({status_text})");
        return;
    }
    match status {
        Ok(s) if s.success() => {
            tracing::info!(agent = %name, "agent process exited with {status_text}");
            link.exited(Ok(()));
        }
        _ => {
            tracing::warn!(agent = %name, "agent process exited with {status_text}; stderr tail: {tail}");
            link.exited(Err(format!(
                "agent process exited with {status_text}; stderr tail: {tail}"
            )));
        }
    }
}

/// Fails every task in flight with a protocol error (the line that broke the protocol
/// cannot be attributed to one task).
fn fail_all(shared: &Shared, message: String) {
    tracing::warn!(agent = %shared.name, "{message}");
    let pending: Vec<Pending> = match shared.inner.try_borrow_mut() {
        Ok(mut inner) => inner.pending.drain().map(|(_, p)| p).collect(),
        Err(_) => Vec::new(),
    };
    for p in pending {
        let _ = p.tx.send(Err(AgentError::protocol(message.clone())));
    }
}

/// What one stdout line says.
#[derive(Debug)]
enum Decoded {
    /// A blank line: nothing.
    Blank,
    /// A protocol line.
    Line(AgentLine),
    /// A line that breaks the protocol, and why.
    Broken(String),
}

/// Decodes one stdout line of agent `name` (no side effects).
fn decode(name: &str, line: Line) -> Decoded {
    let line = match line {
        Line::Text(line) => line,
        Line::TooLong => {
            return Decoded::Broken(format!(
                "agent {name} printed a line longer than {MAX_OUTPUT_BYTES} bytes \
                 (the limit for one protocol line)"
            ));
        }
        Line::NotUtf8 { offset, quoted } => {
            return Decoded::Broken(format!(
                "agent {name} printed a line that is not valid UTF-8 (at byte {offset}): {quoted}"
            ));
        }
    };
    if line.trim().is_empty() {
        return Decoded::Blank;
    }
    match serde_json::from_str(&line) {
        Ok(parsed) => Decoded::Line(parsed),
        Err(e) => Decoded::Broken(format!(
            "agent {name} printed a line that is not protocol JSON ({e}): {}",
            quote(&line)
        )),
    }
}

/// Handles one stdout line.
fn on_line(shared: &Shared, line: Line, link: &AgentLink) {
    let name = &shared.name;
    let parsed = match decode(name, line) {
        Decoded::Blank => return,
        Decoded::Line(parsed) => parsed,
        Decoded::Broken(message) => return fail_all(shared, message),
    };
    match parsed {
        AgentLine::Heartbeat {
            task_id: None,
            epoch: _,
        } => link.alive(),
        AgentLine::Heartbeat {
            task_id: Some(task_id),
            epoch,
        } => {
            let ctx = shared.inner.try_borrow().ok().and_then(|inner| {
                inner
                    .pending
                    .iter()
                    .find(|((id, ep), _)| {
                        *id == task_id
                            && match epoch {
                                None => true,
                                Some(e) => e == *ep,
                            }
                    })
                    .map(|(_, p)| p.ctx.clone())
            });
            match ctx {
                Some(ctx) => ctx.heartbeat(),
                None => tracing::warn!(
                    agent = %name,
                    "heartbeat for task {task_id} (epoch {epoch:?}), which is not in flight; ignored"
                ),
            }
        }
        AgentLine::Result {
            task_id,
            epoch,
            output,
            touched,
        } => {
            // What it touched must lie inside the write scope it was given (no scope:
            // nothing to check against).
            let verdict = touched.and_then(|t| {
                let scope = shared.inner.try_borrow().ok().and_then(|inner| {
                    inner
                        .pending
                        .get(&(task_id, epoch))
                        .and_then(|p| p.ctx.envelope.scope.clone())
                })?;
                scope.check_touched("touched", &t).err()
            });
            match verdict {
                Some(violation) => {
                    settle(shared, task_id, epoch, Err(AgentError::contract(violation)))
                }
                None => settle(shared, task_id, epoch, Ok(output)),
            }
        }
        AgentLine::Error {
            task_id,
            epoch,
            message,
        } => settle(
            shared,
            task_id,
            epoch,
            Err(AgentError::new(clip_message(&message))),
        ),
    }
}

/// Delivers an answer to the task it names, or fails a task whose epoch it got wrong.
fn settle(shared: &Shared, task_id: Uuid, epoch: u64, result: Result<Value, AgentError>) {
    let name = &shared.name;
    let (exact, other_epochs) = {
        let Ok(mut inner) = shared.inner.try_borrow_mut() else {
            return;
        };
        match inner.pending.remove(&(task_id, epoch)) {
            Some(p) => (Some(p), Vec::new()),
            None => {
                let keys: Vec<(Uuid, u64)> = inner
                    .pending
                    .keys()
                    .filter(|(id, _)| *id == task_id)
                    .copied()
                    .collect();
                let others: Vec<(u64, Pending)> = keys
                    .into_iter()
                    .filter_map(|k| inner.pending.remove(&k).map(|p| (k.1, p)))
                    .collect();
                (None, others)
            }
        }
    };
    if let Some(p) = exact {
        let _ = p.tx.send(result);
        return;
    }
    if other_epochs.is_empty() {
        tracing::warn!(
            agent = %name,
            "answer for task {task_id} (epoch {epoch}), which is not in flight (late or unknown); ignored"
        );
        return;
    }
    for (expected, p) in other_epochs {
        let message = format!(
            "agent {name} answered task {task_id} with epoch {epoch}, expected epoch {expected}"
        );
        tracing::warn!(agent = %name, "{message}");
        let _ = p.tx.send(Err(AgentError::protocol(message)));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::time::timeout;

    use super::super::config::CommandMode;
    use super::super::process::MAX_OUTPUT_BYTES;
    use super::super::testing::{
        ctx, expect_err, fixture, local, read_pid, script, sh_with_pidfile, stdio, wait_gone,
        Recorder, T,
    };
    use super::*;

    async fn run(agent: &Stdio, input: Value, ctx: TaskContext) -> Result<Value, AgentError> {
        timeout(T, agent.run(input, ctx))
            .await
            .expect("the task hung")
    }

    fn agent(config: CommandConfig) -> Stdio {
        Stdio::new(Arc::from("echo#0"), Arc::new(config))
    }

    async fn started(config: CommandConfig, rec: &Recorder) -> Stdio {
        let agent = agent(config);
        timeout(T, agent.start(rec.link()))
            .await
            .expect("start hung")
            .expect("start failed");
        agent
    }

    fn stderr_lines_containing(agent: &Stdio, needle: &str) -> usize {
        let tail = agent.shared.stderr.borrow();
        tail.lines().filter(|l| l.contains(needle)).count()
    }

    #[tokio::test]
    async fn stdio_round_trip_and_stop() {
        local(async {
            let rec = Recorder::default();
            let agent = started(stdio(script("examples/agents/echo_stdio.py")), &rec).await;
            for i in 0..3 {
                let out = run(&agent, json!({"i": i}), ctx(1)).await.unwrap();
                assert_eq!(out, json!({"echo": {"i": i}, "agent": "echo#0"}));
            }
            assert!(
                rec.alive.load(Ordering::SeqCst) >= 1,
                "the startup heartbeat"
            );
            timeout(T, agent.stop()).await.unwrap();
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(e.exited, "{e:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(
                rec.exits().is_empty(),
                "a stop is not an exit: {:?}",
                rec.exits()
            );
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_handle_before_start_fails() {
        local(async {
            let agent = agent(stdio(script("examples/agents/echo_stdio.py")));
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(e.message.contains("not started"), "{}", e.message);
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_missing_program_fails_start() {
        local(async {
            let agent = agent(
                CommandConfig::new("/nonexistent/muster-agent").with_mode(CommandMode::Stdio),
            );
            let e = timeout(T, agent.start(AgentLink::detached()))
                .await
                .unwrap()
                .unwrap_err();
            assert!(
                e.message.contains("/nonexistent/muster-agent"),
                "{}",
                e.message
            );
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_runs_concurrent_tasks_out_of_order() {
        local(async {
            let rec = Recorder::default();
            let agent = started(stdio(fixture("slow_stdio.py")), &rec).await;
            // Long enough for the fast task to go round trip first on a busy machine.
            let slow =
                tokio::task::spawn_local(agent.run(json!({"n": 1, "delay_ms": 3000}), ctx(1)));
            let fast = run(&agent, json!({"n": 2, "delay_ms": 0}), ctx(1))
                .await
                .unwrap();
            assert_eq!(fast, json!({"n": 2}));
            assert!(!slow.is_finished(), "the slow task answered first");
            let slow = timeout(T * 6, slow).await.unwrap().unwrap().unwrap();
            assert_eq!(slow, json!({"n": 1}));
            agent.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_cancel_sends_the_cancel_line() {
        local(async {
            let rec = Recorder::default();
            let agent = started(stdio(fixture("slow_stdio.py")), &rec).await;
            let c = ctx(4);
            let (id, epoch) = (c.task_id, c.epoch);
            let task = tokio::task::spawn_local(agent.run(json!({"n": 1, "delay_ms": 20000}), c));
            tokio::time::sleep(Duration::from_millis(200)).await;
            agent.cancel(id, epoch);
            let e = timeout(T, task).await.unwrap().unwrap().unwrap_err();
            assert!(!e.exited && !e.protocol, "{e:?}");
            assert_eq!(e.message, "cancelled by the runtime");
            agent.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_dropped_task_is_cancelled_once() {
        local(async {
            let rec = Recorder::default();
            let agent = started(stdio(fixture("slow_stdio.py")), &rec).await;
            let c = ctx(9);
            let (id, epoch) = (c.task_id, c.epoch);
            // The owner's time bound passes: the task's future is dropped unanswered.
            let r = timeout(
                Duration::from_millis(200),
                agent.run(json!({"delay_ms": 20000}), c),
            )
            .await;
            assert!(r.is_err());
            // The runtime's own cancel for the same task does not send a second line.
            agent.cancel(id, epoch);
            let seen = timeout(T, async {
                while stderr_lines_containing(&agent, "fixture: cancel") == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            assert!(seen.is_ok(), "the program never saw the cancel line");
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(stderr_lines_containing(&agent, "fixture: cancel"), 1);
            assert!(stderr_lines_containing(&agent, &id.to_string()) == 1);
            agent.stop().await;
        })
        .await;
    }

    async fn all_lines(bytes: &[u8]) -> Vec<Line> {
        let mut lines = Lines::new(bytes);
        let mut all = Vec::new();
        while let Some(line) = lines.next().await {
            all.push(line);
        }
        all
    }

    #[tokio::test]
    async fn lines_are_split_bounded_and_checked_for_utf8() {
        let text = |s: &str| Line::Text(s.to_string());
        assert_eq!(
            all_lines(b"a\nb\r\n\nlast").await,
            [text("a"), text("b"), text(""), text("last")]
        );
        let mut long = vec![b'x'; MAX_OUTPUT_BYTES + 10];
        long.extend_from_slice(b"\nafter\n");
        assert_eq!(all_lines(&long).await, [Line::TooLong, text("after")]);
        let mut exact = vec![b'y'; MAX_OUTPUT_BYTES];
        exact.push(b'\n');
        assert_eq!(all_lines(&exact).await.len(), 1);
        match &all_lines(b"ok\nab\xffcd\n").await[..] {
            [Line::Text(ok), Line::NotUtf8 { offset: 2, quoted }] => {
                assert_eq!(ok, "ok");
                assert!(quoted.contains("ab"), "{quoted}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn protocol_schema_accepts_the_lines_both_ways() {
        let doc: Value = serde_json::from_str(
            &std::fs::read_to_string(script("schemas/agent-protocol.schema.json")).unwrap(),
        )
        .unwrap();
        let store = muster_core::messaging::SchemaStore::new();
        store.add("agent-protocol", doc).unwrap();
        let id = Uuid::now_v7();
        let good = [
            json!({"type": "task", "task_id": id, "epoch": 1, "attempt": 1, "capability": "echo",
                   "input": {"a": 1}, "deadline_ms": 1000}),
            json!({"type": "cancel", "task_id": id, "epoch": 1}),
            json!({"type": "result", "task_id": id, "epoch": 1, "output": {"x": [1]}}),
            json!({"type": "error", "task_id": id, "epoch": 1, "message": "no"}),
            json!({"type": "heartbeat", "task_id": id, "epoch": 1}),
            json!({"type": "heartbeat"}),
        ];
        for line in &good {
            assert!(store.validate("agent-protocol", line).is_ok(), "{line}");
            if line["type"] != "task" && line["type"] != "cancel" {
                assert!(
                    serde_json::from_value::<AgentLine>(line.clone()).is_ok(),
                    "{line}"
                );
            }
        }
        let bad = [
            json!({"type": "result", "task_id": id, "epoch": 1}),
            json!({"type": "result", "task_id": id, "output": 1}),
            json!({"type": "error", "task_id": id, "epoch": -1, "message": "no"}),
            json!({"type": "task", "task_id": id, "epoch": 1}),
            json!({"type": "hello"}),
            json!("result"),
        ];
        for line in &bad {
            assert!(store.validate("agent-protocol", line).is_err(), "{line}");
            assert!(
                serde_json::from_value::<AgentLine>(line.clone()).is_err(),
                "{line}"
            );
        }
    }

    #[tokio::test]
    async fn stdio_heartbeats_reach_the_context_and_the_link() {
        local(async {
            let rec = Recorder::default();
            let agent = started(stdio(fixture("heartbeat_stdio.py")), &rec).await;
            let beats = Arc::new(AtomicUsize::new(0));
            let mut c = ctx(2);
            let b = beats.clone();
            c.heartbeat = Some(Arc::new(move || {
                b.fetch_add(1, Ordering::SeqCst);
            }));
            let out = run(&agent, json!({}), c).await.unwrap();
            assert_eq!(out, json!({"beats": 3}));
            assert_eq!(beats.load(Ordering::SeqCst), 3);
            assert_eq!(rec.alive.load(Ordering::SeqCst), 1);
            agent.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_garbage_line_is_a_protocol_error() {
        local(async {
            let rec = Recorder::default();
            let agent = started(stdio(fixture("garbage_stdio.py")), &rec).await;
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(e.protocol && !e.exited, "{e:?}");
            assert!(e.message.contains("not protocol JSON"), "{}", e.message);
            assert!(
                e.message.contains("hello, I am not protocol JSON"),
                "{}",
                e.message
            );
            agent.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_wrong_epoch_is_a_protocol_error() {
        local(async {
            let rec = Recorder::default();
            let agent = started(stdio(fixture("wrong_epoch_stdio.py")), &rec).await;
            let e = run(&agent, json!({}), ctx(5)).await.unwrap_err();
            assert!(e.protocol && !e.exited, "{e:?}");
            assert!(
                e.message.contains("with epoch 6, expected epoch 5"),
                "{}",
                e.message
            );
            agent.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_exit_mid_task_fails_the_task_and_tells_the_link_once() {
        local(async {
            let rec = Recorder::default();
            let agent = started(stdio(fixture("exit_midtask_stdio.py")), &rec).await;
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(e.exited && !e.protocol, "{e:?}");
            assert!(e.message.contains("exit code 7"), "{}", e.message);
            assert!(e.message.contains("during the task"), "{}", e.message);
            assert!(e.message.contains("crashing mid-task"), "{}", e.message);

            // The process is gone: the next task fails at once, without being written.
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(e.exited, "{e:?}");
            assert!(e.message.contains("process is gone"), "{}", e.message);
            assert!(e.message.contains("exit code 7"), "{}", e.message);

            agent.stop().await;
            let exits = rec.exits();
            assert_eq!(exits.len(), 1, "{exits:?}");
            let why = exits[0].clone().unwrap_err();
            assert!(
                why.contains("exit code 7") && why.contains("crashing"),
                "{why}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_clean_exit_is_reported_as_ok() {
        local(async {
            let rec = Recorder::default();
            let config = CommandConfig::new("python3")
                .with_args(["-c", "pass"])
                .with_mode(CommandMode::Stdio);
            let _agent = started(config, &rec).await;
            let waited = timeout(T, async {
                while rec.exits().is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            assert!(waited.is_ok());
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(rec.exits(), vec![Ok(())]);
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_exit_is_noticed_even_if_a_background_process_keeps_stdout_open() {
        local(async {
            let rec = Recorder::default();
            let config = CommandConfig::new("sh")
                .with_args(["-c", "sleep 100 & exit 3"])
                .with_mode(CommandMode::Stdio);
            let agent = started(config, &rec).await;
            let noticed = timeout(Duration::from_secs(30), async {
                while rec.exits().is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            assert!(
                noticed.is_ok(),
                "the exit went unnoticed while stdout stayed open"
            );
            let exits = rec.exits();
            assert_eq!(exits.len(), 1, "{exits:?}");
            let why = exits[0].clone().unwrap_err();
            assert!(why.contains("exit code 3"), "{why}");
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(e.exited && e.message.contains("exit code 3"), "{e:?}");
            agent.stop().await;
        })
        .await;
    }

    /// A stdio agent answering each task with what `answer(n, msg)` (Python, `n` counting
    /// tasks from 1) returns: the bytes of one stdout line, newline included.
    fn answering(answer: &str) -> CommandConfig {
        let program = format!(
            "import json, sys\n\
             def answer(n, msg):\n    {answer}\n\
             n = 0\n\
             for line in sys.stdin:\n\
             \x20   msg = json.loads(line)\n\
             \x20   if msg['type'] == 'task':\n\
             \x20       n += 1\n\
             \x20       sys.stdout.buffer.write(answer(n, msg))\n\
             \x20       sys.stdout.buffer.flush()\n"
        );
        CommandConfig::new("python3")
            .with_args(["-c".to_string(), program])
            .with_mode(CommandMode::Stdio)
    }

    #[tokio::test]
    async fn stdio_line_over_the_limit_is_a_protocol_error_and_the_next_line_is_read() {
        local(async {
            let rec = Recorder::default();
            let config = answering(
                "return (json.dumps({'type': 'result', 'task_id': msg['task_id'], \
                 'epoch': msg['epoch'], 'output': 'x' * (5 << 20) if n == 1 else 'ok'}) \
                 + '\\n').encode()",
            );
            let agent = started(config, &rec).await;
            let e = expect_err(
                timeout(Duration::from_secs(60), agent.run(json!({}), ctx(1)))
                    .await
                    .expect("the task hung"),
            );
            assert!(e.protocol, "{e:?}");
            assert!(
                e.message.contains(&MAX_OUTPUT_BYTES.to_string()),
                "names the limit: {}",
                e.message
            );
            assert!(e.message.len() < 4096, "{} bytes", e.message.len());
            let out = timeout(Duration::from_secs(60), agent.run(json!({}), ctx(1)))
                .await
                .expect("the task hung")
                .unwrap();
            assert_eq!(out, json!("ok"));
            agent.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_invalid_utf8_line_is_a_protocol_error_naming_the_offset() {
        local(async {
            let rec = Recorder::default();
            let config = answering(
                "return ('{\"type\":\"result\",\"task_id\":\"%s\",\"epoch\":%d,\"output\":\"' \
                 % (msg['task_id'], msg['epoch'])).encode() + b'\\xff\"}\\n'",
            );
            let agent = started(config, &rec).await;
            let c = ctx(1);
            let offset = format!(
                r#"{{"type":"result","task_id":"{}","epoch":1,"output":""#,
                c.task_id
            )
            .len();
            let e = expect_err(run(&agent, json!({}), c).await);
            assert!(e.protocol, "{e:?}");
            assert!(e.message.contains("UTF-8"), "{}", e.message);
            assert!(
                e.message.contains(&format!("byte {offset}")),
                "{}",
                e.message
            );
            agent.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_error_message_from_the_agent_is_quoted_bounded() {
        local(async {
            let rec = Recorder::default();
            let config = answering(
                "return (json.dumps({'type': 'error', 'task_id': msg['task_id'], \
                 'epoch': msg['epoch'], 'message': 'no ' * 100000}) + '\\n').encode()",
            );
            let agent = started(config, &rec).await;
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(
                !e.protocol && e.message.starts_with("no no"),
                "{}",
                &e.message[..50]
            );
            assert!(e.message.len() < 4096, "{} bytes", e.message.len());
            agent.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_huge_stderr_line_is_kept_bounded() {
        local(async {
            let rec = Recorder::default();
            let program = "import sys\n\
                sys.stderr.buffer.write(b'x' * (50 << 20))\n\
                sys.stderr.buffer.write(b'\\nthe end\\n')\n\
                sys.stderr.buffer.flush()\n\
                sys.exit(2)\n";
            let config = CommandConfig::new("python3")
                .with_args(["-c", program])
                .with_mode(CommandMode::Stdio);
            let agent = started(config, &rec).await;
            let exited = timeout(Duration::from_secs(60), async {
                while rec.exits().is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            assert!(exited.is_ok(), "the exit went unnoticed");
            let why = rec.exits()[0].clone().unwrap_err();
            assert!(
                why.contains("exit code 2") && why.contains("the end"),
                "{}",
                &why[..100]
            );
            assert!(why.len() < 4096, "{} bytes", why.len());
            let kept: usize = agent.shared.stderr.borrow().lines().map(str::len).sum();
            assert!(kept < 256 << 10, "{kept} bytes of stderr kept");
            agent.stop().await;
        })
        .await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn stdio_stop_kills_the_whole_process_group() {
        local(async {
            let dir = tempfile::tempdir().unwrap();
            let (config, pidfile) =
                sh_with_pidfile(r#"sleep 300 & echo $! > "$1"; cat > /dev/null"#, &dir);
            let agent = started(config.with_mode(CommandMode::Stdio), &Recorder::default()).await;
            let grandchild = read_pid(&pidfile).await;
            timeout(T, agent.stop()).await.unwrap();
            assert!(
                wait_gone(grandchild).await,
                "the grandchild outlived the stop"
            );
        })
        .await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn stdio_drop_kills_the_whole_process_group() {
        local(async {
            let dir = tempfile::tempdir().unwrap();
            let (config, pidfile) =
                sh_with_pidfile(r#"sleep 300 & echo $! > "$1"; cat > /dev/null"#, &dir);
            let agent = started(config.with_mode(CommandMode::Stdio), &Recorder::default()).await;
            let grandchild = read_pid(&pidfile).await;
            drop(agent);
            assert!(
                wait_gone(grandchild).await,
                "the grandchild outlived the agent"
            );
        })
        .await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn stdio_crash_kills_the_whole_process_group() {
        local(async {
            let rec = Recorder::default();
            let dir = tempfile::tempdir().unwrap();
            let (config, pidfile) = sh_with_pidfile(
                r#"sleep 300 > /dev/null 2>&1 & echo $! > "$1"; read line; exit 3"#,
                &dir,
            );
            let agent = started(config.with_mode(CommandMode::Stdio), &rec).await;
            let grandchild = read_pid(&pidfile).await;
            // The task line makes it exit.
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(e.exited && e.message.contains("exit code 3"), "{e:?}");
            assert!(
                wait_gone(grandchild).await,
                "the grandchild outlived the crash"
            );
            agent.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_stop_fails_tasks_in_flight() {
        local(async {
            let rec = Recorder::default();
            let agent = started(stdio(fixture("slow_stdio.py")), &rec).await;
            let task = tokio::task::spawn_local(agent.run(json!({"delay_ms": 20000}), ctx(1)));
            tokio::time::sleep(Duration::from_millis(100)).await;
            timeout(T, agent.stop()).await.unwrap();
            let e = timeout(T, task).await.unwrap().unwrap().unwrap_err();
            assert!(e.exited && e.message.contains("stopped"), "{e:?}");
            assert!(rec.exits().is_empty());
        })
        .await;
    }
}

/// Fuzzing the stdout side of the protocol: bytes an agent prints, split into lines by
/// [`Lines`] (read in chunks of fuzzed sizes, with a small line limit so long lines are
/// reached) and each decoded by [`decode`]. A short bolero run in `cargo test`; longer with
/// `BOLERO_RANDOM_ITERATIONS` (docs/fuzzing.md).
#[cfg(test)]
mod fuzz {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;

    /// A reader that hands out its bytes in the given chunk sizes.
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        next: usize,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let size = self.sizes[self.next % self.sizes.len()];
            self.next += 1;
            let n = size.min(buf.remaining()).min(self.data.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.data[start..start + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    /// What [`Lines`] must give for `data` with line limit `limit`.
    fn model(data: &[u8], limit: usize) -> Vec<Line> {
        let mut segments: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        if segments.last().is_some_and(|s| s.is_empty()) {
            segments.pop();
        }
        segments
            .into_iter()
            .map(|seg| {
                if seg.len() > limit {
                    Line::TooLong
                } else {
                    match std::str::from_utf8(seg) {
                        Ok(s) => Line::Text(s.trim_end().to_string()),
                        Err(e) => Line::NotUtf8 {
                            offset: e.valid_up_to(),
                            quoted: quote_bytes(seg),
                        },
                    }
                }
            })
            .collect()
    }

    fn protocol_schema() -> muster_core::messaging::SchemaStore {
        let doc: Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../schemas/agent-protocol.schema.json"
            ))
            .expect("the protocol schema"),
        )
        .expect("JSON");
        let store = muster_core::messaging::SchemaStore::new();
        store.add("agent-protocol", doc).expect("it compiles");
        store
    }

    /// Protocol-ish lines: a message of each kind with fields of the right or a wrong type.
    fn generated(b: &[u8]) -> Vec<u8> {
        let mut i = 0;
        let mut next = || {
            let v = b.get(i).copied().unwrap_or(0);
            i += 1;
            v
        };
        let mut out = Vec::new();
        for _ in 0..(next() % 4) {
            let ty =
                ["result", "error", "heartbeat", "task", "cancel", "x"][usize::from(next()) % 6];
            let mut m = serde_json::Map::new();
            if next() % 8 != 0 {
                m.insert("type".into(), json!(ty));
            }
            let id = Uuid::from_u64_pair(u64::from(next()), u64::from(next()));
            let values = [
                json!(id),
                json!(id.simple().to_string()),
                json!("not-a-uuid"),
                json!(null),
                json!(1),
                json!(1.0),
                json!(-1),
                json!(u64::MAX),
                json!(18446744073709551616.0),
                json!("text"),
                json!({"a": [1, 2]}),
                json!([]),
            ];
            for key in ["task_id", "epoch", "output", "message", "attempt"] {
                let c = next();
                if c % 3 != 0 {
                    let v = match (key, c % 4) {
                        ("task_id", 1) => json!(id),
                        ("epoch", 1) => json!(u64::from(next())),
                        ("message", 1) => json!("failed"),
                        _ => values[usize::from(next()) % values.len()].clone(),
                    };
                    m.insert(key.into(), v);
                }
            }
            let line = serde_json::to_vec(&Value::Object(m)).expect("JSON");
            out.extend_from_slice(&line);
            out.extend_from_slice([&b"\n"[..], b"\r\n", b"  \n", b"\n\n"][usize::from(next()) % 4]);
        }
        out
    }

    /// Splits and decodes. Invariants: the lines are the model's (every `\n`-separated
    /// segment, the unterminated last one too, over the limit reported once as too long,
    /// not UTF-8 with the offset of its first bad byte); a broken line's message names the
    /// agent; a line that the protocol schema accepts as a result, error or heartbeat
    /// decodes.
    fn target(
        rt: &tokio::runtime::Runtime,
        schema: &muster_core::messaging::SchemaStore,
        data: &[u8],
    ) {
        let (head, rest) = data.split_at(data.len().min(4));
        let byte = |i: usize| head.get(i).copied().unwrap_or(0);
        let limit = 1 + usize::from(byte(0)) % 64;
        let sizes: Vec<usize> = [byte(1), byte(2)]
            .iter()
            .map(|b| 1 + usize::from(*b) % 17)
            .collect();
        let input = if byte(3) % 2 == 0 {
            rest.to_vec()
        } else {
            generated(rest)
        };
        let limit = if byte(3) % 4 == 1 { 4096 } else { limit };
        let lines = rt.block_on(async {
            let mut lines = Lines::new(Chunked {
                data: input.clone(),
                pos: 0,
                sizes,
                next: 0,
            });
            lines.limit = limit;
            let mut all = Vec::new();
            while let Some(line) = lines.next().await {
                all.push(line);
            }
            all
        });
        assert_eq!(
            lines,
            model(&input, limit),
            "{:?}",
            String::from_utf8_lossy(&input)
        );
        for line in lines {
            let text = match &line {
                Line::Text(t) => Some(t.clone()),
                _ => None,
            };
            match decode("fuzzed", line) {
                Decoded::Broken(m) => {
                    assert!(m.starts_with("agent fuzzed printed"), "{m}");
                    if let Some(v) = text
                        .as_deref()
                        .and_then(|t| serde_json::from_str::<Value>(t).ok())
                    {
                        let answer = matches!(
                            v.get("type").and_then(Value::as_str),
                            Some("result" | "error" | "heartbeat")
                        );
                        assert!(
                            !(answer && schema.validate("agent-protocol", &v).is_ok()),
                            "the protocol schema accepts a line the runtime refuses ({m})"
                        );
                    }
                }
                Decoded::Blank => assert!(text.is_some_and(|t| t.trim().is_empty())),
                Decoded::Line(_) => {}
            }
        }
    }

    /// Found by `stdio_protocol_decoder`: the protocol schema (JSON Schema) counts `3.0` as
    /// an integer epoch, and the decoder refused it.
    #[test]
    fn an_epoch_written_with_a_zero_fraction_is_read_as_that_integer() {
        let id = Uuid::now_v7();
        for (line, expected) in [
            (
                json!({"type": "result", "task_id": id, "epoch": 3.0, "output": 1}),
                3,
            ),
            (
                json!({"type": "error", "task_id": id, "epoch": 7.0, "message": "no"}),
                7,
            ),
            (json!({"type": "heartbeat", "task_id": id, "epoch": 0.0}), 0),
        ] {
            assert!(protocol_schema().validate("agent-protocol", &line).is_ok());
            match decode("a", Line::Text(line.to_string())) {
                Decoded::Line(
                    AgentLine::Result { epoch, .. }
                    | AgentLine::Error { epoch, .. }
                    | AgentLine::Heartbeat {
                        epoch: Some(epoch), ..
                    },
                ) => assert_eq!(epoch, expected, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        for epoch in [json!(3.5), json!(-1.0), json!(18_446_744_073_709_551_616.0)] {
            let line = json!({"type": "result", "task_id": id, "epoch": epoch, "output": 1});
            assert!(matches!(
                decode("a", Line::Text(line.to_string())),
                Decoded::Broken(_)
            ));
            assert!(
                protocol_schema().validate("agent-protocol", &line).is_err(),
                "{line}"
            );
        }
    }

    /// Found by `stdio_protocol_decoder`: the protocol schema accepted a `task_id` that is
    /// not a UUID (`format` is only an annotation in JSON Schema 2020-12), which the
    /// decoder refuses.
    #[test]
    fn the_protocol_schema_refuses_a_task_id_that_is_not_a_uuid() {
        for id in ["not-a-uuid", "", "0198f1c27d6e7a3b9c4d5e6f7a8b9c0d"] {
            let line = json!({"type": "heartbeat", "task_id": id, "epoch": 1});
            assert!(
                protocol_schema().validate("agent-protocol", &line).is_err(),
                "{line}"
            );
        }
    }

    #[test]
    fn stdio_protocol_decoder() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let schema = std::panic::AssertUnwindSafe(protocol_schema());
        let mut count = 0u64;
        let start = std::time::Instant::now();
        bolero::check!().for_each(|data: &[u8]| {
            let schema = &schema;
            target(&rt, &schema.0, data);
            count += 1;
        });
        eprintln!(
            "fuzz target stdio_protocol_decoder: {count} inputs in {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
}
