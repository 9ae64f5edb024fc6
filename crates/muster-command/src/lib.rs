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
//!
//! Every agent process gets a least-privilege environment ([`DEFAULT_ENV_PASS`] plus what
//! its [`CommandConfig`] grants), optional [`CommandLimits`], and a process group of its
//! own that is killed on every way out (and, on Linux, by the kernel if muster dies). What
//! it prints is bounded ([`MAX_OUTPUT_BYTES`] for an answer, a short stderr tail).
//!
//! Layout: `config` (what to run) ← `child` (limits and the parent-death signal, between
//! fork and exec) ← `shim` (the agent shim) ← `program` ← `process` (spawning, exit
//! statuses, stderr tails, quoting) ← `oneshot` and `stdio` (the two modes) ← this file (the [`Agent`] impl).
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod child;
mod config;
mod oneshot;
mod process;
mod program;
pub mod shim;
mod stdio;
#[cfg(test)]
mod testing;

use std::sync::Arc;

use futures::future::LocalBoxFuture;
use serde_json::Value;
use uuid::Uuid;

pub use config::{CommandConfig, CommandLimits, CommandMode, DEFAULT_ENV_PASS};
pub use process::MAX_OUTPUT_BYTES;
pub use program::{ProgramError, find_program};

use muster_core::agents::agent::{Agent, AgentError, AgentFactory, AgentLink, TaskContext};

/// Makes one [`CommandAgent`] per instance (and per restart), all running the same program.
///
/// # Example
/// ```
/// use muster_command::{CommandConfig, CommandFactory};
/// use muster_core::agents::AgentFactory;
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
/// use muster_command::{CommandAgent, CommandConfig, CommandMode};
/// use muster_core::agents::{Agent, AgentError, AgentLink, TaskContext};
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
    name: Arc<str>,
    config: Arc<CommandConfig>,
    backend: Backend,
}

/// The mode's machinery; dropping it kills whatever process it still runs.
enum Backend {
    Oneshot(oneshot::Oneshot),
    Stdio(stdio::Stdio),
}

impl std::fmt::Debug for CommandAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandAgent")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish()
    }
}

impl CommandAgent {
    /// A command agent for the instance called `instance_name` (e.g. `tester#0`). Nothing is
    /// spawned until [`Agent::start`] (stdio) or [`Agent::handle`] (oneshot).
    pub fn new(instance_name: &str, config: CommandConfig) -> Self {
        let name: Arc<str> = Arc::from(instance_name);
        let config = Arc::new(config);
        let backend = match config.mode {
            CommandMode::Oneshot => {
                Backend::Oneshot(oneshot::Oneshot::new(name.clone(), config.clone()))
            }
            CommandMode::Stdio => Backend::Stdio(stdio::Stdio::new(name.clone(), config.clone())),
        };
        CommandAgent {
            name,
            config,
            backend,
        }
    }

    /// The instance name this agent was made for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How its program is run.
    pub fn config(&self) -> &CommandConfig {
        &self.config
    }
}

impl Agent for CommandAgent {
    fn handle(
        &self,
        input: Value,
        ctx: TaskContext,
    ) -> LocalBoxFuture<'static, Result<Value, AgentError>> {
        match &self.backend {
            Backend::Oneshot(oneshot) => Box::pin(oneshot.run(input, ctx)),
            Backend::Stdio(stdio) => Box::pin(stdio.run(input, ctx)),
        }
    }

    fn start(&self, link: AgentLink) -> LocalBoxFuture<'static, Result<(), AgentError>> {
        match &self.backend {
            // A program that cannot be found fails the start (its supervisor gives up after
            // its intensity) instead of every task, one by one.
            Backend::Oneshot(_) => {
                let found = std::env::current_dir()
                    .map_err(|e| {
                        AgentError::new(format!("agent {}: no working directory: {e}", self.name))
                    })
                    .and_then(|here| {
                        program::find_program(&self.config, &here).map_err(|e| {
                            AgentError::new(format!("agent {}: cannot start: {e}", self.name))
                        })
                    });
                Box::pin(async move { found.map(|_| ()) })
            }
            Backend::Stdio(stdio) => Box::pin(stdio.start(link)),
        }
    }

    fn stop(&self) -> LocalBoxFuture<'static, ()> {
        match &self.backend {
            Backend::Oneshot(oneshot) => {
                oneshot.kill_all();
                Box::pin(async {})
            }
            Backend::Stdio(stdio) => Box::pin(stdio.stop()),
        }
    }

    fn cancel(&self, task_id: Uuid, epoch: u64) {
        match &self.backend {
            Backend::Oneshot(oneshot) => oneshot.cancel(task_id, epoch),
            Backend::Stdio(stdio) => stdio.cancel(task_id, epoch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_makes_an_agent_per_instance() {
        let factory = CommandFactory(CommandConfig::new("true"));
        let _a = factory.create("x#0");
        let _b = factory.create("x#1");
    }
}
