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
use crate::agents::agent::{AgentError, AgentLink, TaskContext};

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
        epoch: u64,
        output: Value,
    },
    Error {
        task_id: Uuid,
        epoch: u64,
        message: String,
    },
    Heartbeat {
        #[serde(default)]
        task_id: Option<Uuid>,
        #[serde(default)]
        epoch: Option<u64>,
    },
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
}

impl<R: AsyncRead + Unpin> Lines<R> {
    fn new(reader: R) -> Self {
        Lines {
            reader: BufReader::new(reader),
            line: Vec::new(),
            skipping: false,
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
            } else if self.line.len() + len > MAX_OUTPUT_BYTES {
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

/// Handles one stdout line.
fn on_line(shared: &Shared, line: Line, link: &AgentLink) {
    let name = &shared.name;
    let line = match line {
        Line::Text(line) => line,
        Line::TooLong => {
            return fail_all(
                shared,
                format!(
                    "agent {name} printed a line longer than {MAX_OUTPUT_BYTES} bytes \
                     (the limit for one protocol line)"
                ),
            );
        }
        Line::NotUtf8 { offset, quoted } => {
            return fail_all(
                shared,
                format!(
                    "agent {name} printed a line that is not valid UTF-8 (at byte {offset}): {quoted}"
                ),
            );
        }
    };
    if line.trim().is_empty() {
        return;
    }
    let parsed: AgentLine = match serde_json::from_str(&line) {
        Ok(parsed) => parsed,
        Err(e) => {
            return fail_all(
                shared,
                format!(
                    "agent {name} printed a line that is not protocol JSON ({e}): {}",
                    quote(&line)
                ),
            );
        }
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
        } => settle(shared, task_id, epoch, Ok(output)),
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
        let store = crate::messaging::SchemaStore::new();
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
