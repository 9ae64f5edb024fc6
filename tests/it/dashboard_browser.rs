//! The dashboard in a real browser: Debian's `chromium`, headless, driven over the DevTools
//! protocol (chromiumoxide, which starts the system browser: nothing is downloaded), against
//! the real `muster serve` binary on a free loopback port.
//!
//! What a person at the dashboard relies on, checked as they would see it: the page opened
//! with `/?token=...` shows the agents and the supervision tree, drops the token from the
//! address bar, shows a run submitted through the API complete, draws its handoffs, shows
//! server strings as text (never markup), a viewer's token is shown the waiting gate without
//! Approve or Reject, and a gate's Approve button decides the gate so that the run ends
//! completed (checked through the API).
//!
//! Chromium is installed by the test when absent (`scripts/chromium install`). The test
//! refuses to pass without it; `MUSTER_SKIP_BROWSER=1` skips it, loudly. Every wait has a
//! wall-clock deadline (a browser and a server are real processes, not on a paused clock),
//! and both processes are killed by pid when the test ends, passed or failed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chromiumoxide::Page;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::page::ScreenshotParams;
use futures::StreamExt;
use serde_json::{Value, json};

pub(crate) const TOKEN: &str = "dashboard-test-token-0123456789abcdef";
/// A second token of the node's token file, of role `viewer`.
pub(crate) const VIEWER: &str = "dashboard-viewer-token-0123456789ab";
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// A one-step workflow, `echo-once`: step `say` on capability `echo`, input `obj`.
pub(crate) const ECHO_WORKFLOW: &str = r#"
name = "echo-once"
input = "obj"
start = "say"

[steps.say]
capability = "echo"
timeout = "10s"
attempts = 2
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"
"#;

const CRASH_WORKFLOW: &str = r#"
name = "crash-once"
input = "obj"
start = "fall"

[steps.fall]
capability = "crash"
timeout = "10s"
attempts = 1
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"
"#;

const GATED_WORKFLOW: &str = include_str!("../fixtures/workflows/gated.toml");

/// A cast of `replicas` echo instances and one crashing instance, one schema and three
/// workflows, in a temp dir.
fn setup(replicas: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    crate::support::node::write_cast(p, &["workflows"], replicas);
    // An instance that panics on every task: its supervisor restarts it (a restart the
    // tree shows as it happens).
    std::fs::write(
        p.join("actors/crashy.toml"),
        r#"name = "crashy"
[[capabilities]]
name = "crash"
input = "obj"
output = "obj"
[backend]
kind = "sim"
crash = 1.0
[backend.latency]
kind = "fixed"
value = "10ms"
"#,
    )
    .expect("manifest");
    std::fs::write(p.join("workflows/crash.toml"), CRASH_WORKFLOW).expect("workflow");
    std::fs::write(p.join("workflows/echo.toml"), ECHO_WORKFLOW).expect("workflow");
    std::fs::write(p.join("workflows/gated.toml"), GATED_WORKFLOW).expect("workflow");
    dir
}

/// `muster serve`, killed by pid when dropped.
pub(crate) struct Node {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Node {
    pub(crate) fn start(dir: &Path) -> Node {
        let log = dir.join("serve.stderr");
        std::fs::write(
            dir.join("tokens.txt"),
            format!("{TOKEN} admin dash-admin\n{VIEWER} viewer dash-viewer\n"),
        )
        .expect("token file");
        let mut child = crate::support::common::muster()
            .current_dir(dir)
            .args([
                "serve",
                "--actors",
                "actors",
                "--schemas",
                "schemas",
                "--workflows",
                "workflows",
                "--journal",
                "journal.db",
                "--listen",
                "127.0.0.1:0",
                "--token-file",
                "tokens.txt",
                "--json",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("muster serve starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Reads the start line; the rest of stdout is drained so the node never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut node = Node {
            child,
            addr: String::new(),
            log,
        };
        let deadline = Instant::now() + WAIT;
        while node.addr.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && let Some(a) = v["listen"].as_str()
                    {
                        node.addr = a.trim_start_matches("http://").to_string();
                    }
                }
                Err(_) => panic!(
                    "muster serve printed no {{\"listen\": ...}} line within {WAIT:?}; its stderr:\n{}",
                    node.stderr()
                ),
            }
        }
        node
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The headless browser, killed by pid when dropped (also when a check panics).
pub(crate) struct Chromium {
    pub(crate) browser: Browser,
    pid: Option<u32>,
    handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    pub(crate) async fn launch() -> Chromium {
        let exe = chromium_path();
        let profile = tempfile::tempdir().expect("profile dir");
        let config = BrowserConfig::builder()
            .chrome_executable(exe)
            .new_headless_mode()
            .no_sandbox()
            .user_data_dir(profile.path())
            .window_size(1400, 1000)
            .viewport(None)
            .launch_timeout(Duration::from_secs(60))
            .request_timeout(Duration::from_secs(30))
            .args(["--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
            .build()
            .expect("a browser configuration");
        let (mut browser, mut handler) = Browser::launch(config).await.expect("chromium starts");
        let pid = browser.get_mut_child().and_then(|c| c.as_mut_inner().id());
        let handler = tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                if event.is_err() {
                    break;
                }
            }
        });
        Chromium {
            browser,
            pid,
            handler,
            _profile: profile,
        }
    }
}

impl Chromium {
    /// Closes the browser the polite way (bounded); the drop kills what is left.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            let _ = self.browser.close().await;
            let _ = self.browser.wait().await;
        })
        .await;
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SAFETY: kill(2) on the pid of the child this test spawned.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        self.handler.abort();
    }
}

/// The system chromium: `MUSTER_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
fn chromium_path() -> PathBuf {
    if let Some(p) = std::env::var_os("MUSTER_CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "MUSTER_CHROMIUM={} is not a file", p.display());
        return p;
    }
    // Installed when absent (once per test run), as the model server is for
    // tests/it/llm_real_model.rs: the README's test command needs nothing else installed.
    static INSTALLED: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = installed.as_ref() {
        return p.clone();
    }
    let out = Command::new("scripts/chromium")
        .arg("install")
        .output()
        .expect("run scripts/chromium");
    assert!(
        out.status.success(),
        "chromium is not installed and `scripts/chromium install` could not install it: {}\n\
         Install Debian's chromium, or set MUSTER_SKIP_BROWSER=1 to skip this test explicitly.",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("scripts/chromium")
        .arg("path")
        .output()
        .expect("run scripts/chromium");
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(p.is_file(), "scripts/chromium path printed {}", p.display());
    *installed = Some(p.clone());
    p
}

pub(crate) fn skip_requested() -> bool {
    if std::env::var("MUSTER_SKIP_BROWSER").as_deref() == Ok("1") {
        // Straight to the process's stderr: the test harness captures eprintln!.
        use std::io::Write;
        let _ = std::io::stderr().write_all(
            b"\n!!! SKIPPED: tests/dashboard_browser.rs did not run (MUSTER_SKIP_BROWSER=1). \
              The dashboard is NOT tested in a browser by this run. !!!\n\n",
        );
        return true;
    }
    false
}

pub(crate) fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

pub(crate) async fn api(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client
        .request(method, &url)
        .header("Authorization", format!("Bearer {TOKEN}"));
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let res = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Opens the dashboard at `url` in a new tab of `chrome` and waits (bounded) until it has
/// loaded. The tab is opened blank and sent to `url` from the page: chromiumoxide's own
/// wait for a new tab's navigation now and then never ended when the page rewrote its
/// address while loading (the token moved out of it, `#run=ID` set), and the test hung
/// until its bound.
pub(crate) async fn open(chrome: &Chromium, url: String) -> Page {
    let page = tokio::time::timeout(WAIT, chrome.browser.new_page("about:blank"))
        .await
        .expect("a blank tab within 60 s")
        .expect("a blank tab");
    navigate(&page, &format!("location.assign({})", q(&url))).await;
    page
}

/// Reloads `page` and waits (bounded) until the new document has loaded.
pub(crate) async fn reload(page: &Page) {
    navigate(
        page,
        "window.__muster_old_document = true; location.reload()",
    )
    .await;
}

/// Runs `js`, which navigates, and waits until a new dashboard document has loaded.
async fn navigate(page: &Page, js: &str) {
    page.evaluate("window.__muster_old_document = true")
        .await
        .expect("the tab answers");
    // The navigation may tear the script's context down before it answers.
    let _ = tokio::time::timeout(WAIT, page.evaluate(js.to_string())).await;
    wait_page(
        page,
        "the dashboard loaded",
        "!window.__muster_old_document && document.readyState === 'complete' && !!document.getElementById('run-panel')",
    )
    .await;
}

/// Polls `expr` (JavaScript giving a boolean) in the page until it holds; on the deadline,
/// fails naming `what`, with the page's error line and a screenshot.
pub(crate) async fn wait_page(page: &Page, what: &str, expr: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let ok = page
            .evaluate(format!("Boolean({expr})"))
            .await
            .ok()
            .and_then(|r| r.into_value::<bool>().ok())
            .unwrap_or(false);
        if ok {
            return;
        }
        if Instant::now() > deadline {
            let error = page_text(page, "document.getElementById('error').textContent").await;
            let conn = page_text(page, "document.getElementById('conn').textContent").await;
            let _ = page
                .save_screenshot(
                    ScreenshotParams::builder().full_page(true).build(),
                    screenshot_path("dashboard-failure.png"),
                )
                .await;
            panic!(
                "the page did not show {what} within {WAIT:?} (connection: {conn:?}, error line: {error:?}; screenshot target/dashboard-failure.png)"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn page_text(page: &Page, expr: &str) -> String {
    page.evaluate(format!("String({expr})"))
        .await
        .ok()
        .and_then(|r| r.into_value::<String>().ok())
        .unwrap_or_default()
}

pub(crate) fn screenshot_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("target"));
    let _ = std::fs::create_dir_all(&target);
    target.join(name)
}

/// A CSS selector's attribute value, quoted for `querySelector`.
pub(crate) fn q(v: &str) -> String {
    serde_json::to_string(v).expect("a string")
}

pub(crate) async fn run_status(client: &reqwest::Client, node: &Node, run: &str) -> String {
    let (code, body) = api(
        client,
        reqwest::Method::GET,
        node.url(&format!("/v1/runs/{run}")),
        None,
    )
    .await;
    assert_eq!(code, 200, "GET /v1/runs/{run}: {body}");
    body["status"].as_str().unwrap_or_default().to_string()
}

/// The longest a browser test may take. Every CDP request is bounded by the browser's
/// `request_timeout`, but a page that never finishes loading (a browser holds at most six
/// connections to one host, and each dashboard page keeps event streams open) can park a
/// test's future with no request pending: this bound makes that a failure, not a hung CI.
const TEST_BOUND: Duration = Duration::from_secs(600);

/// Runs a browser test's body within [`TEST_BOUND`]; on time-out the body is dropped (its
/// node and its browser are killed by their `Drop`) and the test fails naming it.
pub(crate) async fn bounded(name: &str, body: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(TEST_BOUND, body).await.is_err() {
        panic!("{name} did not finish within {TEST_BOUND:?}: a page or a browser call hung");
    }
}

/// A browser test `$name` running `$body`: skipped, loudly, when `MUSTER_SKIP_BROWSER=1`
/// asks for it ([`skip_requested`]), and bounded as a whole ([`bounded`]). Attributes and
/// doc comments before the name go on the test.
macro_rules! browser_test {
    ($(#[$meta:meta])* $name:ident, $body:expr) => {
        $(#[$meta])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            if $crate::dashboard_browser::skip_requested() {
                return;
            }
            $crate::dashboard_browser::bounded(stringify!($name), $body).await;
        }
    };
}
pub(crate) use browser_test;

/// Saves the page (the whole of it with `full`, else the viewport) as `target/NAME`, for
/// the closing notes, and says where; bounded like any browser call.
pub(crate) async fn screenshot(page: &Page, name: &str, full: bool) {
    let path = screenshot_path(name);
    let saved = tokio::time::timeout(
        Duration::from_secs(30),
        page.save_screenshot(ScreenshotParams::builder().full_page(full).build(), &path),
    )
    .await;
    assert!(
        matches!(saved, Ok(Ok(_))),
        "no screenshot {}: {saved:?}",
        path.display()
    );
    eprintln!("screenshot: {}", path.display());
}

browser_test!(
    dashboard_shows_the_node_live_and_decides_a_gate_by_its_button,
    dashboard_shows_the_node_live_and_decides_a_gate_by_its_button_body()
);

async fn dashboard_shows_the_node_live_and_decides_a_gate_by_its_button_body() {
    let dir = setup(2);
    let node = Node::start(dir.path());
    let client = http();

    // The page itself holds no data: it is served without a token, same-origin only.
    let res = client.get(node.url("/")).send().await.expect("GET /");
    assert_eq!(res.status().as_u16(), 200, "GET / without a token");
    let csp = res
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "the page's CSP: {csp:?}"
    );

    let chrome = Chromium::launch().await;

    // A wrong token: the node refuses it and the page asks for one instead of showing data.
    let refused = open(&chrome, node.url("/?token=not-the-token-0123456789")).await;
    wait_page(
        &refused,
        "the token form after a refused token",
        "!document.getElementById('login').hidden && document.getElementById('conn').textContent === 'token refused'",
    )
    .await;
    let shown = page_text(
        &refused,
        "document.querySelectorAll('[data-testid=agent-row]').length",
    )
    .await;
    assert_eq!(shown, "0", "agents shown without a valid token");

    let page = open(&chrome, node.url(&format!("/?token={TOKEN}"))).await;

    // The token moves from the address bar into the session, and the stream is live.
    wait_page(
        &page,
        "the token taken out of the address bar",
        "!location.search.includes('token')",
    )
    .await;
    wait_page(
        &page,
        "the event stream live",
        "document.getElementById('conn').textContent === 'live'",
    )
    .await;

    // The agents, with their state, and the supervision tree down to the instances.
    for agent in ["echo#0", "echo#1"] {
        wait_page(
            &page,
            &format!("agent {agent}"),
            &format!("document.querySelector('[data-testid=agent-row][data-agent-id={}] [data-testid=agent-state]')?.textContent.length > 0", q(agent)),
        )
        .await;
        wait_page(
            &page,
            &format!("{agent} in the supervision tree"),
            &format!(
                "document.querySelector('[data-testid=tree-node][data-node-id={}]')",
                q(agent)
            ),
        )
        .await;
    }
    wait_page(
        &page,
        "three agents counted",
        "document.getElementById('agents-count').textContent === '3'",
    )
    .await;
    wait_page(
        &page,
        "a supervisor in the tree",
        "document.querySelector('[data-testid=tree-node][data-kind=supervisor]')",
    )
    .await;

    // A run whose agent panics: the supervisor restarts the instance and the tree shows
    // the restart as it happens (counted live from the stream, and in the node's count).
    let (code, body) = api(
        &client,
        reqwest::Method::POST,
        node.url("/v1/runs"),
        Some(json!({"workflow": "crash-once", "input": {}})),
    )
    .await;
    assert_eq!(code, 202, "POST /v1/runs: {body}");
    wait_page(
        &page,
        "a restart seen live",
        "Number(document.getElementById('tree-panel').dataset.restartsSeen) >= 1",
    )
    .await;
    wait_page(
        &page,
        "the restarted instance's count in the tree",
        "Number(document.querySelector('[data-testid=tree-node][data-node-id=\"crashy#0\"]')?.dataset.restarts) >= 1",
    )
    .await;

    // Reloading the page shows that restart in the node's count, and neither flashes it
    // nor counts it as seen live: the page's stream starts at now (issue 28, item 6).
    reload(&page).await;
    wait_page(
        &page,
        "the restart in the node's count after the reload",
        "Number(document.querySelector('[data-testid=tree-node][data-node-id=\"crashy#0\"]')?.dataset.restarts) >= 1",
    )
    .await;
    // Give a replayed history time to arrive and be drawn (a few frames).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let replayed = page_text(
        &page,
        "document.getElementById('tree-panel').dataset.restartsSeen + '/' + document.querySelectorAll('.tree-row.flash').length",
    )
    .await;
    assert_eq!(
        replayed, "0/0",
        "restarts seen live / rows flashing after a reload"
    );

    // A run submitted through the API appears and completes on the page; its input, which
    // holds markup, is shown as text.
    let (code, body) = api(
        &client,
        reqwest::Method::POST,
        node.url("/v1/runs"),
        Some(json!({"workflow": "echo-once", "input": {"note": "<img id=injected src=x>"}})),
    )
    .await;
    assert_eq!(code, 202, "POST /v1/runs: {body}");
    let run = body["run"].as_str().expect("a run id").to_string();
    let row = format!(
        "document.querySelector('[data-testid=run-row][data-run-id={}]')",
        q(&run)
    );
    wait_page(&page, "the submitted run", &row).await;
    wait_page(
        &page,
        "the run completed",
        &format!("{row}?.querySelector('[data-testid=run-status]').textContent === 'completed'"),
    )
    .await;

    // Its timeline: a lease went to an echo instance and its result came back.
    page.find_element(format!("[data-testid=run-row][data-run-id={}]", q(&run)))
        .await
        .expect("the run's row")
        .click()
        .await
        .expect("a click on the run");
    wait_page(
        &page,
        "the run's detail",
        &format!(
            "document.getElementById('run-id').textContent === {}",
            q(&run)
        ),
    )
    .await;
    wait_page(
        &page,
        "a lease in the timeline",
        "document.querySelector('[data-testid=timeline-item][data-kind=lease]')",
    )
    .await;
    wait_page(
        &page,
        "an accepted result in the timeline",
        "document.querySelector('[data-testid=timeline-item][data-kind=ok]')",
    )
    .await;
    wait_page(&page, "an echo instance as a lifeline", "[...document.querySelectorAll('[data-testid=timeline-lane]')].some(e => e.textContent.startsWith('echo#'))").await;
    wait_page(&page, "the step with its owner", "document.querySelector('[data-testid=step-row][data-step=say] [data-testid=step-owner]')?.textContent.startsWith('echo#')").await;
    wait_page(
        &page,
        "the input shown as text",
        "document.getElementById('run-steps').textContent.includes('<img id=injected src=x>')",
    )
    .await;
    let injected = page_text(&page, "document.getElementById('injected') === null && document.querySelectorAll('#main img').length === 0").await;
    assert_eq!(injected, "true", "a string from the server became markup");

    // A run reaching the gate shows Approve / Reject; clicking Approve decides it and the
    // run ends completed, as the API says.
    let (code, body) = api(
        &client,
        reqwest::Method::POST,
        node.url("/v1/runs"),
        Some(json!({"workflow": "gated", "input": {"x": 1}})),
    )
    .await;
    assert_eq!(code, 202, "POST /v1/runs: {body}");
    let gated = body["run"].as_str().expect("a run id").to_string();
    let approve = format!(
        "[data-testid=gate-row][data-run-id={}] [data-testid=gate-approve]",
        q(&gated)
    );
    wait_page(
        &page,
        "the gate's Approve button",
        &format!("document.querySelector({})", q(&approve)),
    )
    .await;
    assert_eq!(run_status(&client, &node, &gated).await, "waiting");
    // Its detail says why it waits: what its steps found before the gate.
    page.find_element(format!("[data-testid=run-row][data-run-id={}]", q(&gated)))
        .await
        .expect("the gated run's row")
        .click()
        .await
        .expect("a click on the gated run");
    wait_page(
        &page,
        "the gate's reasons in the run's detail",
        "document.querySelector('[data-testid=gate-why]')?.textContent.includes('prepare: completed — x 1')",
    )
    .await;
    // A viewer's page shows the gate waiting without the buttons its role may not use.
    let viewer = open(&chrome, node.url(&format!("/?token={VIEWER}"))).await;
    wait_page(
        &viewer,
        "the viewer's role known",
        "document.body.dataset.role === 'viewer' && document.getElementById('whoami').textContent === 'dash-viewer (viewer)'",
    )
    .await;
    let viewer_row = format!(
        "document.querySelector('[data-testid=gate-row][data-run-id={}]')",
        q(&gated)
    );
    wait_page(
        &viewer,
        "the gate, read-only, on the viewer's page",
        &format!("{viewer_row}?.querySelector('[data-testid=gate-readonly]')"),
    )
    .await;
    let buttons = page_text(
        &viewer,
        "document.querySelectorAll('[data-testid=gate-approve], [data-testid=gate-reject]').length",
    )
    .await;
    assert_eq!(buttons, "0", "a viewer is shown Approve or Reject");
    viewer.close().await.expect("the viewer's page closes");
    wait_page(
        &page,
        "the admin's role known",
        "document.body.dataset.role === 'admin'",
    )
    .await;
    page.find_element(approve.clone())
        .await
        .expect("the Approve button")
        .click()
        .await
        .expect("a click on Approve");
    let deadline = Instant::now() + WAIT;
    loop {
        let status = run_status(&client, &node, &gated).await;
        if status == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gated run is {status:?}, not completed, {WAIT:?} after Approve was clicked; node stderr:\n{}",
            node.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, detail) = api(
        &client,
        reqwest::Method::GET,
        node.url(&format!("/v1/runs/{gated}")),
        None,
    )
    .await;
    let decided = &detail["gates"][0]["decided"];
    assert_eq!(
        decided["approved"],
        json!(true),
        "the gate's decision: {detail}"
    );
    let gated_row = format!(
        "document.querySelector('[data-testid=run-row][data-run-id={}]')",
        q(&gated)
    );
    wait_page(
        &page,
        "the gated run completed",
        &format!(
            "{gated_row}?.querySelector('[data-testid=run-status]').textContent === 'completed'"
        ),
    )
    .await;
    wait_page(
        &page,
        "no gate left waiting",
        "document.getElementById('gates-count').textContent === '0'",
    )
    .await;

    // The gated run's detail, for the screenshot of the closing note.
    page.find_element(format!("[data-testid=run-row][data-run-id={}]", q(&gated)))
        .await
        .expect("the gated run's row")
        .click()
        .await
        .expect("a click on the run");
    wait_page(
        &page,
        "the approval in the timeline",
        "document.getElementById('run-timeline').textContent.includes('approved ask')",
    )
    .await;
    screenshot(&page, "dashboard.png", true).await;
    chrome.close().await;
}

browser_test!(
    /// 1,000 agents and 10,000 runs, submitted while the page is open: the page keeps a
    /// screenful of rows (the agents and the tree are virtual lists, the runs a page of 50),
    /// follows the stream until it shows the API's newest page, completed, and pages through
    /// the runs. The figures it prints (time to first draw, the longest main-thread task, the
    /// slowest answer to the test while runs stream in) are for the closing notes; none is
    /// asserted.
    dashboard_keeps_a_screenful_of_rows_at_1000_agents_and_10000_runs,
    dashboard_keeps_a_screenful_of_rows_at_1000_agents_and_10000_runs_body()
);

async fn dashboard_keeps_a_screenful_of_rows_at_1000_agents_and_10000_runs_body() {
    const AGENTS: usize = 1000;
    const RUNS: usize = 10_000;
    let dir = setup(AGENTS);
    let node = Node::start(dir.path());
    let client = http();

    let chrome = Chromium::launch().await;
    let page = open(&chrome, node.url(&format!("/?token={TOKEN}"))).await;
    page.evaluate(
        "window.__longest = 0; try { new PerformanceObserver((l) => { for (const e of l.getEntries()) \
         window.__longest = Math.max(window.__longest, e.duration); }).observe({type: 'longtask', buffered: true}); } catch (_) {}",
    )
    .await
    .expect("a long-task observer");
    wait_page(
        &page,
        "the event stream live",
        "document.getElementById('conn').textContent === 'live'",
    )
    .await;
    wait_page(
        &page,
        "1,000 echo agents and the crashy one counted",
        &format!(
            "document.getElementById('agents-count').textContent === '{}'",
            AGENTS + 1
        ),
    )
    .await;
    let first_draw = page_text(&page, "Math.round(performance.now())").await;

    // 10,000 runs through the API, 32 at a time, while the page follows the stream; the
    // test samples how long the page takes to answer it meanwhile.
    let submit = {
        let client = client.clone();
        let url = node.url("/v1/runs");
        tokio::spawn(async move {
            let mut last = String::new();
            let mut results = futures::stream::iter(0..RUNS)
                .map(|i| {
                    let client = client.clone();
                    let url = url.clone();
                    async move {
                        api(
                            &client,
                            reqwest::Method::POST,
                            url,
                            Some(json!({"workflow": "echo-once", "input": {"i": i}})),
                        )
                        .await
                    }
                })
                .buffered(32);
            while let Some((code, body)) = results.next().await {
                assert_eq!(code, 202, "POST /v1/runs: {body}");
                last = body["run"].as_str().unwrap_or_default().to_string();
            }
            last
        })
    };
    let mut slowest = Duration::ZERO;
    while !submit.is_finished() {
        let t = Instant::now();
        let _ = page
            .evaluate("document.querySelectorAll('[data-testid=run-row]').length")
            .await;
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = submit.await.expect("the submitter");

    // Every run ends; then the page's first page is the API's, every row completed.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (code, body) = api(
            &client,
            reqwest::Method::GET,
            node.url("/v1/runs?status=running&limit=1"),
            None,
        )
        .await;
        assert_eq!(code, 200, "GET /v1/runs?status=running: {body}");
        if body["runs"].as_array().is_some_and(|r| r.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runs still running 300 s after the last was submitted (last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, newest) = api(
        &client,
        reqwest::Method::GET,
        node.url("/v1/runs?limit=50"),
        None,
    )
    .await;
    let ids: Vec<&str> = newest["runs"]
        .as_array()
        .expect("a page of runs")
        .iter()
        .filter_map(|r| r["run"].as_str())
        .collect();
    assert_eq!(ids.len(), 50, "the API's first page: {newest}");
    wait_page(
        &page,
        "the API's newest 50 runs, completed",
        &format!(
            "(() => {{ const want = new Set({}); const rows = [...document.querySelectorAll('[data-testid=run-row]')]; \
             return rows.length === 50 && rows.every(r => want.has(r.dataset.runId) && r.dataset.status === 'completed'); }})()",
            serde_json::to_string(&ids).expect("ids")
        ),
    )
    .await;

    let counts: Value = page
        .evaluate(
            "({agentRows: document.querySelectorAll('[data-testid=agent-row]').length, \
              treeRows: document.querySelectorAll('[data-testid=tree-node]').length, \
              treeCount: Number(document.getElementById('tree-count').textContent), \
              runRows: document.querySelectorAll('[data-testid=run-row]').length, \
              nodes: document.getElementsByTagName('*').length, \
              longest: Math.round(window.__longest)})",
        )
        .await
        .expect("the page's counts")
        .into_value()
        .expect("a JSON object");
    eprintln!(
        "dashboard at {AGENTS} agents and {RUNS} runs: first draw at {first_draw} ms, longest main-thread task {} ms, \
         slowest answer while runs streamed {} ms, {} elements in the page",
        counts["longest"],
        slowest.as_millis(),
        counts["nodes"]
    );
    let agent_rows = counts["agentRows"].as_u64().unwrap_or(u64::MAX);
    assert!(
        agent_rows > 0 && agent_rows <= 60,
        "agent rows in the page: {counts}"
    );
    let tree_rows = counts["treeRows"].as_u64().unwrap_or(u64::MAX);
    assert!(
        tree_rows > 0 && tree_rows <= 60,
        "tree rows in the page: {counts}"
    );
    assert!(
        counts["treeCount"].as_u64().unwrap_or(0) > AGENTS as u64,
        "the tree holds every instance: {counts}"
    );
    assert_eq!(counts["runRows"], json!(50), "one page of runs: {counts}");

    // Older runs are a page away, and a different page.
    let first_page = page_text(
        &page,
        "[...document.querySelectorAll('[data-testid=run-row]')].map(r => r.dataset.runId).join()",
    )
    .await;
    page.find_element("[data-testid=runs-next]")
        .await
        .expect("the older button")
        .click()
        .await
        .expect("a click on older");
    wait_page(
        &page,
        "page 2",
        "document.getElementById('runs-page').textContent === 'page 2'",
    )
    .await;
    wait_page(
        &page,
        "50 older runs",
        &format!(
            "(() => {{ const ids = [...document.querySelectorAll('[data-testid=run-row]')].map(r => r.dataset.runId); \
             const first = new Set({}.split(',')); return ids.length === 50 && ids.every(i => !first.has(i)); }})()",
            q(&first_page)
        ),
    )
    .await;
    // Scrolling the agents to the end shows the last ones (sorted by number), still a screenful.
    page.evaluate(
        "const l = document.getElementById('agents-list'); l.scrollTop = l.scrollHeight;",
    )
    .await
    .expect("a scroll");
    wait_page(
        &page,
        "the last agent after scrolling",
        &format!(
            "document.querySelector('[data-testid=agent-row][data-agent-id={}]')",
            q(&format!("echo#{}", AGENTS - 1))
        ),
    )
    .await;
    let rows = page_text(
        &page,
        "document.querySelectorAll('[data-testid=agent-row]').length",
    )
    .await;
    assert!(
        rows.parse::<u64>().is_ok_and(|n| n <= 60),
        "agent rows after scrolling: {rows}"
    );
    chrome.close().await;
}

/// `expr` (JavaScript giving a string) in the page, each call bounded by 30 s.
async fn bounded_text(page: &Page, expr: &str) -> String {
    tokio::time::timeout(Duration::from_secs(30), page_text(page, expr))
        .await
        .unwrap_or_default()
}

/// Polls `expr` (a boolean) in the page, each evaluation bounded, until it holds or
/// [`WAIT`] passes (then fails naming `what`, with what `show` gives then).
async fn bounded_wait(page: &Page, what: &str, expr: &str, show: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        if bounded_text(page, &format!("Boolean({expr})")).await == "true" {
            return;
        }
        if Instant::now() > deadline {
            let shown = bounded_text(page, show).await;
            panic!("the page did not show {what} within {WAIT:?}; it shows: {shown}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_on_a_control_node_shows_the_cluster_and_another_nodes_run_with_its_owner() {
    use crate::support::cluster as cs;
    if skip_requested() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    crate::support::node::write_cast(p, &["workflows", "j"], 1);
    std::fs::write(
        p.join("workflows/one.toml"),
        crate::support::node::one_step("one", "echo", "30s", 3),
    )
    .expect("workflow");
    let nats = cs::Nats::start(p);
    let c1 = cs::control(p, &nats.url(), "c1", "j/c1.db");
    let c2 = cs::control(p, &nats.url(), "c2", "j/c2.db");
    let _w1 = cs::worker(p, &nats.url(), "w1");
    let _w2 = cs::worker(p, &nats.url(), "w2");
    cs::wait_for(&c2, "/v1/agents", 60, |d| {
        d["agents"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    // A run of c2's, completed.
    let run = cs::start_run(&c2, "one", json!({})).await;
    cs::wait_run(&c2, &run, 60).await;

    let chrome = Chromium::launch().await;
    let page = open(&chrome, format!("{}/?token={}", c1.url, cs::TOKEN)).await;
    let panel = "document.getElementById('cluster-panel').textContent";
    // The cluster: both control nodes live, c1 this node; both workers with their instance.
    for (node, testid) in [
        ("c1", "cluster-control"),
        ("c2", "cluster-control"),
        ("w1", "cluster-worker"),
        ("w2", "cluster-worker"),
    ] {
        bounded_wait(
            &page,
            &format!("{node} live in the cluster panel"),
            &format!(
                "document.querySelector('[data-testid={testid}][data-node={}]')?.dataset.live === 'true'",
                q(node)
            ),
            panel,
        )
        .await;
    }
    assert!(bounded_text(&page, panel).await.contains("(this node)"));
    // c2's run is listed on c1 with its owner, and opens with its detail and timeline.
    let row = format!("[data-testid=run-row][data-run-id={}]", q(&run));
    bounded_wait(
        &page,
        "c2's run in c1's list, owned by c2",
        &format!("document.querySelector('{row} [data-testid=run-owner]')?.textContent === 'c2'"),
        "document.getElementById('runs-body').textContent",
    )
    .await;
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        page.evaluate(format!("document.querySelector('{row}').click()")),
    )
    .await;
    bounded_wait(
        &page,
        "the run's detail naming its owner",
        "document.getElementById('run-meta').textContent.includes('driven by control node c2')",
        "document.getElementById('run-meta').textContent",
    )
    .await;
    bounded_wait(
        &page,
        "the run's timeline from c2's records",
        "document.querySelectorAll('[data-testid=timeline-item]').length >= 3",
        "document.getElementById('run-timeline').textContent",
    )
    .await;
    chrome.close().await;
}
