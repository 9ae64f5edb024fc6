//! An LLM attempt's prompt view in a real browser: `muster serve` runs a workflow whose LLM
//! agent records its prompts (`record = "prompts"`) against a scripted fake
//! chat-completions server (axum on 127.0.0.1, in this test), whose first two answers break
//! the schema and hold markup (the first attempt fails its contract after its repair turn;
//! the second answers well); the dashboard opened at the run shows the run's model usage
//! as a table, the first attempt's prompt view shows both its calls in order, the repair
//! turn, the tokens, and the markup as text, and opening the second attempt's view replaces
//! the first's.
//!
//! It reuses the browser support of `dashboard_browser` (Debian's chromium, headless, the
//! node and the browser killed by pid); one page, every chromium call bounded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chromiumoxide::page::ScreenshotParams;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::dashboard_browser::{
    Chromium, Node, TOKEN, api, bounded, http, open, page_text, q, screenshot_path, skip_requested,
    wait_page,
};

/// The first answer: markup where a component goes, and a severity the schema refuses.
const MARKUP_ANSWER: &str =
    r#"{"component": "<img id=llm-injected src=x onerror=alert(1)>", "severity": "catastrophic"}"#;
const VALID_ANSWER: &str = r#"{"component": "parser", "severity": "high"}"#;

fn completion(content: &str) -> Value {
    json!({"id": "c1", "object": "chat.completion", "model": "fake",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}})
}

/// A fake chat-completions server answering `replies` in order (then 418); its base URL.
async fn fake_model(replies: Vec<Value>) -> String {
    let script = Arc::new(Mutex::new(VecDeque::from(replies)));
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let script = script.clone();
            async move {
                match script.lock().pop_front() {
                    Some(v) => (
                        axum::http::StatusCode::OK,
                        [("content-type", "application/json")],
                        v.to_string(),
                    ),
                    None => (
                        axum::http::StatusCode::IM_A_TEAPOT,
                        [("content-type", "text/plain")],
                        "no more replies".to_string(),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/v1")
}

/// A cast of one LLM agent recording its prompts (two instances: an attempt that breaks
/// its contract is reassigned to another), its schemas and a one-step workflow.
fn setup(base_url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    for sub in ["actors", "schemas", "workflows"] {
        std::fs::create_dir_all(p.join(sub)).expect("dir");
    }
    std::fs::write(
        p.join("schemas/report.schema.json"),
        r#"{"type": "object", "required": ["title"], "properties": {"title": {"type": "string"}}}"#,
    )
    .expect("schema");
    std::fs::write(
        p.join("schemas/triage.schema.json"),
        r#"{"type": "object", "required": ["component", "severity"], "additionalProperties": false,
            "properties": {"component": {"type": "string"},
                           "severity": {"enum": ["low", "high", "critical"]}}}"#,
    )
    .expect("schema");
    std::fs::write(
        p.join("actors/triager.toml"),
        format!(
            r#"name = "triager"
replicas = 2
[[capabilities]]
name = "triage"
input = "report"
output = "triage"
[backend]
kind = "llm"
base_url = "{base_url}"
model = "fake-model"
system = "You triage bug reports."
prompt = "Title: {{{{ input.title }}}}"
structured = "json_object"
repair = 1
record = "prompts"
redact = ["api_key"]
[backend.price]
prompt = 1.0
completion = 2.0
"#
        ),
    )
    .expect("manifest");
    std::fs::write(
        p.join("workflows/triage.toml"),
        r#"name = "triage-once"
input = "report"
start = "triage"

[steps.triage]
capability = "triage"
timeout = "30s"
attempts = 2
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"
"#,
    )
    .expect("workflow");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_an_llm_attempts_prompts_with_its_repair_turn_and_tokens() {
    if skip_requested() {
        return;
    }
    bounded(
        "dashboard_shows_an_llm_attempts_prompts_with_its_repair_turn_and_tokens",
        body(),
    )
    .await;
}

async fn body() {
    let model = fake_model(vec![
        completion(MARKUP_ANSWER),
        completion(MARKUP_ANSWER),
        completion(VALID_ANSWER),
    ])
    .await;
    let dir = setup(&model);
    let node = Node::start(dir.path());
    let client = http();

    let (code, started) = api(
        &client,
        reqwest::Method::POST,
        node.url("/v1/runs"),
        Some(json!({"workflow": "triage-once", "input": {"title": "crash on start"}})),
    )
    .await;
    assert_eq!(code, 202, "POST /v1/runs: {started}");
    let run = started["run"].as_str().expect("a run id").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let detail = loop {
        let (code, d) = api(
            &client,
            reqwest::Method::GET,
            node.url(&format!("/v1/runs/{run}")),
            None,
        )
        .await;
        assert_eq!(code, 200, "GET /v1/runs/{run}: {d}");
        if d["status"] != "running" {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not end within 60 s: {d}\n{}",
            node.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(detail["status"], "completed", "{detail}");
    let step = &detail["steps"][0];
    let task = step["task"].as_str().expect("the step's task").to_string();
    let lease = &step["leases"][0];
    assert_eq!(lease["model_calls"], 2, "{step}");
    assert_eq!(lease["usage"]["total_tokens"], 54, "{step}");
    // The second attempt, after the first's contract violation: one call.
    let second = &step["leases"][1];
    assert_eq!(second["model_calls"], 1, "{step}");
    assert_ne!(second["epoch"], lease["epoch"], "{step}");

    // The API: both calls of the attempt, in order, the repair turn second.
    let (code, calls) = api(
        &client,
        reqwest::Method::GET,
        node.url(&format!("/v1/tasks/{task}/llm?epoch={}", lease["epoch"])),
        None,
    )
    .await;
    assert_eq!(code, 200, "{calls}");
    let kinds: Vec<&str> = calls["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["first", "repair"], "{calls}");
    assert_eq!(calls["calls"][0]["answer"], MARKUP_ANSWER);
    let (code, refused) = api(
        &client,
        reqwest::Method::GET,
        node.url(&format!("/v1/tasks/{task}/llm?epoch=many")),
        None,
    )
    .await;
    assert_eq!(code, 400, "a bad epoch: {refused}");

    // The page, opened at the run.
    let chrome = Chromium::launch().await;
    let page = open(&chrome, node.url(&format!("/?token={TOKEN}#run={run}"))).await;
    wait_page(
        &page,
        "the run's LLM usage as a table",
        "document.querySelector('[data-testid=run-llm-usage] td[data-field=\"total tokens\"]')?.textContent === '81'",
    )
    .await;
    let calls_cell = page_text(
        &page,
        "document.querySelector('[data-testid=run-llm-usage] td[data-field=\"model calls\"]')?.textContent",
    )
    .await;
    assert_eq!(calls_cell, "3");
    let open = format!(
        "document.querySelector('[data-testid=llm-open][data-task={}]')",
        q(&task)
    );
    wait_page(&page, "the attempt's prompts button", &open).await;
    tokio::time::timeout(
        Duration::from_secs(30),
        page.evaluate(format!("(() => {{ {open}.click(); return true; }})()")),
    )
    .await
    .expect("the click returns within 30 s")
    .expect("the button clicks");
    wait_page(
        &page,
        "the prompt view loaded",
        "document.querySelector('[data-testid=llm-view][data-loaded=true]')",
    )
    .await;
    let turns = page_text(
        &page,
        "[...document.querySelectorAll('[data-testid=llm-view] [data-testid=llm-turn]')].map(e => e.textContent).join('|')",
    )
    .await;
    assert_eq!(turns, "first call|repair turn 1");
    let facts = page_text(
        &page,
        "document.querySelector('[data-testid=llm-call][data-kind=repair] [data-testid=llm-facts]').textContent",
    )
    .await;
    assert!(
        facts.contains("27 tokens (20 prompt + 7 completion)"),
        "the repair turn's facts: {facts}"
    );
    // The repair turn shows the model its answer and the validator's errors.
    let repair_messages = page_text(
        &page,
        "[...document.querySelectorAll('[data-testid=llm-call][data-kind=repair] [data-testid=llm-message]')].map(e => e.dataset.role).join(',')",
    )
    .await;
    assert_eq!(repair_messages, "system,user,assistant,user");
    // The markup in the model's answer is text on the page, never an element.
    let answer = page_text(
        &page,
        "document.querySelector('[data-testid=llm-call][data-kind=first] [data-testid=llm-answer] pre').textContent",
    )
    .await;
    assert_eq!(answer, MARKUP_ANSWER);
    let injected = page_text(&page, "document.getElementById('llm-injected') === null").await;
    assert_eq!(injected, "true", "the answer's markup became an element");

    // The second attempt's prompts: its view replaces the first's, never beside it.
    let open_second = format!(
        "document.querySelector('[data-testid=llm-open][data-task={}][data-epoch=\"{}\"]')",
        q(&task),
        second["epoch"]
    );
    wait_page(&page, "the second attempt's prompts button", &open_second).await;
    tokio::time::timeout(
        Duration::from_secs(30),
        page.evaluate(format!(
            "(() => {{ {open_second}.click(); return true; }})()"
        )),
    )
    .await
    .expect("the click returns within 30 s")
    .expect("the button clicks");
    wait_page(
        &page,
        "the second attempt's prompt view loaded",
        &format!(
            "document.querySelector('[data-testid=llm-view][data-epoch=\"{}\"][data-loaded=true]')",
            second["epoch"]
        ),
    )
    .await;
    let views = page_text(
        &page,
        "String(document.querySelectorAll('[data-testid=llm-view]').length)",
    )
    .await;
    assert_eq!(
        views, "1",
        "the first attempt's prompt view is still on the page"
    );
    let turns = page_text(
        &page,
        "[...document.querySelectorAll('[data-testid=llm-view] [data-testid=llm-turn]')].map(e => e.textContent).join('|')",
    )
    .await;
    assert_eq!(turns, "first call");

    let shot = screenshot_path("dashboard-llm.png");
    let _ = tokio::time::timeout(
        Duration::from_secs(60),
        page.evaluate("(() => { document.querySelector('[data-testid=llm-view]').scrollIntoView(); return true; })()"),
    )
    .await;
    tokio::time::timeout(
        Duration::from_secs(60),
        page.save_screenshot(ScreenshotParams::builder().full_page(true).build(), &shot),
    )
    .await
    .expect("the screenshot within 60 s")
    .expect("a screenshot");
    chrome.close().await;
}
