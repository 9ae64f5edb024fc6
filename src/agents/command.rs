//! Command agents: an external program is an agent, so an agent can be written in any
//! language.
//!
//! Owns the [`CommandAgent`] backend and its [`CommandConfig`], in two modes:
//!
//! - [`CommandMode::Oneshot`]: one process per task. The task input is written to the
//!   program's stdin as JSON, stdin is closed, and the program's stdout (one JSON document)
//!   is the output. The task's identity is passed in `MUSTER_*` environment variables.
//! - [`CommandMode::Stdio`]: one long-lived process per agent instance, started by
//!   [`Agent::start`] and killed by [`Agent::stop`], speaking JSON lines both ways
//!   (described by `schemas/agent-protocol.schema.json` and `docs/command-agents.md`).
//!   Several tasks may be in flight at once; one reader task demultiplexes the answers.
//!
//! This module turns every way a program can misbehave (garbage on stdout, a wrong task id
//! or epoch, a crash, a broken pipe, a missing binary) into an [`AgentError`] with a clear
//! message and the right `exited`/`protocol` flag, and reports the death of a stdio process
//! through [`AgentLink::exited`] exactly once. It must not panic, block the runtime's thread
//! or leave a task waiting on a dead process; it does not retry, restart, time out or judge
//! outputs: the agent instance, supervision and delegation do that.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::agent::{Agent, AgentError, AgentFactory, AgentLink, TaskContext};

/// How many stderr lines a stdio agent keeps for error messages.
const STDERR_TAIL_LINES: usize = 50;
/// How much of the stderr tail goes into an error message.
const STDERR_TAIL_BYTES: usize = 2048;
/// How much of a misbehaving line or output is quoted in an error message.
const QUOTE_CHARS: usize = 200;
/// How long a stdio process may live on after closing its stdout before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How long to wait for the rest of a dead process's stderr.
const STDERR_DRAIN: Duration = Duration::from_millis(500);
/// How long `stop` waits for the reader task to reap the killed process.
const STOP_WAIT: Duration = Duration::from_secs(2);
/// How long a failed stdin write waits for the reader to report the exit status instead.
const WRITE_FAILURE_WAIT: Duration = Duration::from_millis(500);
/// How many recently cancelled tasks a stdio agent remembers (so it cancels each once).
const RECENT_CANCELS: usize = 64;

/// How a command agent runs its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandMode {
    /// One process per task: input JSON on stdin, output JSON on stdout, exit 0.
    #[default]
    Oneshot,
    /// One long-lived process per instance, speaking JSON lines on stdin/stdout.
    Stdio,
}

/// How to run a command agent's program (the `command` section of an agent manifest).
///
/// # Example
/// ```
/// use muster::agents::command::{CommandConfig, CommandMode};
///
/// # fn main() -> Result<(), serde_json::Error> {
/// let config: CommandConfig = serde_json::from_str(
///     r#"{"program": "python3", "args": ["agent.py"], "mode": "stdio", "env": {"LOG": "1"}}"#,
/// )?;
/// assert_eq!(config, CommandConfig::new("python3")
///     .with_args(["agent.py"])
///     .with_mode(CommandMode::Stdio)
///     .with_env("LOG", "1"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The program to run: a path, or a name looked up in `PATH`.
    pub program: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// One process per task, or one per instance.
    #[serde(default)]
    pub mode: CommandMode,
    /// Its working directory (the runtime's own if unset).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables (on top of the runtime's environment and `MUSTER_*`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl CommandConfig {
    /// A oneshot config running `program` with no arguments.
    pub fn new(program: impl Into<String>) -> Self {
        CommandConfig {
            program: program.into(),
            args: Vec::new(),
            mode: CommandMode::Oneshot,
            cwd: None,
            env: BTreeMap::new(),
        }
    }

    /// Appends arguments.
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the mode.
    pub fn with_mode(mut self, mode: CommandMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the working directory.
    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
}

/// Makes one [`CommandAgent`] per instance (and per restart), all running the same program.
///
/// # Example
/// ```
/// use muster::agents::command::{CommandConfig, CommandFactory};
/// use muster::agents::AgentFactory;
///
/// let factory = CommandFactory(CommandConfig::new("python3").with_args(["examples/agents/echo_oneshot.py"]));
/// let _agent = factory.create("echo#0");
/// ```
#[derive(Debug, Clone)]
pub struct CommandFactory(pub CommandConfig);

impl AgentFactory for CommandFactory {
    fn create(&self, instance: &str) -> Box<dyn Agent> {
        Box::new(CommandAgent::new(instance, self.0.clone()))
    }
}

/// An agent that is an external program (see the [module docs](self) for the two modes).
///
/// Must run inside a tokio `LocalSet` (the actix runtime is one): a stdio agent spawns its
/// reader and writer tasks with `tokio::task::spawn_local`.
///
/// # Example
/// ```no_run
/// use std::time::Duration;
/// use muster::agents::command::{CommandAgent, CommandConfig, CommandMode};
/// use muster::agents::{Agent, AgentError, AgentLink, TaskContext};
/// use serde_json::json;
///
/// # async fn demo() -> Result<(), AgentError> {
/// let config = CommandConfig::new("python3")
///     .with_args(["examples/agents/echo_stdio.py"])
///     .with_mode(CommandMode::Stdio);
/// let agent = CommandAgent::new("echo#0", config);
/// agent.start(AgentLink::detached()).await?;
/// let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
/// let ctx = TaskContext::standalone(uuid::Uuid::now_v7(), 1, "echo", "echo#0", deadline);
/// let output = agent.handle(json!({"text": "hi"}), ctx).await?;
/// assert_eq!(output["echo"], json!({"text": "hi"}));
/// agent.stop().await;
/// # Ok(())
/// # }
/// ```
pub struct CommandAgent {
    config: Arc<CommandConfig>,
    shared: Rc<Shared>,
}

impl std::fmt::Debug for CommandAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandAgent")
            .field("name", &self.shared.name)
            .field("config", &self.config)
            .finish()
    }
}

/// State shared by the agent, its in-flight `handle` futures and its reader/writer tasks.
struct Shared {
    name: Arc<str>,
    inner: RefCell<Inner>,
}

#[derive(Default)]
struct Inner {
    next_seq: u64,
    // --- stdio mode ---
    started: bool,
    stopping: bool,
    /// Why the process is gone, once it is.
    dead: Option<String>,
    writer: Option<mpsc::UnboundedSender<Outgoing>>,
    kill: Option<oneshot::Sender<()>>,
    reader: Option<JoinHandle<()>>,
    pending: HashMap<(Uuid, u64), Pending>,
    stderr_tail: VecDeque<String>,
    /// Tasks a cancel line was written for, most recent last.
    cancelled: VecDeque<(Uuid, u64)>,
    // --- oneshot mode: running processes, by registration ---
    running: HashMap<u64, ((Uuid, u64), oneshot::Sender<()>)>,
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

/// A line the program may print on stdout (stdio mode).
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

/// Removes a task's registration when its `handle` future ends or is dropped.
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
            inner.running.remove(&self.seq);
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

impl CommandAgent {
    /// A command agent for the instance called `instance_name` (e.g. `tester#0`). Nothing is
    /// spawned until [`Agent::start`] (stdio) or [`Agent::handle`] (oneshot).
    pub fn new(instance_name: &str, config: CommandConfig) -> Self {
        CommandAgent {
            config: Arc::new(config),
            shared: Rc::new(Shared {
                name: Arc::from(instance_name),
                inner: RefCell::new(Inner::default()),
            }),
        }
    }

    /// The instance name this agent was made for.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// How its program is run.
    pub fn config(&self) -> &CommandConfig {
        &self.config
    }
}

impl Drop for CommandAgent {
    fn drop(&mut self) {
        // Never leave a process behind: the reader task owns the stdio child and would
        // otherwise keep it alive.
        if let Ok(mut inner) = self.shared.inner.try_borrow_mut() {
            inner.stopping = true;
            inner.writer = None;
            if let Some(kill) = inner.kill.take() {
                let _ = kill.send(());
            }
            for (_, (_, kill)) in inner.running.drain() {
                let _ = kill.send(());
            }
        }
    }
}

impl Agent for CommandAgent {
    fn handle(
        &self,
        input: Value,
        ctx: TaskContext,
    ) -> LocalBoxFuture<'static, Result<Value, AgentError>> {
        let config = self.config.clone();
        let shared = self.shared.clone();
        match config.mode {
            CommandMode::Oneshot => Box::pin(run_oneshot(shared, config, input, ctx)),
            CommandMode::Stdio => Box::pin(run_stdio_task(shared, input, ctx)),
        }
    }

    fn start(&self, link: AgentLink) -> LocalBoxFuture<'static, Result<(), AgentError>> {
        let config = self.config.clone();
        let shared = self.shared.clone();
        Box::pin(async move {
            match config.mode {
                CommandMode::Oneshot => Ok(()),
                CommandMode::Stdio => start_stdio(shared, &config, link),
            }
        })
    }

    fn stop(&self) -> LocalBoxFuture<'static, ()> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let (kill, reader) = {
                let Ok(mut inner) = shared.inner.try_borrow_mut() else {
                    return;
                };
                inner.stopping = true;
                inner.writer = None;
                for (_, (_, kill)) in inner.running.drain() {
                    let _ = kill.send(());
                }
                (inner.kill.take(), inner.reader.take())
            };
            if let Some(kill) = kill {
                let _ = kill.send(());
            }
            if let Some(reader) = reader {
                if tokio::time::timeout(STOP_WAIT, reader).await.is_err() {
                    tracing::warn!(agent = %shared.name, "agent process did not go away within {STOP_WAIT:?} of stop");
                }
            }
        })
    }

    fn cancel(&self, task_id: Uuid, epoch: u64) {
        let Ok(mut inner) = self.shared.inner.try_borrow_mut() else {
            return;
        };
        match self.config.mode {
            CommandMode::Oneshot => {
                let seqs: Vec<u64> = inner
                    .running
                    .iter()
                    .filter(|(_, (key, _))| *key == (task_id, epoch))
                    .map(|(seq, _)| *seq)
                    .collect();
                for seq in seqs {
                    if let Some((_, kill)) = inner.running.remove(&seq) {
                        let _ = kill.send(());
                    }
                }
            }
            CommandMode::Stdio => inner.send_cancel((task_id, epoch)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Oneshot mode
// ---------------------------------------------------------------------------------------

fn base_command(name: &str, config: &CommandConfig) -> Command {
    let mut cmd = Command::new(&config.program);
    cmd.args(&config.args)
        .envs(&config.env)
        .env("MUSTER_AGENT", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &config.cwd {
        cmd.current_dir(cwd);
    }
    cmd
}

fn spawn_error(name: &str, config: &CommandConfig, e: &std::io::Error) -> AgentError {
    let cwd = match &config.cwd {
        Some(cwd) => format!(" in {}", cwd.display()),
        None => String::new(),
    };
    AgentError::new(format!(
        "agent {name}: cannot start program `{}`{cwd}: {e}",
        config.program
    ))
}

fn remaining_ms(ctx: &TaskContext) -> u64 {
    u64::try_from(ctx.remaining().as_millis()).unwrap_or(u64::MAX)
}

async fn run_oneshot(
    shared: Rc<Shared>,
    config: Arc<CommandConfig>,
    input: Value,
    ctx: TaskContext,
) -> Result<Value, AgentError> {
    let name = shared.name.clone();
    let mut cmd = base_command(&name, &config);
    cmd.env("MUSTER_TASK_ID", ctx.task_id.to_string())
        .env("MUSTER_EPOCH", ctx.epoch.to_string())
        .env("MUSTER_ATTEMPT", ctx.attempt.to_string())
        .env("MUSTER_CAPABILITY", &*ctx.capability)
        .env("MUSTER_AGENT", &*ctx.agent)
        .env("MUSTER_DEADLINE_MS", remaining_ms(&ctx).to_string());
    let bytes = serde_json::to_vec(&input)
        .map_err(|e| AgentError::new(format!("agent {name}: cannot encode the input: {e}")))?;

    let mut child = cmd.spawn().map_err(|e| spawn_error(&name, &config, &e))?;

    // Register so that `cancel` and `stop` can kill it; dropping `child` kills it too.
    let (kill_tx, mut kill_rx) = oneshot::channel::<()>();
    let _registration = {
        let mut inner = shared.inner.borrow_mut();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner
            .running
            .insert(seq, ((ctx.task_id, ctx.epoch), kill_tx));
        Registration {
            shared: shared.clone(),
            key: (ctx.task_id, ctx.epoch),
            seq,
        }
    };

    let stdin = child.stdin.take();
    let write = {
        let name = name.clone();
        async move {
            if let Some(mut stdin) = stdin {
                // A program that ignores its input may exit before reading it: not an error.
                if let Err(e) = stdin.write_all(&bytes).await {
                    tracing::debug!(agent = %name, "writing the input to stdin failed: {e}");
                }
                let _ = stdin.shutdown().await;
            }
        }
    };
    let run = async move {
        let (_, output) = tokio::join!(write, child.wait_with_output());
        output
    };
    let output = tokio::select! {
        output = run => output.map_err(|e| {
            AgentError::new(format!("agent {name}: waiting for `{}` failed: {e}", config.program))
        })?,
        Ok(()) = &mut kill_rx => {
            return Err(AgentError::new(format!(
                "agent {name}: task {} (epoch {}) was cancelled; its process was killed",
                ctx.task_id, ctx.epoch
            )));
        }
    };

    let program = &config.program;
    let status = output.status;
    if !status.success() {
        let tail = tail_text(&String::from_utf8_lossy(&output.stderr));
        return Err(match status.code() {
            Some(code) => AgentError::new(format!(
                "agent {name}: `{program}` failed with exit code {code}; stderr tail: {tail}"
            )),
            None => AgentError::exited(format!(
                "agent {name}: `{program}` was killed by {}; stderr tail: {tail}",
                describe_status(status)
            )),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    if stdout.trim().is_empty() {
        return Err(AgentError::protocol(format!(
            "agent {name}: `{program}` exited 0 but printed nothing on stdout (expected one JSON document)"
        )));
    }
    serde_json::from_str(&stdout).map_err(|e| {
        AgentError::protocol(format!(
            "agent {name}: `{program}` exited 0 but its stdout is not JSON ({e}); it printed: {}",
            quote(&stdout)
        ))
    })
}

// ---------------------------------------------------------------------------------------
// Stdio mode
// ---------------------------------------------------------------------------------------

fn start_stdio(
    shared: Rc<Shared>,
    config: &CommandConfig,
    link: AgentLink,
) -> Result<(), AgentError> {
    let name = shared.name.clone();
    {
        let inner = shared.inner.borrow();
        if inner.started {
            return Err(AgentError::new(format!(
                "agent {name}: started twice (a command agent runs one process per instance)"
            )));
        }
    }
    let mut child = base_command(&name, config)
        .spawn()
        .map_err(|e| spawn_error(&name, config, &e))?;
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
    let stderr_task = tokio::task::spawn_local(read_stderr(shared.clone(), stderr));
    let reader = tokio::task::spawn_local(read_stdout(
        shared.clone(),
        child,
        stdout,
        stderr_task,
        kill_rx,
        link,
    ));

    let mut inner = shared.inner.borrow_mut();
    inner.started = true;
    inner.writer = Some(writer_tx);
    inner.kill = Some(kill_tx);
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

/// Reads one `\n`-terminated line; `None` at EOF or on a read error.
async fn next_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
) -> Option<String> {
    buf.clear();
    match reader.read_until(b'\n', buf).await {
        Ok(0) => None,
        Ok(_) => Some(String::from_utf8_lossy(buf).trim_end().to_string()),
        Err(e) => {
            tracing::debug!("reading from an agent process failed: {e}");
            None
        }
    }
}

/// Keeps the last stderr lines for error messages and logs them.
async fn read_stderr(shared: Rc<Shared>, stderr: tokio::process::ChildStderr) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    while let Some(line) = next_line(&mut reader, &mut buf).await {
        tracing::debug!(agent = %shared.name, "stderr: {line}");
        if let Ok(mut inner) = shared.inner.try_borrow_mut() {
            if inner.stderr_tail.len() >= STDERR_TAIL_LINES {
                inner.stderr_tail.pop_front();
            }
            inner.stderr_tail.push_back(line);
        }
    }
}

/// Owns the process: demultiplexes its stdout lines, and when it ends (or is killed) fails
/// every task in flight and tells the link.
async fn read_stdout(
    shared: Rc<Shared>,
    mut child: Child,
    stdout: ChildStdout,
    stderr_task: JoinHandle<()>,
    mut kill_rx: oneshot::Receiver<()>,
    link: AgentLink,
) {
    let name = shared.name.clone();
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    let mut killed = false;
    loop {
        tokio::select! {
            line = next_line(&mut reader, &mut buf) => match line {
                Some(line) => on_line(&shared, &line, &link),
                None => break,
            },
            Ok(()) = &mut kill_rx => {
                killed = true;
                break;
            }
        }
    }

    let status = if killed {
        let _ = child.start_kill();
        child.wait().await
    } else {
        match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(agent = %name, "agent process closed its stdout but is still running; killing it");
                let _ = child.start_kill();
                child.wait().await
            }
        }
    };
    let _ = tokio::time::timeout(STDERR_DRAIN, stderr_task).await;

    let status_text = match &status {
        Ok(status) => describe_status(*status),
        Err(e) => format!("an unknown status ({e})"),
    };
    let (pending, stopping, tail) = {
        let Ok(mut inner) = shared.inner.try_borrow_mut() else {
            return;
        };
        let tail = tail_text(&Vec::from(inner.stderr_tail.clone()).join("\n"));
        inner.dead = Some(format!("it exited with {status_text}; stderr tail: {tail}"));
        inner.writer = None;
        inner.kill = None;
        let pending: Vec<Pending> = inner.pending.drain().map(|(_, p)| p).collect();
        (pending, inner.stopping, tail)
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

/// Handles one stdout line of a stdio agent.
fn on_line(shared: &Shared, line: &str, link: &AgentLink) {
    let name = &shared.name;
    if line.trim().is_empty() {
        return;
    }
    let parsed: AgentLine = match serde_json::from_str(line) {
        Ok(parsed) => parsed,
        Err(e) => {
            let message = format!(
                "agent {name} printed a line that is not protocol JSON ({e}): {}",
                quote(line)
            );
            tracing::warn!(agent = %name, "{message}");
            let pending: Vec<Pending> = match shared.inner.try_borrow_mut() {
                Ok(mut inner) => inner.pending.drain().map(|(_, p)| p).collect(),
                Err(_) => Vec::new(),
            };
            for p in pending {
                let _ = p.tx.send(Err(AgentError::protocol(message.clone())));
            }
            return;
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
        } => settle(shared, task_id, epoch, Err(AgentError::new(message))),
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

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// "exit code 3", or "signal 9 (SIGKILL)".
fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("signal {signal} ({})", signal_name(signal));
        }
    }
    status.to_string()
}

#[cfg(unix)]
fn signal_name(signal: i32) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => "unnamed signal",
    }
}

/// The first [`QUOTE_CHARS`] characters of `s`, marked if cut.
fn quote(s: &str) -> String {
    let s = s.trim();
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(QUOTE_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

/// The last [`STDERR_TAIL_BYTES`] of `s` (on a char boundary), or `(empty)`.
fn tail_text(s: &str) -> String {
    let s = s.trim_end();
    if s.is_empty() {
        return "(empty)".to_string();
    }
    if s.len() <= STDERR_TAIL_BYTES {
        return s.to_string();
    }
    let mut start = s.len() - STDERR_TAIL_BYTES;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use tokio::task::LocalSet;
    use tokio::time::{timeout, Instant};

    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn script(rel: &str) -> String {
        format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
    }

    fn fixture(name: &str) -> String {
        script(&format!("tests/fixtures/agents/{name}"))
    }

    fn python(path: String) -> CommandConfig {
        CommandConfig::new("python3").with_args([path])
    }

    fn stdio(path: String) -> CommandConfig {
        python(path).with_mode(CommandMode::Stdio)
    }

    fn ctx(epoch: u64) -> TaskContext {
        TaskContext::standalone(
            Uuid::now_v7(),
            epoch,
            "echo",
            "echo#0",
            Instant::now() + Duration::from_secs(10),
        )
    }

    #[derive(Clone, Default)]
    struct Recorder {
        exits: Arc<Mutex<Vec<Result<(), String>>>>,
        alive: Arc<AtomicUsize>,
    }

    impl Recorder {
        fn link(&self) -> AgentLink {
            let exits = self.exits.clone();
            let alive = self.alive.clone();
            AgentLink {
                on_exit: Arc::new(move |r| exits.lock().unwrap().push(r)),
                on_alive: Arc::new(move || {
                    alive.fetch_add(1, Ordering::SeqCst);
                }),
            }
        }
        fn exits(&self) -> Vec<Result<(), String>> {
            self.exits.lock().unwrap().clone()
        }
    }

    async fn local<F: Future>(f: F) -> F::Output {
        LocalSet::new().run_until(f).await
    }

    async fn run(
        agent: &CommandAgent,
        input: Value,
        ctx: TaskContext,
    ) -> Result<Value, AgentError> {
        timeout(T, agent.handle(input, ctx))
            .await
            .expect("the task hung")
    }

    async fn started(config: CommandConfig, rec: &Recorder) -> CommandAgent {
        let agent = CommandAgent::new("echo#0", config);
        timeout(T, agent.start(rec.link()))
            .await
            .expect("start hung")
            .expect("start failed");
        agent
    }

    // ----- config -----

    #[test]
    fn config_deserializes_with_defaults_and_rejects_unknown_fields() {
        let c: CommandConfig = toml::from_str("program = \"python3\"").unwrap();
        assert_eq!(c, CommandConfig::new("python3"));
        assert_eq!(c.mode, CommandMode::Oneshot);
        let c: CommandConfig = toml::from_str(
            "program = \"a\"\nargs = [\"b\"]\nmode = \"stdio\"\ncwd = \"/tmp\"\n[env]\nK = \"v\"",
        )
        .unwrap();
        assert_eq!(
            c,
            CommandConfig::new("a")
                .with_args(["b"])
                .with_mode(CommandMode::Stdio)
                .with_cwd("/tmp")
                .with_env("K", "v")
        );
        assert!(
            serde_json::from_value::<CommandConfig>(json!({"program": "a", "nope": 1})).is_err()
        );
        assert!(
            serde_json::from_value::<CommandConfig>(json!({"program": "a", "mode": "http"}))
                .is_err()
        );
    }

    #[test]
    fn factory_makes_an_agent_per_instance() {
        let factory = CommandFactory(CommandConfig::new("true"));
        let _a = factory.create("x#0");
        let _b = factory.create("x#1");
    }

    // ----- oneshot -----

    #[tokio::test]
    async fn oneshot_round_trip() {
        local(async {
            let agent =
                CommandAgent::new("echo#0", python(script("examples/agents/echo_oneshot.py")));
            let out = run(&agent, json!({"text": "hi"}), ctx(1)).await.unwrap();
            assert_eq!(out, json!({"echo": {"text": "hi"}, "agent": "echo#0"}));
        })
        .await;
    }

    #[tokio::test]
    async fn oneshot_passes_env_and_cwd() {
        local(async {
            let dir = tempfile::tempdir().unwrap();
            let config = python(fixture("env_oneshot.py"))
                .with_cwd(dir.path())
                .with_env("EXTRA", "yes");
            let agent = CommandAgent::new("echo#0", config);
            let mut c = ctx(7);
            c.attempt = 2;
            let task_id = c.task_id;
            let out = run(&agent, json!([1, 2]), c).await.unwrap();
            assert_eq!(out["input"], json!([1, 2]));
            let env = &out["env"];
            assert_eq!(env["MUSTER_TASK_ID"], json!(task_id.to_string()));
            assert_eq!(env["MUSTER_EPOCH"], json!("7"));
            assert_eq!(env["MUSTER_ATTEMPT"], json!("2"));
            assert_eq!(env["MUSTER_CAPABILITY"], json!("echo"));
            assert_eq!(env["MUSTER_AGENT"], json!("echo#0"));
            assert_eq!(env["EXTRA"], json!("yes"));
            let ms: u64 = env["MUSTER_DEADLINE_MS"].as_str().unwrap().parse().unwrap();
            assert!(ms > 0 && ms <= 10_000, "{ms}");
            let cwd = std::path::PathBuf::from(out["cwd"].as_str().unwrap());
            assert_eq!(
                cwd.canonicalize().unwrap(),
                dir.path().canonicalize().unwrap()
            );
        })
        .await;
    }

    #[tokio::test]
    async fn oneshot_nonzero_exit_reports_code_and_stderr() {
        local(async {
            let agent = CommandAgent::new("echo#0", python(fixture("fail_oneshot.py")));
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(!e.exited && !e.protocol, "{e:?}");
            assert!(e.message.contains("exit code 3"), "{}", e.message);
            assert!(e.message.contains("makes no sense"), "{}", e.message);
        })
        .await;
    }

    #[tokio::test]
    async fn oneshot_non_json_stdout_is_a_protocol_error() {
        local(async {
            let config = CommandConfig::new("python3").with_args(["-c", "print('hello world')"]);
            let agent = CommandAgent::new("echo#0", config);
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(e.protocol && !e.exited, "{e:?}");
            assert!(e.message.contains("hello world"), "{}", e.message);

            let config = CommandConfig::new("python3").with_args(["-c", "pass"]);
            let agent = CommandAgent::new("echo#0", config);
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(e.protocol && e.message.contains("printed nothing"), "{e:?}");
        })
        .await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn oneshot_killed_by_signal_names_the_signal() {
        local(async {
            let config = CommandConfig::new("python3").with_args([
                "-c",
                "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
            ]);
            let agent = CommandAgent::new("echo#0", config);
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(e.exited, "{e:?}");
            assert!(e.message.contains("SIGKILL"), "{}", e.message);
        })
        .await;
    }

    #[tokio::test]
    async fn oneshot_missing_program_names_it() {
        local(async {
            let agent =
                CommandAgent::new("echo#0", CommandConfig::new("/nonexistent/muster-agent"));
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(!e.exited && !e.protocol, "{e:?}");
            assert!(
                e.message.contains("/nonexistent/muster-agent"),
                "{}",
                e.message
            );
        })
        .await;
    }

    #[tokio::test]
    async fn oneshot_cancel_kills_the_process() {
        local(async {
            let config =
                CommandConfig::new("python3").with_args(["-c", "import time; time.sleep(30)"]);
            let agent = Rc::new(CommandAgent::new("echo#0", config));
            let c = ctx(3);
            let (id, epoch) = (c.task_id, c.epoch);
            let fut = agent.handle(json!({}), c);
            let task = tokio::task::spawn_local(fut);
            tokio::time::sleep(Duration::from_millis(200)).await;
            agent.cancel(id, epoch);
            let e = timeout(T, task).await.unwrap().unwrap().unwrap_err();
            assert!(e.message.contains("cancelled"), "{}", e.message);
        })
        .await;
    }

    // ----- stdio -----

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
            let agent = CommandAgent::new("echo#0", stdio(script("examples/agents/echo_stdio.py")));
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(e.message.contains("not started"), "{}", e.message);
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_missing_program_fails_start() {
        local(async {
            let agent = CommandAgent::new(
                "echo#0",
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
            let agent = Rc::new(started(stdio(fixture("slow_stdio.py")), &rec).await);
            let slow =
                tokio::task::spawn_local(agent.handle(json!({"n": 1, "delay_ms": 500}), ctx(1)));
            let fast = run(&agent, json!({"n": 2, "delay_ms": 0}), ctx(1))
                .await
                .unwrap();
            assert_eq!(fast, json!({"n": 2}));
            assert!(!slow.is_finished(), "the slow task answered first");
            let slow = timeout(T, slow).await.unwrap().unwrap().unwrap();
            assert_eq!(slow, json!({"n": 1}));
            agent.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn stdio_cancel_sends_the_cancel_line() {
        local(async {
            let rec = Recorder::default();
            let agent = Rc::new(started(stdio(fixture("slow_stdio.py")), &rec).await);
            let c = ctx(4);
            let (id, epoch) = (c.task_id, c.epoch);
            let task =
                tokio::task::spawn_local(agent.handle(json!({"n": 1, "delay_ms": 20000}), c));
            tokio::time::sleep(Duration::from_millis(200)).await;
            agent.cancel(id, epoch);
            let e = timeout(T, task).await.unwrap().unwrap().unwrap_err();
            assert!(!e.exited && !e.protocol, "{e:?}");
            assert_eq!(e.message, "cancelled by the runtime");
            agent.stop().await;
        })
        .await;
    }

    fn stderr_lines_containing(agent: &CommandAgent, needle: &str) -> usize {
        let inner = agent.shared.inner.borrow();
        inner
            .stderr_tail
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    #[tokio::test]
    async fn stdio_dropped_task_is_cancelled_once() {
        local(async {
            let rec = Recorder::default();
            let agent = started(stdio(fixture("slow_stdio.py")), &rec).await;
            let c = ctx(9);
            let (id, epoch) = (c.task_id, c.epoch);
            // The owner's time bound passes: the handle future is dropped unanswered.
            let r = timeout(
                Duration::from_millis(200),
                agent.handle(json!({"delay_ms": 20000}), c),
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

            // The process is gone: the next task fails at once.
            let t0 = Instant::now();
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(e.exited, "{e:?}");
            assert!(
                t0.elapsed() < Duration::from_millis(100),
                "{:?}",
                t0.elapsed()
            );
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
    async fn stdio_stop_fails_tasks_in_flight() {
        local(async {
            let rec = Recorder::default();
            let agent = Rc::new(started(stdio(fixture("slow_stdio.py")), &rec).await);
            let task = tokio::task::spawn_local(agent.handle(json!({"delay_ms": 20000}), ctx(1)));
            tokio::time::sleep(Duration::from_millis(100)).await;
            timeout(T, agent.stop()).await.unwrap();
            let e = timeout(T, task).await.unwrap().unwrap().unwrap_err();
            assert!(e.exited && e.message.contains("stopped"), "{e:?}");
            assert!(rec.exits().is_empty());
        })
        .await;
    }

    #[test]
    fn quoting_and_tails_are_bounded() {
        let long = "x".repeat(1000);
        assert!(quote(&long).chars().count() < QUOTE_CHARS + 5);
        let tail = tail_text(&"é".repeat(3000));
        assert!(tail.len() <= STDERR_TAIL_BYTES + 4);
        assert_eq!(tail_text("  \n"), "(empty)");
    }
}
