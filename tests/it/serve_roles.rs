//! Roles of `muster serve`'s tokens, against the real binary on a free loopback port: every
//! route answered for every role (allowed, or 403 naming the role it needs and the token's
//! name and role), a token file's bad lines refusing the start (exit 2, file and line named,
//! the token never printed), a file of one token alone still an admin's, a submitter that
//! cancels only its own runs, and a gate decided once among concurrent operators with the
//! decider's name journaled. Every wait has a deadline; no timing is asserted.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::common::muster_within;
use crate::support::node::{self as node_support, Serving, call_with, send, serve, wait_run};

const ADMIN: &str = "admin-token-0123456789abcdef";
const OPS_A: &str = "ops-alice-token-0123456789ab";
const OPS_B: &str = "ops-bob-token-0123456789abcd";
const OPS_C: &str = "ops-cy-token-0123456789abcde";
const SUB: &str = "submitter-token-0123456789ab";
const VIEW: &str = "viewer-token-0123456789abcde";

/// Every token of the test's file with its role and name.
const TOKENS: [(&str, &str, &str); 6] = [
    (ADMIN, "admin", "root-ann"),
    (OPS_A, "operator", "ops-alice"),
    (OPS_B, "operator", "ops-bob"),
    (OPS_C, "operator", "ops-cy"),
    (SUB, "submitter", "sub-sam"),
    (VIEW, "viewer", "view-vic"),
];

const GATED: &str = include_str!("../fixtures/workflows/gated.toml");

/// A temp dir with the echo and slow agents, three workflows (`gated`, `plain`, `slow`)
/// and `tokens.txt` listing [`TOKENS`].
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    node_support::write_cast(p, &["workflows"], 2);
    node_support::write_slow(p);
    std::fs::write(p.join("workflows/gated.toml"), GATED).expect("workflow");
    std::fs::write(
        p.join("workflows/plain.toml"),
        node_support::one_step("plain", "echo", "10s", 2),
    )
    .expect("workflow");
    std::fs::write(
        p.join("workflows/slow.toml"),
        node_support::one_step("slow", "slow", "60s", 1),
    )
    .expect("workflow");
    let mut text = String::from("# the test's tokens: token role name\n\n");
    for (t, role, name) in TOKENS {
        text.push_str(&format!("{t}\t{role}   {name}\n"));
    }
    std::fs::write(p.join("tokens.txt"), text).expect("token file");
    dir
}

fn start(dir: &Path) -> Serving {
    serve(dir, &["--token-file", "tokens.txt"], &[])
}

async fn start_run(node: &Serving, token: &str, workflow: &str, input: Value) -> String {
    let (code, doc) = call_with(
        "POST",
        &format!("{}/v1/runs", node.url),
        Some(json!({"workflow": workflow, "input": input})),
        Some(token),
    )
    .await;
    assert_eq!(code, 202, "{doc}");
    doc["run"].as_str().expect("run id").to_string()
}

/// A refusal for lack of role: 403, naming the role needed and the token's name and role,
/// in the API's error shape, without the token.
fn assert_forbidden(what: &str, code: u16, doc: &Value, needed: &str, name: &str, role: &str) {
    assert_eq!(code, 403, "{what}: {doc}");
    let e = doc["error"].as_str().unwrap_or_default();
    assert!(
        e.contains(&format!("needs role `{needed}`"))
            && e.contains(&format!("this token ({name}) is `{role}`")),
        "{what}: {e}"
    );
    assert_eq!(doc.as_object().map(|o| o.len()), Some(1), "{doc}");
    for (t, _, _) in TOKENS {
        assert!(!e.contains(t), "{what}: the error shows a token: {e}");
    }
}

#[tokio::test]
async fn every_route_answers_every_role_allowed_or_403_naming_the_role_it_needs() {
    let dir = setup();
    let node = start(dir.path());
    let u = &node.url;
    let id = "01a21ce1-5408-70b7-9e20-3a9f7602fbc8";
    // (method, path, body, role needed, the answer when allowed)
    let routes: Vec<(&str, String, Option<Value>, &str, u16)> = vec![
        ("GET", "/v1/runs".into(), None, "viewer", 200),
        ("GET", format!("/v1/runs/{id}"), None, "viewer", 404),
        ("GET", format!("/v1/tasks/{id}"), None, "viewer", 404),
        ("GET", "/v1/agents".into(), None, "viewer", 200),
        ("GET", "/v1/tree".into(), None, "viewer", 200),
        ("GET", "/v1/records".into(), None, "viewer", 200),
        ("GET", "/v1/events".into(), None, "viewer", 200),
        ("GET", "/metrics".into(), None, "viewer", 200),
        ("GET", "/v1/whoami".into(), None, "viewer", 200),
        (
            "POST",
            "/v1/runs".into(),
            Some(json!({"workflow": "plain", "input": {}})),
            "submitter",
            202,
        ),
        (
            "POST",
            "/v1/tasks".into(),
            Some(json!({"capability": "echo", "input": {"x": 1}})),
            "submitter",
            202,
        ),
        (
            "POST",
            format!("/v1/runs/{id}/cancel"),
            None,
            "submitter",
            404,
        ),
        (
            "POST",
            format!("/v1/runs/{id}/gates/ask"),
            Some(json!({"decision": "approve"})),
            "operator",
            404,
        ),
    ];
    let rank = |r: &str| {
        ["viewer", "submitter", "operator", "admin"]
            .iter()
            .position(|x| *x == r)
    };
    let mut started = Vec::new();
    for (method, path, body, needed, allowed) in &routes {
        for (token, role, name) in TOKENS {
            let what = format!("{method} {path} as {name} ({role})");
            let (code, _, doc) =
                send(method, &format!("{u}{path}"), body.clone(), Some(token)).await;
            if rank(role) >= rank(needed) {
                assert_eq!(code, *allowed, "{what}: {doc}");
                if let Some(r) = doc["run"].as_str().filter(|_| *path == "/v1/runs") {
                    started.push(r.to_string());
                }
            } else {
                assert_forbidden(&what, code, &doc, needed, name, role);
            }
        }
    }
    // Nothing refused was done: one run per role allowed to start one, each completes.
    assert_eq!(started.len(), 5, "{started:?}");
    for run in &started {
        wait_run(u, VIEW, run, |d| d["status"] == "completed").await;
    }
    let (_, runs) = call_with("GET", &format!("{u}/v1/runs"), None, Some(VIEW)).await;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(5), "{runs}");
    // Each token is told its role and name; the dashboard's files need none.
    for (token, role, name) in TOKENS {
        let (code, doc) = call_with("GET", &format!("{u}/v1/whoami"), None, Some(token)).await;
        assert_eq!((code, doc), (200, json!({"role": role, "name": name})));
    }
    let (code, _, _) = send("GET", &format!("{u}/"), None, None).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_submitter_cancels_only_the_runs_it_started_and_an_operator_any() {
    let dir = setup();
    let node = start(dir.path());
    let u = &node.url;
    let leased = |d: &Value| {
        d["steps"][0]["status"] == "running"
            && d["steps"][0]["leases"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
    };
    let mine = start_run(&node, SUB, "slow", json!({"delay_ms": 60000})).await;
    let theirs = start_run(&node, ADMIN, "slow", json!({"delay_ms": 60000})).await;
    wait_run(u, VIEW, &mine, leased).await;
    wait_run(u, VIEW, &theirs, leased).await;
    let cancel = |run: &str| format!("{u}/v1/runs/{run}/cancel");
    let body = Some(json!({"reason": "not needed"}));
    // A viewer may not cancel at all; a submitter not another token's run.
    let (code, doc) = call_with("POST", &cancel(&mine), body.clone(), Some(VIEW)).await;
    assert_forbidden(
        "a viewer's cancel",
        code,
        &doc,
        "submitter",
        "view-vic",
        "viewer",
    );
    let (code, doc) = call_with("POST", &cancel(&theirs), body.clone(), Some(SUB)).await;
    assert_forbidden(
        "a submitter's cancel of another's run",
        code,
        &doc,
        "operator",
        "sub-sam",
        "submitter",
    );
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("only the runs it started"),
        "{doc}"
    );
    let (_, still) = call_with("GET", &format!("{u}/v1/runs/{theirs}"), None, Some(VIEW)).await;
    assert_eq!(
        still["status"], "running",
        "a refused cancel did nothing: {still}"
    );
    // Its own run, then the operator's cancel of the other: each journaled with its name.
    let (code, doc) = call_with("POST", &cancel(&mine), body.clone(), Some(SUB)).await;
    assert_eq!(
        (code, doc["status"].clone()),
        (200, json!("cancelled")),
        "{doc}"
    );
    let (code, doc) = call_with("POST", &cancel(&theirs), body, Some(OPS_A)).await;
    assert_eq!(
        (code, doc["status"].clone()),
        (200, json!("cancelled")),
        "{doc}"
    );
    for (run, name) in [(&mine, "sub-sam"), (&theirs, "ops-alice")] {
        let doc = wait_run(u, VIEW, run, |d| d["status"] == "cancelled").await;
        assert_eq!(
            doc["reason"],
            json!(format!("cancelled through the API by {name}: not needed")),
            "{doc}"
        );
    }
}

#[tokio::test]
async fn a_gate_is_decided_once_among_concurrent_operators_and_journaled_with_the_name() {
    let dir = setup();
    let node = start(dir.path());
    let u = node.url.clone();
    let run = start_run(&node, SUB, "gated", json!({"x": 1})).await;
    wait_run(&u, VIEW, &run, |d| d["status"] == "waiting").await;
    let url = format!("{u}/v1/runs/{run}/gates/ask");
    // Neither a viewer nor a submitter may decide.
    for (token, role, name) in [(VIEW, "viewer", "view-vic"), (SUB, "submitter", "sub-sam")] {
        let (code, doc) = call_with(
            "POST",
            &url,
            Some(json!({"decision": "approve"})),
            Some(token),
        )
        .await;
        assert_forbidden("a decision", code, &doc, "operator", name, role);
    }
    // Three operators, four requests each, at once: one decision stands.
    let operators = [(OPS_A, "ops-alice"), (OPS_B, "ops-bob"), (OPS_C, "ops-cy")];
    let mut all = Vec::new();
    for i in 0..12 {
        let (token, name) = operators[i % 3];
        let url = url.clone();
        all.push(tokio::spawn(async move {
            let note = format!("note {i}");
            let (code, doc) = call_with(
                "POST",
                &url,
                Some(json!({"decision": "approve", "note": note})),
                Some(token),
            )
            .await;
            (code, doc, name, note)
        }));
    }
    let mut won = Vec::new();
    let mut conflicts = 0;
    for h in all {
        let (code, doc, name, note) = h.await.expect("request task");
        match code {
            200 => won.push((name, note)),
            409 => conflicts += 1,
            other => panic!("unexpected {other}: {doc}"),
        }
    }
    assert_eq!((won.len(), conflicts), (1, 11), "{won:?}");
    let (name, note) = &won[0];
    let expected = format!("by {name}: {note}");
    let doc = wait_run(&u, VIEW, &run, |d| d["status"] == "completed").await;
    assert_eq!(
        doc["gates"][0]["decided"],
        json!({"approved": true, "note": expected, "by": name}),
        "{doc}"
    );
    // The journal's record says the same.
    let (_, page) = call_with(
        "GET",
        &format!("{u}/v1/records?limit=10000"),
        None,
        Some(VIEW),
    )
    .await;
    let decided: Vec<&Value> = page["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| &r["event"])
        .filter(|e| e["type"] == "gate_decided" && e["run"] == json!(run))
        .collect();
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["reason"], json!(expected));
}

#[tokio::test]
async fn a_file_of_one_token_alone_is_an_admin_token_as_before() {
    let dir = setup();
    std::fs::write(dir.path().join("legacy.txt"), format!("{ADMIN}\n")).expect("token file");
    let node = serve(dir.path(), &["--token-file", "legacy.txt"], &[]);
    assert_eq!(node.start["tokens"], 1, "{}", node.start);
    let u = &node.url;
    let (code, doc) = call_with("GET", &format!("{u}/v1/whoami"), None, Some(ADMIN)).await;
    assert_eq!((code, doc), (200, json!({"role": "admin", "name": null})));
    // It may decide and cancel (the run is unknown: 404, not 403).
    let id = "01a21ce1-5408-70b7-9e20-3a9f7602fbc8";
    let (code, doc) = call_with(
        "POST",
        &format!("{u}/v1/runs/{id}/gates/ask"),
        Some(json!({"decision": "reject"})),
        Some(ADMIN),
    )
    .await;
    assert_eq!(code, 404, "{doc}");
    let run = start_run(&node, ADMIN, "gated", json!({})).await;
    wait_run(u, ADMIN, &run, |d| d["status"] == "waiting").await;
    let (code, doc) = call_with(
        "POST",
        &format!("{u}/v1/runs/{run}/gates/ask"),
        Some(json!({"decision": "approve", "note": "ok"})),
        Some(ADMIN),
    )
    .await;
    assert_eq!(code, 200, "{doc}");
    // An unnamed token's decision is journaled with its note alone.
    let doc = wait_run(u, ADMIN, &run, |d| d["status"] == "completed").await;
    assert_eq!(doc["gates"][0]["decided"]["note"], "ok", "{doc}");
    // The other tokens of the roles file are not valid here.
    let (code, _) = call_with("GET", &format!("{u}/v1/whoami"), None, Some(VIEW)).await;
    assert_eq!(code, 401);
}

#[test]
fn a_token_file_with_a_bad_line_refuses_the_start_naming_the_file_and_line() {
    let dir = setup();
    let p = dir.path();
    // (file contents, the line named, what the message says)
    let cases: [(String, usize, &str); 6] = [
        (
            format!("# ops\n{ADMIN} admin ann\n\n{OPS_A} opertor alice\n"),
            4,
            "unknown role `opertor`; did you mean `operator`?",
        ),
        (
            format!("{ADMIN} admin\n{VIEW} viewer\n{ADMIN} viewer vic\n"),
            3,
            "the same token as line 1",
        ),
        (
            format!("{ADMIN} admin\nshort-token viewer\n"),
            2,
            "the token is 11 characters long; it must be 16 to 4096",
        ),
        (
            format!("{ADMIN} admin ann\n{VIEW} viewer ann\n"),
            2,
            "the name `ann` is taken by line 1",
        ),
        (
            format!("{ADMIN} admin ann extra\n"),
            1,
            "4 fields; a line is `token role [name]`",
        ),
        (
            format!("{ADMIN} {VIEW}\n"),
            1,
            "the second field is not a role",
        ),
    ];
    for (text, line, says) in &cases {
        std::fs::write(p.join("bad-tokens.txt"), text).expect("token file");
        let out = muster_within(
            60,
            &[
                "serve",
                "--workflows",
                "workflows",
                "--journal",
                "j/journal.db",
                "--listen",
                "127.0.0.1:0",
                "--token-file",
                "bad-tokens.txt",
            ],
            p,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(&format!("bad-tokens.txt:{line}: ")) && stderr.contains(says),
            "{text}: {stderr}"
        );
        for (t, _, _) in TOKENS {
            assert!(
                !stderr.contains(t) && !stdout.contains(t),
                "a token was printed: {stderr}{stdout}"
            );
        }
        assert!(!stderr.contains("short-token"), "{stderr}");
    }
}
