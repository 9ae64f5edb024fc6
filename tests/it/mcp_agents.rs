//! MCP servers are agents (`[backend] kind = "mcp"`): real servers from PyPI and npm
//! (mcp-server-time, mcp-server-git, @modelcontextprotocol/server-everything, installed by
//! `scripts/mcp-servers` when absent), each instance one session. A workflow calls
//! `get_current_time` and `git_log`; a tool error, a contract violation, a server killed
//! mid-call, progress notifications as heartbeats and a streamable-HTTP server each have a
//! test. Real processes, real clock, bounded waits; servers are stopped by pid.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::support::common;

use common::{muster_within, output_within, real, within};
use muster::cast::Manifest;
use muster::{Event, Muster, SchemaStore, Task, TaskStatus};
use serde_json::{Value, json};

/// Where `scripts/mcp-servers` put the servers: its venv and its npm prefix.
struct Servers {
    venv: PathBuf,
    npm: PathBuf,
}

fn servers() -> &'static Servers {
    static S: OnceLock<Servers> = OnceLock::new();
    S.get_or_init(|| {
        let mut paths =
            crate::support::common::script_paths("mcp-servers", &["venv", "npm"]).into_iter();
        Servers {
            venv: paths.next().unwrap_or_default(),
            npm: paths.next().unwrap_or_default(),
        }
    })
}

fn venv_bin(name: &str) -> String {
    servers().venv.join("bin").join(name).display().to_string()
}

fn everything_js() -> String {
    servers()
        .npm
        .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
        .display()
        .to_string()
}

/// Loads one manifest (`toml`) through the cast, as `muster run` does, with `schemas`
/// already in the store.
fn load(dir: &Path, file: &str, toml: &str, schemas: &[(&str, Value)]) -> (Manifest, SchemaStore) {
    let path = dir.join(file);
    std::fs::write(&path, toml).expect("manifest written");
    let store = SchemaStore::new();
    for (n, s) in schemas {
        store.add(n, s.clone()).expect("schema");
    }
    let m = Manifest::load(&path, &store, Some(Default::default()))
        .unwrap_or_else(|e| panic!("{file} loads: {e:?}"));
    (m, store)
}

async fn start(manifests: Vec<(Manifest, SchemaStore)>) -> Muster {
    let mut b = Muster::builder();
    for (m, store) in manifests {
        for name in store.names() {
            if let Ok(s) = store.get(&name) {
                b = b.schema(&name, s.document.clone());
            }
        }
        b = b.agent(m.to_def(&Arc::new(store)).expect("a definition"));
    }
    b.start().await.expect("runtime starts")
}

/// Every failed attempt of `task`, as (reason, detail).
fn failures(m: &Muster, task: uuid::Uuid) -> Vec<(String, String)> {
    m.journal()
        .read_after(0)
        .into_iter()
        .filter_map(|r| match r.event {
            Event::AttemptFailed {
                task: t,
                reason,
                detail,
                ..
            } if t == task => Some((reason, detail)),
            _ => None,
        })
        .collect()
}

fn time_manifest(output: Option<&str>) -> String {
    let output = output
        .map(|o| format!("output = \"{o}\"\n"))
        .unwrap_or_default();
    format!(
        "name = \"time\"\nconcurrency = 2\n[[capabilities]]\nname = \"time.now\"\ntool = \"get_current_time\"\n{output}\
         [backend]\nkind = \"mcp\"\nprogram = \"{}\"\nargs = [\"--local-timezone\", \"UTC\"]\n",
        venv_bin("mcp-server-time")
    )
}

fn git(dir: &Path, args: &[&str]) {
    let mut cmd = std::process::Command::new("git");
    cmd.args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Muster Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Muster Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com");
    let out = output_within(60, cmd);
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_workflow_calls_get_current_time_and_git_log_and_agents_lists_the_tools() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("a.txt"), "one\n").unwrap();
    git(&repo, &["add", "a.txt"]);
    git(
        &repo,
        &["commit", "-q", "-m", "first commit seen through MCP"],
    );
    let actors = dir.path().join("actors");
    std::fs::create_dir(&actors).unwrap();
    // The example's manifests, with the servers' absolute paths.
    for (file, program) in [
        ("time.toml", "mcp-server-time"),
        ("git.toml", "mcp-server-git"),
    ] {
        let text = std::fs::read_to_string(format!("examples/mcp-tools/actors/{file}")).unwrap();
        let text = text.replace(
            &format!("program = \"{program}\""),
            &format!("program = \"{}\"", venv_bin(program)),
        );
        std::fs::write(actors.join(file), text).unwrap();
    }
    let input = json!({"repo": repo.display().to_string(), "commits": 2}).to_string();
    let actors_arg = actors.display().to_string();
    let root = std::env::current_dir().unwrap();
    let out = muster_within(
        240,
        &[
            "run",
            "examples/mcp-tools/workflow.toml",
            "--actors",
            &actors_arg,
            "--schemas",
            "examples/mcp-tools/schemas",
            "--input",
            &input,
            "--json",
        ],
        &root,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "muster run failed:\n{stdout}\n{stderr}"
    );
    let doc: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("one JSON document ({e}):\n{stdout}"));
    let text = doc.to_string();
    assert!(
        text.contains("first commit seen through MCP"),
        "git_log's output: {doc:#}"
    );
    assert!(
        text.contains("\"timezone\":\"UTC\""),
        "get_current_time's output: {doc:#}"
    );

    let out = muster_within(
        120,
        &[
            "agents",
            "--json",
            "--actors",
            &actors_arg,
            "--schemas",
            "examples/mcp-tools/schemas",
        ],
        &root,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("agents --json");
    let git = doc["mcp"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["agent"] == "git"))
        .unwrap_or_else(|| panic!("no git MCP agent in {doc:#}"));
    let tool = |name: &str| {
        git["tools"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == name))
            .unwrap_or_else(|| panic!("no tool {name} in {git:#}"))
            .clone()
    };
    assert_eq!(tool("git_log")["mapped"], json!(["git_log"]));
    assert_eq!(tool("git_status")["mapped"], json!(["git.status"]));
    assert_eq!(tool("git_diff")["mapped"], json!([]), "listed, not mapped");
    assert!(tool("git_log")["input_schema"]["properties"]["repo_path"].is_object());
    let schemas: Vec<String> = serde_json::from_value(doc["schemas"].clone()).unwrap();
    assert!(
        schemas.contains(&"mcp.git.git_log.input".to_string()),
        "{schemas:?}"
    );
    assert!(schemas.contains(&"mcp.content".to_string()), "{schemas:?}");

    // `muster check` compiles the contracts from the tools' schemas.
    let out = muster_within(
        120,
        &[
            "check",
            "examples/mcp-tools/workflow.toml",
            "--actors",
            &actors_arg,
            "--schemas",
            "examples/mcp-tools/schemas",
        ],
        &root,
    );
    assert!(
        out.status.success(),
        "check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_mapped_tool_the_server_lacks_is_refused_naming_the_field_and_the_tools() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("time.toml");
    std::fs::write(
        &path,
        time_manifest(None).replace("get_current_time", "get_time"),
    )
    .unwrap();
    let errors = Manifest::load(&path, &SchemaStore::new(), Some(Default::default()))
        .expect_err("an unknown tool is refused");
    assert_eq!(errors[0].field, "/capabilities/0/tool", "{errors:?}");
    assert!(
        errors[0].message.contains("no tool `get_time`"),
        "{errors:?}"
    );
    assert!(errors[0].message.contains("get_current_time"), "{errors:?}");
}

#[test]
fn a_tool_error_fails_the_attempt_with_the_tools_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let time = load(dir.path(), "time.toml", &time_manifest(None), &[]);
    real(async move {
        let m = start(vec![time]).await;
        let ok = within(
            60,
            "a good call",
            m.delegate(Task::new("time.now", json!({"timezone": "Europe/Paris"}))),
        )
        .await
        .unwrap();
        assert_eq!(ok.status, TaskStatus::Completed, "{ok:?}");
        let out = ok.output.clone().unwrap_or_default();
        assert_eq!(
            out["timezone"], "Europe/Paris",
            "structured content: {out:#}"
        );
        let bad = within(
            60,
            "a bad call",
            m.delegate(Task::new("time.now", json!({"timezone": "Not/AZone"})).attempts(1)),
        )
        .await
        .unwrap();
        assert_eq!(bad.status, TaskStatus::Escalated, "{bad:?}");
        let f = failures(&m, bad.id);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, "error", "{f:?}");
        assert!(f[0].1.contains("Not/AZone"), "the tool's text: {f:?}");
        m.shutdown().await;
    });
}

#[test]
fn an_output_that_breaks_the_declared_contract_is_a_contract_violation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let epoch = json!({"type": "object", "required": ["epoch_seconds"],
        "properties": {"epoch_seconds": {"type": "integer"}}});
    let time = load(
        dir.path(),
        "time.toml",
        &time_manifest(Some("epoch-seconds")),
        &[("epoch-seconds", epoch)],
    );
    real(async move {
        let m = start(vec![time]).await;
        let r = within(
            60,
            "the call",
            m.delegate(Task::new("time.now", json!({"timezone": "UTC"})).attempts(1)),
        )
        .await
        .unwrap();
        assert_eq!(r.status, TaskStatus::Escalated, "{r:?}");
        let f = failures(&m, r.id);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, "contract_violation", "{f:?}");
        assert!(f[0].1.contains("epoch_seconds"), "{f:?}");
        m.shutdown().await;
    });
}

fn everything_manifest(dir: &Path, heartbeat: &str, replicas: usize) -> String {
    // `sh` notes each server's instance and pid, then becomes the server.
    let pids = dir.join("pids");
    format!(
        "name = \"everything\"\nreplicas = {replicas}\n[[capabilities]]\nname = \"slow\"\ntool = \"trigger-long-running-operation\"\n{heartbeat}\
         [backend]\nkind = \"mcp\"\nprogram = \"sh\"\nargs = [\"-c\", \"echo $MUSTER_AGENT $$ >> {}; exec node {} stdio\"]\n",
        pids.display(),
        everything_js()
    )
}

/// Each server started, in order: (instance, pid).
fn pids(dir: &Path) -> Vec<(String, i32)> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (agent, pid) = l.trim().split_once(' ')?;
            Some((agent.to_string(), pid.parse().ok()?))
        })
        .collect()
}

#[test]
fn a_server_killed_mid_call_ends_the_attempt_agent_gone_and_is_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = everything_manifest(dir.path(), "", 2);
    let everything = load(dir.path(), "everything.toml", &manifest, &[]);
    // Loading listed the tools through a server of its own, gone by now: count from here.
    let _ = std::fs::remove_file(dir.path().join("pids"));
    let path = dir.path().to_path_buf();
    real(async move {
        let m = start(vec![everything]).await;
        let call = m.delegate(
            Task::new("slow", json!({"duration": 3, "steps": 3}))
                .attempts(3)
                .timeout(Duration::from_secs(60)),
        );
        let killer = async {
            // Once the first attempt holds its lease, kill its instance's server.
            let holder = within(60, "the first lease", async {
                loop {
                    let leased =
                        m.journal()
                            .read_after(0)
                            .into_iter()
                            .find_map(|r| match r.event {
                                Event::LeaseGranted { agent, .. } => Some(agent.to_string()),
                                _ => None,
                            });
                    if let Some(agent) = leased
                        && let Some((_, pid)) = pids(&path).into_iter().find(|(a, _)| *a == agent)
                    {
                        break (agent, pid);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            // SAFETY: kill(2) takes no pointers; the pid is a server this test started.
            unsafe {
                libc::kill(holder.1, libc::SIGKILL);
            }
            holder
        };
        let (r, (holder, killed)) =
            within(120, "the task", futures::future::join(call, killer)).await;
        let r = r.unwrap();
        assert_eq!(r.status, TaskStatus::Completed, "{r:?}");
        let f = failures(&m, r.id);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, "agent_gone", "{f:?}");
        assert!(
            f[0].1.contains("exited (signal 9"),
            "names the server's death: {f:?}"
        );
        assert!(
            r.output
                .as_ref()
                .is_some_and(|o| o["text"].as_str().unwrap_or_default().contains("completed")),
            "{r:?}"
        );
        // The task was reassigned: another instance completed it.
        let accepted_by = m
            .journal()
            .read_after(0)
            .into_iter()
            .find_map(|e| match e.event {
                Event::ResultAccepted { task, agent, .. } if task == r.id => {
                    Some(agent.to_string())
                }
                _ => None,
            });
        assert!(
            accepted_by.as_deref().is_some_and(|a| a != holder),
            "{accepted_by:?} after {holder} died"
        );
        // The instance whose server died was restarted with a new server (a new session).
        within(60, "the restarted server", async {
            while !pids(&path)
                .iter()
                .any(|(a, p)| *a == holder && *p != killed)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        m.shutdown().await;
    });
}

#[test]
fn progress_notifications_renew_the_attempts_heartbeat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let everything = load(
        dir.path(),
        "everything.toml",
        &everything_manifest(dir.path(), "heartbeat = \"2s\"\n", 1),
        &[],
    );
    real(async move {
        let m = start(vec![everything]).await;
        // 5 s of work with a progress notification every 0.25 s: the 2 s heartbeat holds.
        let beating = within(
            60,
            "the beating call",
            m.delegate(Task::new("slow", json!({"duration": 5, "steps": 20})).attempts(1)),
        )
        .await
        .unwrap();
        assert_eq!(beating.status, TaskStatus::Completed, "{beating:?}");
        assert!(failures(&m, beating.id).is_empty());
        // The same work with one notification, at its end: the heartbeat is missed.
        let silent = within(
            60,
            "the silent call",
            m.delegate(Task::new("slow", json!({"duration": 5, "steps": 1})).attempts(1)),
        )
        .await
        .unwrap();
        assert_eq!(silent.status, TaskStatus::Escalated, "{silent:?}");
        let f = failures(&m, silent.id);
        assert_eq!(
            f.first().map(|x| x.0.as_str()),
            Some("heartbeat_missed"),
            "{f:?}"
        );
        m.shutdown().await;
    });
}

#[test]
fn a_timed_out_call_sends_mcps_cancellation_notification_to_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `tee` copies what muster writes to the server into a log on its way to the server.
    let log = dir.path().join("to-server.jsonl");
    let manifest = format!(
        "name = \"everything\"\n[[capabilities]]\nname = \"slow\"\ntool = \"trigger-long-running-operation\"\n\
         [backend]\nkind = \"mcp\"\nprogram = \"sh\"\nargs = [\"-c\", \"tee -a {} | exec node {} stdio\"]\n",
        log.display(),
        everything_js()
    );
    let everything = load(dir.path(), "everything.toml", &manifest, &[]);
    real(async move {
        let m = start(vec![everything]).await;
        // 60 s of work, a 2 s timeout and one attempt: the call is abandoned.
        let r = within(
            60,
            "the timed-out call",
            m.delegate(
                Task::new("slow", json!({"duration": 60, "steps": 60}))
                    .attempts(1)
                    .timeout(Duration::from_secs(2)),
            ),
        )
        .await
        .unwrap();
        assert_eq!(r.status, TaskStatus::Escalated, "{r:?}");
        // The server is told: `notifications/cancelled` for that call's request id.
        let seen = within(30, "the cancellation notification", async {
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let msgs: Vec<Value> = text
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
                let call = msgs.iter().find(|m| {
                    m["method"] == "tools/call"
                        && m["params"]["name"] == "trigger-long-running-operation"
                });
                if let Some(call) = call
                    && let Some(cancel) = msgs.iter().find(|m| {
                        m["method"] == "notifications/cancelled"
                            && m["params"]["requestId"] == call["id"]
                    })
                {
                    break cancel.clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            seen["params"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("cancelled by muster")),
            "{seen}"
        );
        m.shutdown().await;
    });
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// server-everything serving streamable HTTP on a free port, stopped by pid on drop.
struct HttpServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_server() -> HttpServer {
    let port = free_port();
    let child = std::process::Command::new("node")
        .arg(everything_js())
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("node starts");
    let server = HttpServer { child, port };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "server-everything did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

#[test]
fn a_streamable_http_server_serves_capabilities_with_the_tools_schemas() {
    let server = http_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "name = \"remote\"\n[[capabilities]]\nname = \"sum\"\ntool = \"get-sum\"\n\
         [[capabilities]]\nname = \"weather\"\ntool = \"get-structured-content\"\n\
         [backend]\nkind = \"mcp\"\nurl = \"http://127.0.0.1:{}/mcp\"\n[backend.headers]\nx-muster-test = \"1\"\n",
        server.port
    );
    let remote = load(dir.path(), "remote.toml", &toml, &[]);
    assert_eq!(
        remote.0.capabilities[1].output,
        "mcp.remote.get-structured-content.output"
    );
    real(async move {
        let m = start(vec![remote]).await;
        let sum = within(
            60,
            "get-sum",
            m.delegate(Task::new("sum", json!({"a": 2, "b": 3}))),
        )
        .await
        .unwrap();
        assert_eq!(sum.status, TaskStatus::Completed, "{sum:?}");
        let text = sum.output.clone().unwrap_or_default()["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(text.contains('5'), "{text}");
        let weather = within(
            60,
            "get-structured-content",
            m.delegate(Task::new("weather", json!({"location": "Chicago"}))),
        )
        .await
        .unwrap();
        assert_eq!(weather.status, TaskStatus::Completed, "{weather:?}");
        let out = weather.output.clone().unwrap_or_default();
        assert!(
            out["temperature"].is_number(),
            "structured content: {out:#}"
        );
        // Input outside the tool's inputSchema is refused before any call.
        let refused = within(
            60,
            "a bad input",
            m.delegate(Task::new("weather", json!({"location": "Atlantis"})).attempts(1)),
        )
        .await;
        assert!(
            refused
                .as_ref()
                .map_or(true, |r| r.status != TaskStatus::Completed),
            "{refused:?}"
        );
        m.shutdown().await;
    });
    drop(server);
}

/// A scripted chat-completions server on the real clock: each request gets the next reply.
async fn fake_model(replies: Vec<Value>) -> (String, Arc<parking_lot::Mutex<Vec<Value>>>) {
    use axum::extract::State;
    type Shared = (
        Arc<parking_lot::Mutex<std::collections::VecDeque<Value>>>,
        Arc<parking_lot::Mutex<Vec<Value>>>,
    );
    async fn chat(
        State((replies, seen)): State<Shared>,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        seen.lock()
            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        match replies.lock().pop_front() {
            Some(v) => ([("content-type", "application/json")], v.to_string()).into_response(),
            None => (axum::http::StatusCode::IM_A_TEAPOT, "no more replies").into_response(),
        }
    }
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let shared: Shared = (
        Arc::new(parking_lot::Mutex::new(replies.into())),
        seen.clone(),
    );
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/v1"), seen)
}

#[test]
fn an_llm_agent_calls_an_mcp_tool_as_a_delegated_task() {
    use muster::agents::llm::{LlmConfig, LlmFactory, Structured};
    let dir = tempfile::tempdir().expect("tempdir");
    let time = load(dir.path(), "time.toml", &time_manifest(None), &[]);
    real(async move {
        let tool_call = json!({"choices": [{"message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "time_now", "arguments": "{\"timezone\": \"Asia/Tokyo\"}"}}]},
            "finish_reason": "tool_calls"}]});
        let answer = json!({"id": "c2", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant",
                "content": "{\"said\": \"it is late in Tokyo\"}"}, "finish_reason": "stop"}]});
        let (url, seen) = fake_model(vec![tool_call, answer]).await;
        let mut c = LlmConfig::new(&url, "fake-model", "What time is it in {{ input.city }}?");
        c.structured = Structured::JsonObject;
        c.tools = vec!["time.now".into()];
        let question = json!({"type": "object"});
        let said = json!({"type": "object", "required": ["said"], "properties": {"said": {"type": "string"}}});
        let schemas = Arc::new(SchemaStore::new());
        schemas.add("question", question.clone()).unwrap();
        schemas.add("said", said.clone()).unwrap();
        let outputs = std::collections::HashMap::from([("ask".to_string(), "said".to_string())]);
        let asker = muster::AgentDef::new("asker", LlmFactory::new(c, outputs, schemas).unwrap())
            .capability(muster::CapabilitySpec::new("ask", "question", "said"));
        let (tm, store) = time;
        let mut b = Muster::builder()
            .schema("question", question)
            .schema("said", said);
        for name in store.names() {
            if let Ok(s) = store.get(&name) {
                b = b.schema(&name, s.document.clone());
            }
        }
        let m = b
            .agent(tm.to_def(&Arc::new(store)).unwrap())
            .agent(asker)
            .start()
            .await
            .expect("runtime starts");
        let out = within(
            60,
            "the question",
            m.delegate(Task::new("ask", json!({"city": "Tokyo"}))),
        )
        .await
        .unwrap();
        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
        let records = m.journal().read_after(0);
        // The model's call was a task of `time.now`, in the same run, accepted.
        let sub = records
            .iter()
            .find_map(|r| match &r.event {
                Event::TaskSubmitted {
                    task,
                    capability,
                    correlation,
                    ..
                } if capability.as_ref() == "time.now" => Some((*task, *correlation)),
                _ => None,
            })
            .expect("the tool call was submitted as a task");
        assert_eq!(sub.1, out.correlation);
        assert!(
            records
                .iter()
                .any(|r| r.event.task() == Some(sub.0) && r.event.kind() == "result_accepted")
        );
        let seen = seen.lock().clone();
        // The model was offered the tool with the MCP tool's own input schema...
        let offered = &seen[0]["tools"][0]["function"];
        assert_eq!(offered["name"], "time_now", "{offered:#}");
        assert!(
            offered["parameters"]["properties"]["timezone"].is_object(),
            "{offered:#}"
        );
        // ...and got the server's answer back.
        let msgs = seen[1]["messages"].as_array().cloned().unwrap_or_default();
        let tool_msg = msgs
            .iter()
            .find(|m| m["role"] == "tool")
            .expect("a tool message");
        assert!(
            tool_msg["content"]
                .as_str()
                .unwrap_or_default()
                .contains("Asia/Tokyo"),
            "{tool_msg:#}"
        );
        m.shutdown().await;
    });
}
