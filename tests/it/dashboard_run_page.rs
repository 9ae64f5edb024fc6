//! The dashboard's run page in a real browser (headless chromium against the real `muster
//! serve`, with the browser support of `dashboard_browser.rs`): what a person who opens a
//! run relies on.
//!
//! - A run of the shipped code-review example (real python3 agents) loops back twice: its
//!   workflow is drawn with the run's path on it, the bounded back-edge says
//!   `implement ×3 of 3`, the end it reached is marked, each step shows its duration and
//!   verdict, the test step's failures are listed, the timeline has a time axis and the
//!   runs list a duration.
//! - A gated run opened with `/#run=ID` below a long list of runs is scrolled into view;
//!   deciding its gate on the page shows who decided (the token's name) and the note in
//!   full, in the decisions and in the timeline.
//! - A one-step workflow's graph is drawn, its step entered and its end reached.
//!
//! Each test uses one page (a browser keeps at most six connections to a host and a page
//! holds event streams) and is bounded as a whole; every wait has a deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::dashboard_browser::{
    Chromium, ECHO_WORKFLOW, Node, TOKEN, WAIT, api, browser_test, http, open, page_text, q,
    run_status, screenshot, wait_page,
};

const GATED: &str = include_str!("../fixtures/workflows/gated.toml");

/// The repository's root (the code-review example's agents are named relative to it).
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// A node's directory: the repository's cast and schemas plus an echo agent, the
/// code-review workflow, the gated fixture and a one-step workflow; `examples` links to the
/// repository's, where the example's agent programs are.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    crate::support::node::write_cast(p, &["workflows/code-review"], 2);
    for sub in ["actors", "schemas"] {
        for entry in std::fs::read_dir(root().join(sub)).expect("the repository's cast") {
            let from = entry.expect("an entry").path();
            if from.is_file() {
                std::fs::copy(&from, p.join(sub).join(from.file_name().expect("a name")))
                    .expect("copy");
            }
        }
    }
    std::fs::copy(
        root().join("examples/code-review/workflow.toml"),
        p.join("workflows/code-review/workflow.toml"),
    )
    .expect("the example's workflow");
    std::fs::write(p.join("workflows/gated.toml"), GATED).expect("workflow");
    std::fs::write(p.join("workflows/echo.toml"), ECHO_WORKFLOW).expect("workflow");
    std::os::unix::fs::symlink(root().join("examples"), p.join("examples")).expect("symlink");
    dir
}

async fn submit(client: &reqwest::Client, node: &Node, workflow: &str, input: Value) -> String {
    let (code, body) = api(
        client,
        reqwest::Method::POST,
        node.url("/v1/runs"),
        Some(json!({"workflow": workflow, "input": input})),
    )
    .await;
    assert_eq!(code, 202, "POST /v1/runs ({workflow}): {body}");
    body["run"].as_str().expect("a run id").to_string()
}

/// Polls the API until run `run` has status `want`, within `within`.
async fn wait_status(
    client: &reqwest::Client,
    node: &Node,
    run: &str,
    want: &str,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let status = run_status(client, node, run).await;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} is {status:?}, not {want:?}, after {within:?}; node stderr:\n{}",
            node.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

browser_test!(
    run_page_draws_a_looped_run_with_its_visit_counts_and_durations,
    looped_run_body()
);

async fn looped_run_body() {
    let dir = setup();
    let node = Node::start(dir.path());
    let client = http();
    let input: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("examples/code-review/input.json"))
            .expect("the example's input"),
    )
    .expect("JSON");
    let run = submit(&client, &node, "code-change", input).await;
    wait_status(&client, &node, &run, "completed", Duration::from_secs(300)).await;

    let chrome = Chromium::launch().await;
    let page = open(&chrome, node.url(&format!("/?token={TOKEN}#run={run}"))).await;
    wait_page(
        &page,
        "the run's detail",
        &format!(
            "document.getElementById('run-id').textContent === {}",
            q(&run)
        ),
    )
    .await;

    // The workflow, with the run's path: implement entered three times, the bounded
    // back-edge taken twice and saying how many of its visits were used, the end reached.
    let node_sel = |step: &str| {
        format!(
            "document.querySelector('[data-testid=graph-node][data-step={}]')",
            q(step)
        )
    };
    wait_page(
        &page,
        "implement entered three times on the graph",
        &format!("{}?.dataset.visits === '3'", node_sel("implement")),
    )
    .await;
    wait_page(
        &page,
        "the back-edge's visit count",
        "[...document.querySelectorAll('[data-testid=graph-edge-label][data-from=checks][data-to=implement]')].some(e => e.textContent.includes('implement ×3 of 3'))",
    )
    .await;
    let taken = page_text(
        &page,
        "document.querySelector('[data-testid=graph-edge][data-from=checks][data-to=implement]')?.dataset.taken",
    )
    .await;
    assert_eq!(
        taken, "2",
        "the back-edge checks → implement was taken twice"
    );
    for branch in ["test", "review", "security"] {
        let visits = page_text(&page, &format!("{}?.dataset.visits", node_sel(branch))).await;
        assert_eq!(visits, "3", "branch {branch} of checks entered three times");
    }
    let here = page_text(&page, &format!("{}?.dataset.here", node_sel("done"))).await;
    assert_eq!(here, "completed", "the end the run reached is marked");
    let unvisited = page_text(&page, &format!("{}?.dataset.visits", node_sel("human"))).await;
    assert_eq!(unvisited, "0", "the gate the run never reached");

    // Per step: a duration, an owner, a verdict; the first test round's failure listed.
    wait_page(
        &page,
        "every step with a duration",
        "(rows => rows.length >= 12 && rows.every(r => /^[0-9.]+ (ms|s)$|min/.test(r.querySelector('[data-testid=step-duration]').textContent)))([...document.querySelectorAll('[data-testid=step-row]')])",
    )
    .await;
    let verdict = page_text(
        &page,
        "document.querySelector('[data-testid=step-row][data-step=test] [data-testid=step-verdict]').textContent",
    )
    .await;
    assert!(
        verdict.contains("failed 1"),
        "the first test round's verdict: {verdict:?}"
    );
    let failures = page_text(
        &page,
        "[...document.querySelectorAll('[data-testid=step-row][data-step=test] [data-testid=step-output-list][data-field=failures]')].map(l => l.children.length).join(',')",
    )
    .await;
    assert_eq!(
        failures, "1,0,0",
        "the first test round lists its one failure, the later rounds none"
    );
    let failure = page_text(
        &page,
        "document.querySelector('[data-testid=step-row][data-step=test] [data-testid=step-output-list] li').textContent",
    )
    .await;
    assert!(
        failure.contains("test_low_stock"),
        "the failure names its test: {failure:?}"
    );
    // The timeline's time axis and the run's duration in the list.
    let times = page_text(
        &page,
        "new Set([...document.querySelectorAll('[data-testid=timeline-time]')].map(t => t.textContent)).size",
    )
    .await;
    assert!(
        times.parse::<usize>().unwrap_or(0) >= 3,
        "the timeline's time axis has {times} distinct times"
    );
    let duration = page_text(
        &page,
        &format!(
            "document.querySelector('[data-testid=run-row][data-run-id={}] [data-testid=run-duration]')?.textContent",
            q(&run)
        ),
    )
    .await;
    // A duration in the page's words, whatever the machine's speed: `525 ms`, `1.2 s`,
    // `2 min 3 s`.
    let digits = duration.chars().next().is_some_and(|c| c.is_ascii_digit());
    assert!(
        digits
            && (duration.ends_with(" ms") || duration.ends_with(" s") || duration.contains("min")),
        "the run's duration in the list: {duration:?}"
    );

    screenshot(&page, "dashboard-graph.png", false).await;
    screenshot(&page, "dashboard-run-page.png", true).await;
    chrome.close().await;
}

browser_test!(
    run_page_opens_by_address_and_shows_who_decided_a_gate_with_the_full_note,
    gated_run_body()
);

async fn gated_run_body() {
    let dir = setup();
    let node = Node::start(dir.path());
    let client = http();
    // Enough runs above it that the run's detail starts below the fold.
    let mut echoes = Vec::new();
    for i in 0..30 {
        echoes.push(submit(&client, &node, "echo-once", json!({"i": i})).await);
    }
    let gated = submit(&client, &node, "gated", json!({"x": 1})).await;
    wait_status(&client, &node, &gated, "waiting", WAIT).await;
    let one_step = echoes.last().expect("an echo run").clone();
    wait_status(&client, &node, &one_step, "completed", WAIT).await;

    let chrome = Chromium::launch().await;
    let page = open(&chrome, node.url(&format!("/?token={TOKEN}#run={gated}"))).await;
    wait_page(
        &page,
        "the gated run's detail",
        &format!(
            "document.getElementById('run-id').textContent === {}",
            q(&gated)
        ),
    )
    .await;
    // `#run=ID` brings the detail into view, although it sits below the fold.
    wait_page(
        &page,
        "the run's detail scrolled into view",
        "(r => r.top >= -2 && r.top < innerHeight / 2)(document.getElementById('run-panel').getBoundingClientRect())",
    )
    .await;
    let below = page_text(
        &page,
        "document.getElementById('run-panel').getBoundingClientRect().top + scrollY > innerHeight",
    )
    .await;
    assert_eq!(
        below, "true",
        "the detail starts below the first screenful (else the scroll proves nothing)"
    );
    wait_page(
        &page,
        "the gate marked as where the run waits",
        "document.querySelector('[data-testid=graph-node][data-step=ask]')?.dataset.here === 'waiting'",
    )
    .await;
    screenshot(&page, "dashboard-gate-waiting.png", false).await;

    // Decide on the page, with a note longer than any cut.
    let note = "Checked the prepared output against the release checklist: the numbers match, \
                the rollback plan is written down, and the on-call engineer knows. Ship it \
                after the 14:00 freeze lifts; if anything looks off, reject the next run \
                instead of patching this one. <b>not markup</b>";
    let row = "[data-testid=run-gate-row][data-gate=ask]";
    wait_page(
        &page,
        "the gate's Approve button in the detail",
        &format!(
            "document.querySelector({})",
            q(&format!("{row} [data-testid=gate-approve]"))
        ),
    )
    .await;
    let set = page_text(
        &page,
        &format!(
            "(n => (n.value = {}, n.value.length))(document.querySelector({}))",
            q(note),
            q(&format!("{row} [data-testid=gate-note]"))
        ),
    )
    .await;
    assert_eq!(set, note.chars().count().to_string(), "the note typed in");
    page.find_element(format!("{row} [data-testid=gate-approve]"))
        .await
        .expect("the Approve button")
        .click()
        .await
        .expect("a click on Approve");
    wait_status(&client, &node, &gated, "completed", WAIT).await;

    // Who decided and the note in full, in the run's decisions and its timeline.
    let decision = "document.querySelector('[data-testid=gate-decision][data-gate=ask]')";
    wait_page(
        &page,
        "who decided",
        &format!(
            "{decision}?.querySelector('[data-testid=gate-decided-by]').textContent === 'by dash-admin'"
        ),
    )
    .await;
    let shown = page_text(
        &page,
        &format!("{decision}.querySelector('[data-testid=gate-decided-note]').textContent"),
    )
    .await;
    assert_eq!(shown, note, "the note in full, as text");
    wait_page(
        &page,
        "the decision with its full note in the timeline",
        &format!(
            "[...document.querySelectorAll('[data-testid=timeline-item]')].some(g => g.textContent.includes({}) && g.textContent.includes('approved ask by dash-admin'))",
            q(note)
        ),
    )
    .await;
    // Every line of a timeline note ends inside the drawing (none runs off its right edge).
    let overflow = page_text(
        &page,
        "(() => { const s = document.querySelector('[data-testid=timeline-svg]'); \
         const w = s.width.baseVal.value; \
         return [...s.querySelectorAll('.note text')].filter(t => { const b = t.getBBox(); \
         return b.x + b.width > w + 1; }).map(t => t.textContent).join(' | '); })()",
    )
    .await;
    assert_eq!(
        overflow, "",
        "timeline note lines run past the drawing's edge"
    );
    // The note's `<b>` stayed text: no element on the page holds its words as markup (the
    // page has `<b>` elements of its own, the metrics' captions).
    let markup = page_text(
        &page,
        "[...document.querySelectorAll('#main b')].filter(b => b.textContent === 'not markup').length",
    )
    .await;
    assert_eq!(markup, "0", "a note became markup");
    wait_page(
        &page,
        "the approve edge taken and the run at its end",
        "document.querySelector('[data-testid=graph-edge][data-from=ask][data-kind=approve]')?.dataset.taken === '1' && document.querySelector('[data-testid=graph-node][data-step=done]')?.dataset.here === 'completed'",
    )
    .await;
    screenshot(&page, "dashboard-gate-decided.png", false).await;

    // A one-step workflow's graph: its step entered once, its end reached.
    page.find_element(format!(
        "[data-testid=run-row][data-run-id={}]",
        q(&one_step)
    ))
    .await
    .expect("the echo run's row")
    .click()
    .await
    .expect("a click on the run");
    wait_page(
        &page,
        "the one-step run on its graph",
        "document.querySelector('[data-testid=run-graph]')?.dataset.workflow === 'echo-once' && document.querySelector('[data-testid=graph-node][data-step=say]')?.dataset.visits === '1' && document.querySelector('[data-testid=graph-node][data-step=done]')?.dataset.here === 'completed'",
    )
    .await;
    screenshot(&page, "dashboard-graph-one-step.png", false).await;
    chrome.close().await;
}
