//! `muster check` catches what `muster run` would refuse later: a zero timeout, an
//! attempt budget beyond the limit (beyond u32 it used to wrap to 0), a `max_visits`
//! beyond the limit, an empty `parallel` (bad input, exit 2, naming the file, the step
//! and the field), and a step from which no terminal step is reachable, such as a gate
//! whose every route loops back (a finding, exit 1). And `check` takes time linear in
//! the steps: a chain of 10,000 steps is checked clean well inside a watchdog (it took
//! 81 s). Every child process here runs under a watchdog.

use crate::support::cast::{Cast, function_agent};
use crate::support::common;

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

/// A temp dir with `actors/echo.toml` serving `do.echo` and `schemas/` (`req`, and the
/// shipped workflow schema when `with_schema`).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(with_schema: bool) -> Fixture {
        let shipped: &[&str] = if with_schema {
            &["manifest", "workflow"]
        } else {
            &[]
        };
        let dir = Cast::new()
            .shipped_schemas(shipped)
            .schema(
                "req",
                r#"{"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}"#,
            )
            .actor("echo", &function_agent("echo", "do.echo", "req", "echo", ""))
            .into_dir();
        Fixture { dir }
    }

    fn write(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("wf.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn check(&self, text: &str) -> Output {
        self.write(text);
        common::muster_within(60, &["check", "wf.toml", "--json"], self.dir.path())
    }

    fn run(&self, text: &str) -> Output {
        self.write(text);
        common::muster_within(
            60,
            &[
                "run",
                "wf.toml",
                "--input",
                r#"{"text": "hi"}"#,
                "--journal",
                "j.db",
                "--json",
            ],
            self.dir.path(),
        )
    }
}

const BASE: &str = r#"name = "t"
input = "req"
start = "one"

[steps.one]
capability = "do.echo"
timeout = "10s"
attempts = 2
on_exhausted = "fail"
next = [
  { when = "steps.one.output.text == 'again'", goto = "one", max_visits = 2 },
  { otherwise = true, goto = "done" },
]

[steps.done]
terminal = "done"
"#;

fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?}");
    BASE.replacen(from, to, 1)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `check` and `run` both exit 2 naming the file, the step and the field, with and
/// without the workflow schema; `run` journals nothing.
fn bad_input(text_of_wf: &str, at: &str, needle: &str) {
    for with_schema in [true, false] {
        let f = Fixture::new(with_schema);
        for out in [f.check(text_of_wf), f.run(text_of_wf)] {
            let all = text(&out);
            assert_eq!(out.status.code(), Some(2), "schema {with_schema}: {all}");
            assert!(
                all.contains("wf.toml") && all.contains(at) && all.contains(needle),
                "schema {with_schema}: expected {at:?} and {needle:?} in {all}"
            );
        }
        assert!(!f.dir.path().join("j.db").exists(), "run journaled nothing");
    }
}

#[test]
fn the_base_workflow_is_clean() {
    let f = Fixture::new(true);
    let out = f.check(BASE);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_zero_timeout_is_bad_input_for_check_not_a_refusal_at_run_time() {
    bad_input(
        &edit("timeout = \"10s\"", "timeout = \"0s\""),
        "steps.one",
        "timeout",
    );
}

#[test]
fn a_duration_beyond_the_limit_is_bad_input_not_a_panic() {
    // `run` used to panic: "overflow when adding duration to instant".
    bad_input(
        &edit("timeout = \"10s\"", "timeout = \"500000000000y\""),
        "steps.one",
        "timeout",
    );
    bad_input(
        &edit(
            "timeout = \"10s\"",
            "timeout = \"10s\"\nbackoff = \"1000y\"",
        ),
        "steps.one",
        "backoff",
    );
}

#[test]
fn attempts_beyond_u32_or_the_limit_are_bad_input_instead_of_wrapping() {
    for n in ["4294967296", "1001", "0"] {
        bad_input(
            &edit("attempts = 2", &format!("attempts = {n}")),
            "steps.one",
            "attempts",
        );
    }
}

#[test]
fn max_visits_beyond_the_limit_is_bad_input_instead_of_wrapping() {
    for n in ["4294967298", "10001"] {
        bad_input(
            &edit("max_visits = 2", &format!("max_visits = {n}")),
            "steps.one",
            "max_visits",
        );
    }
}

#[test]
fn an_empty_parallel_is_bad_input_naming_the_field() {
    let wf = edit(
        "[steps.done]",
        "[steps.par]\nparallel = []\nnext = \"done\"\n\n[steps.done]",
    )
    .replace("goto = \"done\" }", "goto = \"par\" }");
    bad_input(&wf, "steps.par", "parallel: an empty list");
}

/// A workflow whose findings (exit 1) include `needle` at `step`; `run` refuses it
/// with the same findings.
fn finding(wf: &str, step: &str, needle: &str) {
    let f = Fixture::new(true);
    for out in [f.check(wf), f.run(wf)] {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let doc: Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
        let found = doc["findings"].as_array().cloned().unwrap_or_default();
        assert!(
            found.iter().any(|f| f["concern"] == "delegation"
                && f["step"] == step
                && f["message"].as_str().unwrap_or("").contains(needle)),
            "no finding at {step} with {needle:?} in {found:#?}"
        );
    }
}

#[test]
fn a_gate_whose_every_route_loops_back_is_a_finding() {
    // The gate's routes go back to the task, whose only ways on lead to the gate.
    let wf = r#"name = "t"
input = "req"
start = "one"

[steps.one]
capability = "do.echo"
timeout = "10s"
attempts = 2
on_exhausted = "review"
next = "review"

[steps.review]
gate = "again?"
on_approve = "one"
on_reject = "one"
"#;
    finding(wf, "review", "every route of this gate");
    finding(wf, "one", "no path from it leads to a terminal");
}

#[test]
fn a_join_that_only_loops_back_through_a_gate_is_a_finding() {
    // Inside a join the branch's own `next` is not followed, and an optional branch
    // that fails does not fail the join: neither is a way to `done`, so every run that
    // reaches `par` waits at `review` again and again. `check` used to say ok.
    for branch in [
        "next = \"done\"\non_exhausted = \"fail\"",
        "on_exhausted = \"done\"",
    ] {
        let optional = if branch.starts_with("on_exhausted") {
            "optional = [\"a\"]\n"
        } else {
            ""
        };
        let wf = format!(
            r#"name = "t"
input = "req"
start = "par"

[steps.par]
parallel = ["a"]
{optional}next = "review"

[steps.a]
capability = "do.echo"
timeout = "10s"
attempts = 2
{branch}

[steps.review]
gate = "again?"
on_approve = "par"
on_reject = "par"

[steps.done]
terminal = "done"
"#
        );
        finding(&wf, "par", "no path from it leads to a terminal");
        finding(&wf, "review", "every route of this gate");
    }
}

#[test]
fn a_chain_of_10000_steps_is_checked_clean_within_the_watchdog() {
    let n = 10_000;
    let mut wf = String::from("name = \"t\"\ninput = \"req\"\nstart = \"s00000\"\n");
    for i in 0..n {
        let next = if i + 1 < n {
            format!("s{:05}", i + 1)
        } else {
            "done".to_string()
        };
        let input = if i == 0 {
            "run.input.text".to_string()
        } else {
            format!("steps.s{:05}.output.text", i - 1)
        };
        // Each step reads the one before, and goes on by rules: the next step when the
        // text fits, back to the start at most twice, else the next step anyway.
        wf.push_str(&format!(
            "[steps.s{i:05}]\ncapability = \"do.echo\"\ninput = \"{{'text': {input}}}\"\n\
             timeout = \"10s\"\nattempts = 2\non_exhausted = \"fail\"\nnext = [\n\
             {{ when = \"{input} == 'x'\", goto = \"{next}\" }},\n\
             {{ otherwise = true, goto = \"s00000\", max_visits = 2 }},\n\
             {{ otherwise = true, goto = \"{next}\" }},\n]\n"
        ));
    }
    wf.push_str("[steps.done]\nterminal = \"done\"\n");
    let f = Fixture::new(true);
    let out = f.check(&wf);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
    assert_eq!(doc["ok"], true);
}

#[test]
fn findings_of_a_10000_step_workflow_stay_short() {
    // Every step reads a step that does not exist. Each finding used to list every step
    // of the workflow: output (and time) quadratic in the steps.
    let n = 10_000;
    let mut wf = String::from("name = \"t\"\ninput = \"req\"\nstart = \"s00000\"\n");
    for i in 0..n {
        let next = if i + 1 < n {
            format!("s{:05}", i + 1)
        } else {
            "done".to_string()
        };
        wf.push_str(&format!(
            "[steps.s{i:05}]\ncapability = \"do.echo\"\ninput = \"{{'text': steps.nope.output.text}}\"\n\
             timeout = \"10s\"\nattempts = 2\non_exhausted = \"fail\"\nnext = \"{next}\"\n"
        ));
    }
    wf.push_str("[steps.done]\nterminal = \"done\"\n");
    let f = Fixture::new(true);
    f.write(&wf);
    let out = common::muster_within(60, &["check", "wf.toml"], f.dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains("no step `nope`"))
            .count(),
        n
    );
    let longest = stdout.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 1_000, "a finding of {longest} bytes");
}
