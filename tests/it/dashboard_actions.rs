//! Acting from the dashboard in a real browser (headless chromium, as
//! `dashboard_browser.rs` drives it, with its node and browser helpers), against the real
//! `muster serve`: a run started from the form generated from its workflow's input schema
//! (the server's 422 shown next to the field it names, then the run watched to completion),
//! a run waiting at a gate cancelled after a confirmation, a failed run retried from its
//! failed step, the runs filtered by an input field (a bad filter's 400 shown), and the
//! metrics view's charts. One page for the whole story (a browser keeps at most six
//! connections to a host, and a dashboard page holds event streams); every browser call
//! and every wait is bounded.

use std::time::{Duration, Instant};

use chromiumoxide::Page;
use serde_json::{Value, json};

use crate::dashboard_browser::{
    Chromium, Node, TOKEN, WAIT, api, browser_test, http, open, page_text, q, run_status,
    screenshot, wait_page,
};
use crate::serve_run_actions::{FLAKY_AGENT, RETRY_WORKFLOW};

/// A schema the form generator draws field by field, with one field it cannot (`extra`,
/// a `oneOf`: a JSON text area).
const TICKET_SCHEMA: &str = r#"{"$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object", "required": ["title"],
  "properties": {
    "title": {"type": "string", "description": "what to do"},
    "priority": {"type": "integer"},
    "urgent": {"type": "boolean"},
    "kind": {"enum": ["bug", "feature"]},
    "tags": {"type": "array", "items": {"type": "string"}},
    "extra": {"oneOf": [{"type": "string"}, {"type": "object"}]}
  }}"#;

const TICKET_WORKFLOW: &str = r#"
name = "ticket"
description = "Echo a ticket"
input = "ticket"
start = "say"

[steps.say]
capability = "echo"
input = "run.input"
timeout = "10s"
attempts = 2
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"
"#;

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    crate::support::node::write_cast(p, &["workflows"], 2);
    std::fs::write(p.join("schemas/ticket.schema.json"), TICKET_SCHEMA).expect("schema");
    std::fs::write(p.join("actors/flaky.toml"), FLAKY_AGENT).expect("manifest");
    std::fs::write(p.join("workflows/ticket.toml"), TICKET_WORKFLOW).expect("workflow");
    std::fs::write(p.join("workflows/retry.toml"), RETRY_WORKFLOW).expect("workflow");
    std::fs::write(
        p.join("workflows/gated.toml"),
        include_str!("../fixtures/workflows/gated.toml"),
    )
    .expect("workflow");
    dir
}

/// Runs `body` (JavaScript statements) in the page, bounded.
async fn js(page: &Page, body: &str) {
    let expr = format!("(() => {{ {body}; return true; }})()");
    let r = tokio::time::timeout(Duration::from_secs(30), page.evaluate(expr)).await;
    assert!(
        matches!(r, Ok(Ok(_))),
        "the page did not run `{body}`: {r:?}"
    );
}

/// Clicks the element of `data-testid` `id`.
async fn click(page: &Page, id: &str) {
    js(
        page,
        &format!("document.querySelector('[data-testid={id}]').click()"),
    )
    .await;
}

/// Polls the run through the API until it is `status` (failing after [`WAIT`]).
async fn wait_status(client: &reqwest::Client, node: &Node, run: &str, status: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = run_status(client, node, run).await;
        if now == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} is {now:?}, not {status:?}, after {WAIT:?}; node stderr:\n{}",
            node.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_run(client: &reqwest::Client, node: &Node, workflow: &str, input: Value) -> String {
    let (code, doc) = api(
        client,
        reqwest::Method::POST,
        node.url("/v1/runs"),
        Some(json!({"workflow": workflow, "input": input})),
    )
    .await;
    assert_eq!(code, 202, "{doc}");
    doc["run"].as_str().expect("a run id").to_string()
}

async fn get_run(client: &reqwest::Client, node: &Node, run: &str) -> Value {
    let (code, doc) = api(
        client,
        reqwest::Method::GET,
        node.url(&format!("/v1/runs/{run}")),
        None,
    )
    .await;
    assert_eq!(code, 200, "{doc}");
    doc
}

/// The detail panel shows run `run` with status `status`.
fn detail_is(run: &str, status: &str) -> String {
    format!(
        "document.getElementById('run-id').textContent === {} && \
         document.getElementById('run-status').textContent === {}",
        q(run),
        q(status)
    )
}

browser_test!(
    dashboard_starts_cancels_retries_filters_and_charts_runs,
    body()
);

async fn body() {
    let dir = setup();
    let broken = dir.path().join("broken");
    std::fs::write(&broken, "").expect("break the flaky agent");
    let node = Node::start(dir.path());
    let client = http();

    // A run that failed at `fragile` (to retry), and one waiting at a gate (to cancel).
    let failed = start_run(&client, &node, "retry-me", json!({"n": 5})).await;
    wait_status(&client, &node, &failed, "failed").await;
    std::fs::remove_file(&broken).expect("mend the flaky agent");
    let gated = start_run(&client, &node, "gated", json!({"x": 1})).await;
    wait_status(&client, &node, &gated, "waiting").await;

    let chrome = Chromium::launch().await;
    let page = open(&chrome, node.url(&format!("/?token={TOKEN}"))).await;
    wait_page(
        &page,
        "the start form's workflows",
        "document.body.getAttribute('data-ready') === 'true' && \
         !document.getElementById('start-panel').hidden && \
         document.querySelector('[data-testid=start-workflow] option[value=ticket]')",
    )
    .await;

    // --- Start a run from the form generated from the input schema.
    js(
        &page,
        "const s = document.querySelector('[data-testid=start-workflow]'); \
         s.value = 'ticket'; s.dispatchEvent(new Event('change'))",
    )
    .await;
    wait_page(
        &page,
        "the ticket form, a control per field and JSON for the one it cannot draw",
        "document.querySelector('[data-testid=input-title]')?.type === 'text' && \
         document.querySelector('[data-testid=input-priority]')?.type === 'number' && \
         document.querySelector('[data-testid=input-urgent]')?.type === 'checkbox' && \
         document.querySelector('select[data-testid=input-kind]') && \
         document.querySelector('textarea[data-testid=input-tags]') && \
         document.querySelector('textarea[data-testid=input-extra]') && \
         document.querySelector('.field[data-field=title] .req')",
    )
    .await;
    // The required title left out: the node's 422 shows next to the title.
    click(&page, "start-submit").await;
    wait_page(
        &page,
        "the node's 422 next to the title field",
        "[...document.querySelectorAll('.field-error')].some(e => \
           e.getAttribute('data-field') === 'title' && !e.hidden && e.textContent.includes('required'))",
    )
    .await;
    screenshot(&page, "dashboard-start-form.png", true).await;
    js(
        &page,
        "const v = (id, x) => { document.querySelector('[data-testid=' + id + ']').value = x; }; \
         v('input-title', '<b>fix</b> the cart'); v('input-priority', '2'); v('input-kind', '0'); \
         v('input-tags', 'ui\\ncart'); v('input-extra', '{\"seen\": 1}'); \
         document.querySelector('[data-testid=input-urgent]').checked = true",
    )
    .await;
    click(&page, "start-submit").await;
    wait_page(
        &page,
        "the started run selected",
        "document.querySelector('[data-testid=start-result]')?.getAttribute('data-run')",
    )
    .await;
    let started = page_text(
        &page,
        "document.querySelector('[data-testid=start-result]').getAttribute('data-run')",
    )
    .await;
    wait_page(
        &page,
        "the started run completed in its detail",
        &detail_is(&started, "completed"),
    )
    .await;
    let doc = get_run(&client, &node, &started).await;
    assert_eq!(
        doc["input"],
        json!({"title": "<b>fix</b> the cart", "priority": 2, "urgent": true, "kind": "bug",
               "tags": ["ui", "cart"], "extra": {"seen": 1}}),
        "the form's input: {doc}"
    );
    assert_eq!(doc["status"], "completed", "{doc}");

    // --- Cancel the run waiting at its gate, after a confirmation.
    js(&page, &format!("window.muster.select({})", q(&gated))).await;
    wait_page(
        &page,
        "the Cancel button of the waiting run",
        &format!(
            "{} && document.querySelector('[data-testid=run-cancel]')",
            detail_is(&gated, "waiting")
        ),
    )
    .await;
    click(&page, "run-cancel").await;
    wait_page(
        &page,
        "the cancel confirmation",
        "document.querySelector('[data-testid=run-cancel-ask]')",
    )
    .await;
    js(
        &page,
        "document.querySelector('[data-testid=run-cancel-reason]').value = 'not today'",
    )
    .await;
    click(&page, "run-cancel-confirm").await;
    wait_page(
        &page,
        "the run cancelled in its detail",
        &detail_is(&gated, "cancelled"),
    )
    .await;
    let doc = get_run(&client, &node, &gated).await;
    assert_eq!(doc["status"], "cancelled", "{doc}");
    assert!(
        doc["reason"].as_str().unwrap_or("").contains("not today"),
        "the reason typed is journaled: {doc}"
    );

    // --- Retry the failed run from its failed step.
    js(&page, &format!("window.muster.select({})", q(&failed))).await;
    wait_page(
        &page,
        "the Retry button of the failed run",
        &format!(
            "{} && document.querySelector('[data-testid=run-retry]')",
            detail_is(&failed, "failed")
        ),
    )
    .await;
    click(&page, "run-retry").await;
    wait_page(
        &page,
        "the retry confirmation",
        "document.querySelector('[data-testid=run-retry-confirm]')",
    )
    .await;
    click(&page, "run-retry-confirm").await;
    wait_page(
        &page,
        "the retry, completed, naming the run it retries",
        &format!(
            "document.getElementById('run-id').textContent !== {} && \
             document.getElementById('run-status').textContent === 'completed' && \
             document.querySelector('[data-testid=run-retry-of] a')?.getAttribute('data-run') === {}",
            q(&failed),
            q(&failed)
        ),
    )
    .await;
    let retry = page_text(&page, "document.getElementById('run-id').textContent").await;
    let doc = get_run(&client, &node, &retry).await;
    assert_eq!(doc["retry_of"]["run"], json!(failed), "{doc}");
    assert_eq!(doc["retry_of"]["step"], "fragile", "{doc}");
    assert_eq!(doc["status"], "completed", "{doc}");

    // --- Filter the runs by an input field; a bad filter shows the node's 400.
    js(
        &page,
        "document.querySelector('[data-testid=runs-input]').value = 'kind=bug'",
    )
    .await;
    click(&page, "runs-filter-apply").await;
    wait_page(
        &page,
        "only the form's run listed",
        &format!(
            "(() => {{ const rows = document.querySelectorAll('#runs-body tr[data-run-id]'); \
             return rows.length === 1 && rows[0].getAttribute('data-run-id') === {}; }})()",
            q(&started)
        ),
    )
    .await;
    js(
        &page,
        "document.querySelector('[data-testid=runs-input]').value = 'a..b=1'",
    )
    .await;
    click(&page, "runs-filter-apply").await;
    wait_page(
        &page,
        "the node's 400 naming the bad field",
        "(() => { const e = document.querySelector('[data-testid=runs-filter-error]'); \
         return !e.hidden && e.getAttribute('data-field') === 'input.a..b'; })()",
    )
    .await;
    click(&page, "runs-filter-clear").await;
    wait_page(
        &page,
        "every run listed again",
        "document.querySelectorAll('#runs-body tr[data-run-id]').length >= 4",
    )
    .await;

    // --- The metrics view: its charts, from the node's own history.
    wait_page(
        &page,
        "the metrics charts",
        "Number(document.getElementById('metrics-panel').getAttribute('data-samples')) >= 1 && \
         document.querySelector('[data-testid=chart-tasks] polyline') && \
         document.querySelector('[data-testid=chart-latency] polyline') && \
         document.querySelector('[data-testid=chart-failures]').textContent.includes('flaky')",
    )
    .await;
    js(
        &page,
        "document.getElementById('metrics-panel').scrollIntoView()",
    )
    .await;
    screenshot(&page, "dashboard-metrics.png", true).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), page.close()).await;
    chrome.close().await;
    drop(node);
}
