//! The stdio process driver: one long-lived process per agent instance. Owns the
//! process's pipes and lifetime: it queues task and cancel lines for the stdin writer,
//! hands each stdout line to its task in flight (demultiplexed by task id and epoch), and
//! when the process goes away settles every pending task and tells the link, once.
//!
//! What the lines look like is [`super::wire`]'s; this file must not build or parse JSON.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::wire::{
    AgentLine, Decoded, Line, Lines, cancel_line, decode, effect_ack_line, task_line,
};
use crate::config::CommandConfig;
use crate::process::{
    ProcessGroup, StderrTail, base_command, capture_stderr, clip_message, describe_status,
    spawn_error,
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
pub(crate) struct Stdio {
    pub(super) shared: Rc<Shared>,
}

/// State shared by the agent, its in-flight tasks and its reader/writer tasks.
pub(super) struct Shared {
    name: Arc<str>,
    config: Arc<CommandConfig>,
    inner: RefCell<Inner>,
    pub(super) stderr: RefCell<StderrTail>,
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
    /// The contexts of the attempts most recently started, in flight or not, so that an
    /// effect an attempt reports after it lost its lease is still journaled (effects are
    /// facts, whichever epoch ran them).
    recent: VecDeque<TaskContext>,
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

/// Removes a task's registration when its future ends or is dropped.
struct Registration {
    shared: Rc<Shared>,
    key: (Uuid, u64),
    seq: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.shared.inner.try_borrow_mut()
            && inner.pending.get(&self.key).map(|p| p.seq) == Some(self.seq)
        {
            // Dropped unanswered (timed out, or cancelled by the runtime): tell the
            // program to stop working on it.
            inner.pending.remove(&self.key);
            inner.send_cancel(self.key);
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
        let _ = writer.send(Outgoing {
            line: cancel_line(key.0, key.1),
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
    pub(crate) fn new(name: Arc<str>, config: Arc<CommandConfig>) -> Self {
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
    pub(crate) fn start(
        &self,
        link: AgentLink,
    ) -> impl Future<Output = Result<(), AgentError>> + 'static + use<> {
        let shared = self.shared.clone();
        async move { start_stdio(shared, link) }
    }

    /// Sends one task to the process and waits for its answer.
    pub(crate) fn run(
        &self,
        input: Value,
        ctx: TaskContext,
    ) -> impl Future<Output = Result<Value, AgentError>> + 'static + use<> {
        run_stdio_task(self.shared.clone(), input, ctx)
    }

    /// Tells the process to stop working on `task_id` at `epoch`.
    pub(crate) fn cancel(&self, task_id: Uuid, epoch: u64) {
        if let Ok(mut inner) = self.shared.inner.try_borrow_mut() {
            inner.send_cancel((task_id, epoch));
        }
    }

    /// Stops the process: closes its stdin and gives it [`STOP_GRACE`] to finish on its
    /// own (a program may clean up what it made), then kills its whole process group and
    /// waits (bounded) for the reader to reap it.
    pub(crate) fn stop(&self) -> impl Future<Output = ()> + 'static + use<> {
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
            if let Some(r) = reader.as_mut()
                && tokio::time::timeout(STOP_GRACE, r).await.is_ok()
            {
                reader = None;
            }
            // Whatever is left of the group (the program, if it did not exit, and anything
            // it started) is killed.
            if let Some(group) = group {
                group.kill();
            }
            if let Some(kill) = kill {
                let _ = kill.send(());
            }
            if let Some(reader) = reader
                && tokio::time::timeout(STOP_WAIT, reader).await.is_err()
            {
                tracing::warn!(agent = %shared.name, "agent process did not go away within {STOP_WAIT:?} of stop");
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
    let mut child = base_command(&name, &config)?
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
                )));
            }
            (_, _, true) | (None, _, _) => {
                return Err(AgentError::exited(format!(
                    "agent {name}: the agent is stopping; cannot take task {}",
                    ctx.task_id
                )));
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
        if inner.recent.len() >= RECENT_CANCELS {
            inner.recent.pop_front();
        }
        inner.recent.push_back(ctx.clone());
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

    let (ack_tx, ack_rx) = oneshot::channel();
    let sent = writer.send(Outgoing {
        line: task_line(input, &ctx),
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
        AgentLine::EffectStarted {
            task_id,
            epoch,
            name: effect,
            key,
            ack,
        } => match attempt_of(shared, task_id, epoch) {
            Some(ctx) => {
                let ledger = ctx.ledger().clone();
                let seq = ledger.started(&effect, key.as_deref(), epoch, &ctx.agent);
                if ack {
                    // Answered once the record is written; meanwhile the instance goes
                    // on reading (other tasks' lines, heartbeats).
                    let writer = shared
                        .inner
                        .try_borrow()
                        .ok()
                        .and_then(|i| i.writer.clone());
                    if let Some(writer) = writer {
                        tokio::task::spawn_local(async move {
                            let error = ledger.written(seq).await.err().map(|e| e.to_string());
                            let _ = writer.send(Outgoing {
                                line: effect_ack_line(task_id, epoch, &effect, error),
                                ack: None,
                            });
                        });
                    }
                }
            }
            None => {
                tracing::warn!(
                    agent = %name,
                    "effect_started `{effect}` for task {task_id} at epoch {epoch}, which this instance does not know; not journaled"
                );
                if ack {
                    // An agent waiting for the answer must not wait for ever.
                    let writer = shared
                        .inner
                        .try_borrow()
                        .ok()
                        .and_then(|i| i.writer.clone());
                    if let Some(writer) = writer {
                        let _ = writer.send(Outgoing {
                            line: effect_ack_line(
                                task_id,
                                epoch,
                                &effect,
                                Some(format!(
                                    "task {task_id} at epoch {epoch} is not an attempt of this instance; not journaled"
                                )),
                            ),
                            ack: None,
                        });
                    }
                }
            }
        },
        AgentLine::EffectDone {
            task_id,
            epoch,
            name: effect,
            key,
            result,
        } => match attempt_of(shared, task_id, epoch) {
            Some(ctx) => {
                ctx.ledger()
                    .done(&effect, key.as_deref(), epoch, &ctx.agent, result);
            }
            None => tracing::warn!(
                agent = %name,
                "effect_done `{effect}` for task {task_id} at epoch {epoch}, which this instance does not know; not journaled"
            ),
        },
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

/// The context of attempt `epoch` of `task_id`: in flight, or among the recent ones.
fn attempt_of(shared: &Shared, task_id: Uuid, epoch: u64) -> Option<TaskContext> {
    let inner = shared.inner.try_borrow().ok()?;
    if let Some(p) = inner.pending.get(&(task_id, epoch)) {
        return Some(p.ctx.clone());
    }
    inner
        .recent
        .iter()
        .rev()
        .find(|c| c.task_id == task_id && c.epoch == epoch)
        .cloned()
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
