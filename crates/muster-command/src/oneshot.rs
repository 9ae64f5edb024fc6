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
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::config::CommandConfig;
use super::process::{
    MAX_OUTPUT_BYTES, ProcessGroup, StderrTail, base_command, capture_stderr, describe_status,
    quote, quote_bytes, read_capped, remaining_ms, spawn_error,
};
use muster_core::agents::agent::{AgentError, TaskContext};

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
    by_seq: HashMap<u64, Attempt>,
}

/// One running attempt, as `cancel` and `stop` see it.
struct Attempt {
    key: (Uuid, u64),
    /// Tells the attempt it was killed (so it answers "cancelled").
    killed: oneshot::Sender<()>,
    group: Rc<ProcessGroup>,
}

impl Attempt {
    /// Kills the attempt's process group at once, and tells the attempt.
    fn kill(self) {
        self.group.kill();
        let _ = self.killed.send(());
    }
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
    ) -> impl Future<Output = Result<Value, AgentError>> + 'static + use<> {
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
            .filter(|(_, attempt)| attempt.key == (task_id, epoch))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in seqs {
            if let Some(attempt) = running.by_seq.remove(&seq) {
                attempt.kill();
            }
        }
    }

    /// Kills every process running.
    pub(super) fn kill_all(&self) {
        if let Ok(mut running) = self.shared.running.try_borrow_mut() {
            for (_, attempt) in running.by_seq.drain() {
                attempt.kill();
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
    let mut cmd = base_command(&name, &config)?;
    cmd.env("MUSTER_TASK_ID", ctx.task_id.to_string())
        .env("MUSTER_EPOCH", ctx.epoch.to_string())
        .env("MUSTER_ATTEMPT", ctx.attempt.to_string())
        .env("MUSTER_CAPABILITY", &*ctx.capability)
        .env("MUSTER_AGENT", &*ctx.agent)
        .env("MUSTER_DEADLINE_MS", remaining_ms(&ctx).to_string())
        .env("MUSTER_EFFECT_KEY_PREFIX", ctx.effect_key_prefix());
    let effects = ctx.effects();
    if !effects.is_empty() {
        // The task's ledger: what earlier attempts did (done) or may have done (unknown).
        cmd.env(
            "MUSTER_EFFECTS",
            crate::stdio::wire::effects_json(&effects).to_string(),
        );
    }
    if let Some(scope) = ctx.scope() {
        // The program's output may list what it changed in `touched`; the task's owner
        // checks it against this scope.
        cmd.env(
            "MUSTER_SCOPE",
            serde_json::to_string(scope).unwrap_or_default(),
        );
    }
    let bytes = serde_json::to_vec(&input)
        .map_err(|e| AgentError::new(format!("agent {name}: cannot encode the input: {e}")))?;

    let mut child = cmd.spawn().map_err(|e| spawn_error(&name, &config, &e))?;
    // However this attempt ends, even by being dropped, the process and whatever it started
    // are killed: dropping the last `Rc` of the group kills it.
    let group = Rc::new(ProcessGroup::of(&child));

    // Register so that `cancel` and `stop` can kill it.
    let (kill_tx, mut kill_rx) = oneshot::channel::<()>();
    let _registration = {
        let mut running = shared.running.borrow_mut();
        let seq = running.next_seq;
        running.next_seq += 1;
        running.by_seq.insert(
            seq,
            Attempt {
                key: (ctx.task_id, ctx.epoch),
                killed: kill_tx,
                group: group.clone(),
            },
        );
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
    let tail = RefCell::new(StderrTail::new(name.clone()));
    let mut too_large = false;
    let status = {
        let write = write_input(&name, stdin, bytes);
        let read_out = read_capped(&mut stdout, &mut out, MAX_OUTPUT_BYTES);
        let read_err = capture_stderr(&mut stderr, &tail);
        tokio::pin!(write, read_out, read_err);
        let (mut written, mut out_done, mut err_done, mut kill_gone) = (false, false, false, false);
        // The program's exit ends the attempt, not the end of its stdout: a process it left
        // running in the background may hold stdout open for ever.
        let status = loop {
            tokio::select! {
                // A cancel kills the group before it says so: look at what it says first,
                // or the kill would be reported as a crash.
                biased;
                killed = &mut kill_rx, if !kill_gone => match killed {
                    Ok(()) => {
                        return Err(AgentError::new(format!(
                            "agent {name}: task {} (epoch {}) was cancelled; its process was killed",
                            ctx.task_id, ctx.epoch
                        )));
                    }
                    Err(_) => kill_gone = true,
                },
                status = child.wait() => break Some(status),
                read = &mut read_out, if !out_done => {
                    out_done = true;
                    if read.is_err() {
                        too_large = true;
                        break None;
                    }
                }
                () = &mut read_err, if !err_done => err_done = true,
                () = &mut write, if !written => written = true,
            }
        };
        if status.is_some() {
            // The program is done, and so is anything it left running (which could hold
            // the pipes open): kill the group before the leader's id can be reused.
            group.kill();
            // What it wrote before exiting is in the pipes already: read it, briefly.
            let drain = async {
                tokio::join!(
                    async {
                        if !out_done && read_out.as_mut().await.is_err() {
                            too_large = true;
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
        }
        status
    };

    let program = &config.program;
    if too_large {
        group.kill();
        return Err(AgentError::protocol(format!(
            "agent {name}: `{program}` printed more than {MAX_OUTPUT_BYTES} bytes on stdout \
             (the limit for one answer); its process was killed"
        )));
    }
    let status = match status {
        Some(Ok(status)) => status,
        Some(Err(e)) => {
            return Err(AgentError::new(format!(
                "agent {name}: waiting for `{program}` failed: {e}"
            )));
        }
        None => {
            return Err(AgentError::new(format!(
                "agent {name}: `{program}` ended without an exit status"
            )));
        }
    };
    if !status.success() {
        let tail = match tail.try_borrow() {
            Ok(tail) => tail.text(),
            Err(_) => "(unavailable)".to_string(),
        };
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
    let stdout = match std::str::from_utf8(&out) {
        Ok(stdout) => stdout,
        Err(e) => {
            return Err(AgentError::protocol(format!(
                "agent {name}: `{program}` exited 0 but its stdout is not valid UTF-8 (at byte {}); it printed: {}",
                e.valid_up_to(),
                quote_bytes(&out)
            )));
        }
    };
    if stdout.trim().is_empty() {
        return Err(AgentError::protocol(format!(
            "agent {name}: `{program}` exited 0 but printed nothing on stdout (expected one JSON document)"
        )));
    }
    serde_json::from_str(stdout).map_err(|e| {
        AgentError::protocol(format!(
            "agent {name}: `{program}` exited 0 but its stdout is not JSON ({e}); it printed: {}",
            quote(stdout)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use tokio::time::timeout;

    use super::super::testing::{
        T, ctx, expect_err, fixture, local, peak_rss, python, read_pid, reset_peak_rss, script,
        sh_with_pidfile, wait_gone,
    };
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
            assert_eq!(
                env["MUSTER_EFFECT_KEY_PREFIX"],
                json!(format!("muster:{task_id}:"))
            );
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
    async fn oneshot_huge_stderr_is_kept_as_a_bounded_tail() {
        local(async {
            // 200 MiB on stderr, in 1 MiB lines, then a failure.
            let program = "import sys\n\
                chunk = b'x' * (1 << 20) + b'\\n'\n\
                for _ in range(200):\n    sys.stderr.buffer.write(chunk)\n\
                sys.stderr.buffer.write(b'the end\\n')\n\
                sys.exit(1)\n";
            let agent = agent(CommandConfig::new("python3").with_args(["-c", program]));
            let before = reset_peak_rss();
            let e = timeout(Duration::from_secs(120), agent.run(json!({}), ctx(1)))
                .await
                .expect("the task hung")
                .unwrap_err();
            assert!(e.message.contains("exit code 1"), "{}", &e.message[..200]);
            assert!(
                e.message.contains("the end"),
                "the tail is the end of stderr"
            );
            assert!(e.message.len() < 4096, "{} bytes", e.message.len());
            if let (Some(before), Some(after)) = (before, peak_rss()) {
                let grown = after.saturating_sub(before);
                assert!(
                    grown < 64 << 20,
                    "muster's peak memory grew by {} MiB reading 200 MiB of stderr",
                    grown >> 20
                );
            }
        })
        .await;
    }

    #[tokio::test]
    async fn oneshot_stdout_over_the_limit_is_a_protocol_error() {
        local(async {
            let program = "import sys; sys.stdout.write('\"' + 'x' * (5 << 20) + '\"')";
            let agent = agent(CommandConfig::new("python3").with_args(["-c", program]));
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
        })
        .await;
    }

    #[tokio::test]
    async fn oneshot_invalid_utf8_stdout_is_a_protocol_error_naming_the_offset() {
        local(async {
            let program = r#"import sys; sys.stdout.buffer.write(b'{"a": "\xff"}')"#;
            let agent = agent(CommandConfig::new("python3").with_args(["-c", program]));
            let e = expect_err(run(&agent, json!({}), ctx(1)).await);
            assert!(e.protocol, "{e:?}");
            assert!(e.message.contains("UTF-8"), "{}", e.message);
            assert!(e.message.contains("byte 7"), "{}", e.message);
        })
        .await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn oneshot_cancel_kills_the_whole_process_group() {
        local(async {
            let dir = tempfile::tempdir().unwrap();
            let (config, pidfile) = sh_with_pidfile(r#"sleep 300 & echo $! > "$1"; wait"#, &dir);
            let agent = agent(config);
            let c = ctx(3);
            let (id, epoch) = (c.task_id, c.epoch);
            let task = tokio::task::spawn_local(agent.run(json!({}), c));
            let grandchild = read_pid(&pidfile).await;
            agent.cancel(id, epoch);
            let e = timeout(T, task).await.unwrap().unwrap().unwrap_err();
            assert!(e.message.contains("cancelled"), "{}", e.message);
            assert!(
                wait_gone(grandchild).await,
                "the grandchild outlived the cancel"
            );
        })
        .await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn oneshot_cancel_is_reported_as_a_cancel_even_once_the_process_is_dead() {
        local(async {
            // A cancel kills the process group at once; by the time the attempt looks, the
            // process's exit may be as ready as the cancel. Several rounds, because which
            // of two ready branches an unbiased select takes is random.
            for _ in 0..8 {
                let dir = tempfile::tempdir().unwrap();
                let (config, pidfile) = sh_with_pidfile(r#"echo $$ > "$1"; exec sleep 300"#, &dir);
                let agent = agent(config);
                let c = ctx(3);
                let (id, epoch) = (c.task_id, c.epoch);
                let mut attempt = Box::pin(agent.run(json!({}), c));
                let pid = tokio::select! {
                    pid = read_pid(&pidfile) => pid,
                    r = &mut attempt => panic!("the attempt ended early: {r:?}"),
                };
                agent.cancel(id, epoch);
                // Dead (a zombie, until the attempt reaps it), while the attempt is not polled.
                assert!(wait_gone(pid).await, "the cancel did not kill the process");
                let e = timeout(T, attempt).await.unwrap().unwrap_err();
                assert!(e.message.contains("cancelled") && !e.exited, "{e:?}");
            }
        })
        .await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn oneshot_dropped_attempt_kills_the_whole_process_group() {
        local(async {
            let dir = tempfile::tempdir().unwrap();
            let (config, pidfile) = sh_with_pidfile(r#"sleep 300 & echo $! > "$1"; wait"#, &dir);
            let agent = agent(config);
            // The owner's time bound passes: the attempt's future is dropped.
            let task = tokio::task::spawn_local(agent.run(json!({}), ctx(1)));
            let grandchild = read_pid(&pidfile).await;
            task.abort();
            assert!(timeout(T, task).await.unwrap().is_err());
            assert!(
                wait_gone(grandchild).await,
                "the grandchild outlived the attempt"
            );
        })
        .await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn oneshot_exit_kills_what_the_program_left_running() {
        local(async {
            let dir = tempfile::tempdir().unwrap();
            let (config, pidfile) =
                sh_with_pidfile(r#"sleep 300 & echo $! > "$1"; echo '{"ok": 1}'"#, &dir);
            let agent = agent(config);
            let out = timeout(Duration::from_secs(30), agent.run(json!({}), ctx(1)))
                .await
                .expect("the task hung")
                .unwrap();
            assert_eq!(out, json!({"ok": 1}));
            let grandchild = read_pid(&pidfile).await;
            assert!(
                wait_gone(grandchild).await,
                "the grandchild outlived the attempt"
            );
        })
        .await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn oneshot_stop_kills_the_whole_process_group() {
        local(async {
            let dir = tempfile::tempdir().unwrap();
            let (config, pidfile) = sh_with_pidfile(r#"sleep 300 & echo $! > "$1"; wait"#, &dir);
            let agent = agent(config);
            let task = tokio::task::spawn_local(agent.run(json!({}), ctx(1)));
            let grandchild = read_pid(&pidfile).await;
            agent.kill_all();
            let e = timeout(T, task).await.unwrap().unwrap().unwrap_err();
            assert!(e.message.contains("killed"), "{}", e.message);
            assert!(
                wait_gone(grandchild).await,
                "the grandchild outlived the stop"
            );
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
