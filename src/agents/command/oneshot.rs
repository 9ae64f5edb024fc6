//! Oneshot mode: one process per task. The input goes to the program's stdin, its stdout is
//! the output; this module also keeps the running processes so that a cancel or a stop can
//! kill them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::config::CommandConfig;
use super::process::{base_command, describe_status, quote, remaining_ms, spawn_error, tail_text};
use crate::agents::agent::{AgentError, TaskContext};

/// How long stdout and stderr are still read once the program has exited: what it wrote is
/// in the pipes already, so only a process it left behind holding them open makes this wait.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

/// The oneshot side of a command agent: runs one process per task. Dropping it kills the
/// processes still running.
pub(super) struct Oneshot {
    shared: Rc<Shared>,
}

struct Shared {
    name: Arc<str>,
    config: Arc<CommandConfig>,
    running: RefCell<Running>,
}

/// The processes running, by registration.
#[derive(Default)]
struct Running {
    next_seq: u64,
    by_seq: HashMap<u64, ((Uuid, u64), oneshot::Sender<()>)>,
}

/// Removes a task's registration when its attempt ends or is dropped.
struct Registration {
    shared: Rc<Shared>,
    seq: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut running) = self.shared.running.try_borrow_mut() {
            running.by_seq.remove(&self.seq);
        }
    }
}

impl Oneshot {
    /// Runs `config`'s program once per task for the instance `name`.
    pub(super) fn new(name: Arc<str>, config: Arc<CommandConfig>) -> Self {
        Oneshot {
            shared: Rc::new(Shared {
                name,
                config,
                running: RefCell::new(Running::default()),
            }),
        }
    }

    /// Runs one attempt: spawns the program, feeds it `input`, parses its stdout.
    pub(super) fn run(
        &self,
        input: Value,
        ctx: TaskContext,
    ) -> impl Future<Output = Result<Value, AgentError>> + 'static {
        run_oneshot(self.shared.clone(), input, ctx)
    }

    /// Kills the processes running `task_id` at `epoch`.
    pub(super) fn cancel(&self, task_id: Uuid, epoch: u64) {
        let Ok(mut running) = self.shared.running.try_borrow_mut() else {
            return;
        };
        let seqs: Vec<u64> = running
            .by_seq
            .iter()
            .filter(|(_, (key, _))| *key == (task_id, epoch))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in seqs {
            if let Some((_, kill)) = running.by_seq.remove(&seq) {
                let _ = kill.send(());
            }
        }
    }

    /// Kills every process running.
    pub(super) fn kill_all(&self) {
        if let Ok(mut running) = self.shared.running.try_borrow_mut() {
            for (_, (_, kill)) in running.by_seq.drain() {
                let _ = kill.send(());
            }
        }
    }
}

impl Drop for Oneshot {
    fn drop(&mut self) {
        self.kill_all();
    }
}

async fn run_oneshot(
    shared: Rc<Shared>,
    input: Value,
    ctx: TaskContext,
) -> Result<Value, AgentError> {
    let name = shared.name.clone();
    let config = shared.config.clone();
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
        let mut running = shared.running.borrow_mut();
        let seq = running.next_seq;
        running.next_seq += 1;
        running
            .by_seq
            .insert(seq, ((ctx.task_id, ctx.epoch), kill_tx));
        Registration {
            shared: shared.clone(),
            seq,
        }
    };

    let (Some(stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(AgentError::new(format!(
            "agent {name}: the process's stdio pipes are missing"
        )));
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let status = {
        let write = write_input(&name, stdin, bytes);
        let read_out = read_all(&mut stdout, &mut out);
        let read_err = read_all(&mut stderr, &mut err);
        tokio::pin!(write, read_out, read_err);
        let (mut written, mut out_done, mut err_done, mut kill_gone) = (false, false, false, false);
        // The program's exit ends the attempt, not the end of its stdout: a process it left
        // running in the background may hold stdout open for ever.
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                () = &mut write, if !written => written = true,
                () = &mut read_out, if !out_done => out_done = true,
                () = &mut read_err, if !err_done => err_done = true,
                killed = &mut kill_rx, if !kill_gone => match killed {
                    Ok(()) => {
                        return Err(AgentError::new(format!(
                            "agent {name}: task {} (epoch {}) was cancelled; its process was killed",
                            ctx.task_id, ctx.epoch
                        )));
                    }
                    Err(_) => kill_gone = true,
                },
            }
        };
        // What it wrote before exiting is in the pipes already: read it, briefly.
        let drain = async {
            tokio::join!(
                async {
                    if !out_done {
                        read_out.as_mut().await;
                    }
                },
                async {
                    if !err_done {
                        read_err.as_mut().await;
                    }
                }
            )
        };
        if tokio::time::timeout(OUTPUT_DRAIN, drain).await.is_err() {
            tracing::debug!(agent = %name, "`{}` exited but its stdout or stderr is still open (held by a process it started); using what it wrote", config.program);
        }
        status.map_err(|e| {
            AgentError::new(format!(
                "agent {name}: waiting for `{}` failed: {e}",
                config.program
            ))
        })?
    };

    let program = &config.program;
    if !status.success() {
        let tail = tail_text(&String::from_utf8_lossy(&err));
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
    let stdout = String::from_utf8_lossy(&out);
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

/// Writes the input to the program's stdin, then closes it.
async fn write_input(name: &str, mut stdin: ChildStdin, bytes: Vec<u8>) {
    // A program that ignores its input may exit before reading it: not an error.
    if let Err(e) = stdin.write_all(&bytes).await {
        tracing::debug!(agent = %name, "writing the input to stdin failed: {e}");
    }
    let _ = stdin.shutdown().await;
}

/// Appends everything `reader` yields to `buf`, until EOF or an error.
async fn read_all<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                tracing::debug!("reading from an agent process failed: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use tokio::time::timeout;

    use super::super::testing::{ctx, fixture, local, python, script, T};
    use super::*;

    fn agent(config: CommandConfig) -> Oneshot {
        Oneshot::new(Arc::from("echo#0"), Arc::new(config))
    }

    async fn run(agent: &Oneshot, input: Value, ctx: TaskContext) -> Result<Value, AgentError> {
        timeout(T, agent.run(input, ctx))
            .await
            .expect("the task hung")
    }

    #[tokio::test]
    async fn oneshot_round_trip() {
        local(async {
            let agent = agent(python(script("examples/agents/echo_oneshot.py")));
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
            let agent = agent(config);
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
            let agent = agent(python(fixture("fail_oneshot.py")));
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
            let agent1 = agent(config);
            let e = run(&agent1, json!({}), ctx(1)).await.unwrap_err();
            assert!(e.protocol && !e.exited, "{e:?}");
            assert!(e.message.contains("hello world"), "{}", e.message);

            let config = CommandConfig::new("python3").with_args(["-c", "pass"]);
            let agent2 = agent(config);
            let e = run(&agent2, json!({}), ctx(1)).await.unwrap_err();
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
            let agent = agent(config);
            let e = run(&agent, json!({}), ctx(1)).await.unwrap_err();
            assert!(e.exited, "{e:?}");
            assert!(e.message.contains("SIGKILL"), "{}", e.message);
        })
        .await;
    }

    #[tokio::test]
    async fn oneshot_missing_program_names_it() {
        local(async {
            let agent = agent(CommandConfig::new("/nonexistent/muster-agent"));
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
    async fn oneshot_exit_ends_the_attempt_even_if_a_background_process_keeps_stdout_open() {
        local(async {
            // The background `sleep` inherits stdout and keeps it open long after the
            // program itself exited with a valid answer.
            let config =
                CommandConfig::new("sh").with_args(["-c", r#"echo '{"ok": 1}'; sleep 100 &"#]);
            let agent = agent(config);
            let out = timeout(Duration::from_secs(30), agent.run(json!({}), ctx(1)))
                .await
                .expect("the attempt waited for stdout to close instead of the exit")
                .unwrap();
            assert_eq!(out, json!({"ok": 1}));
        })
        .await;
    }

    #[tokio::test]
    async fn oneshot_cancel_kills_the_process() {
        local(async {
            let config =
                CommandConfig::new("python3").with_args(["-c", "import time; time.sleep(30)"]);
            let agent = agent(config);
            let c = ctx(3);
            let (id, epoch) = (c.task_id, c.epoch);
            let task = tokio::task::spawn_local(agent.run(json!({}), c));
            tokio::time::sleep(Duration::from_millis(200)).await;
            agent.cancel(id, epoch);
            let e = timeout(T, task).await.unwrap().unwrap().unwrap_err();
            assert!(e.message.contains("cancelled"), "{}", e.message);
        })
        .await;
    }
}
