//! The stdio mode's tests: real processes (the fixtures in `tests/fixtures/agents`) driven
//! through [`Stdio`], and the wire format's line splitting and schema agreement.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use tokio::time::timeout;

use super::driver::Stdio;
use super::wire::{AgentLine, Line, Lines};
use crate::config::{CommandConfig, CommandMode};
use crate::process::MAX_OUTPUT_BYTES;
use crate::testing::{
    Recorder, T, ctx, expect_err, fixture, local, read_pid, script, sh_with_pidfile, stdio,
    wait_gone,
};
use muster_core::agents::agent::{AgentError, AgentLink, TaskContext};

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
        let agent =
            agent(CommandConfig::new("/nonexistent/muster-agent").with_mode(CommandMode::Stdio));
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
        let slow = tokio::task::spawn_local(agent.run(json!({"n": 1, "delay_ms": 3000}), ctx(1)));
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
        json!({"type": "effect_started", "task_id": id, "epoch": 1, "name": "n", "key": "k",
               "ack": true}),
        serde_json::from_str(super::wire::effect_ack_line(id, 1, "n", None).trim()).unwrap(),
        serde_json::from_str(
            super::wire::effect_ack_line(id, 1, "n", Some("stopped".into())).trim(),
        )
        .unwrap(),
    ];
    for line in &good {
        assert!(store.validate("agent-protocol", line).is_ok(), "{line}");
        if !["task", "cancel", "effect_ack"].contains(&line["type"].as_str().unwrap_or("")) {
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
        let b = beats.clone();
        let c = ctx(2).with_heartbeat(Arc::new(move || {
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
