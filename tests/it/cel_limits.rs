//! CEL bombs: an expression too long, too deeply nested or with too long an operator
//! chain is refused when it is compiled (exit 2, naming the file and where the expression
//! is), before the `cel` parser and interpreter, which recurse on it, overflow the stack.
//! Before the limits, a sum of 10,001 terms or 100,000 nested parentheses aborted
//! `muster check`, `muster run` and every `muster resume` with a stack overflow. Every
//! child process here runs under a watchdog.

use crate::support::cast::Cast;
use crate::support::common;

use std::path::{Path, PathBuf};
use std::process::Output;

use muster::conditions::{MAX_DEPTH, MAX_NESTING};

/// A temp dir holding `actors/echo.toml` (serving `do.echo`), `schemas/` (the shipped
/// manifest, workflow and scenario schemas, `req`, and the test schemas a scenario
/// agent uses) and the files a test writes.
struct Fixture {
    dir: tempfile::TempDir,
}

const ECHO: &str = r#"name = "echo"
replicas = 1
[[capabilities]]
name = "do.echo"
input = "req"
output = "req"
ACCEPT
[backend]
kind = "function"
name = "echo"
"#;

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_accept("")
    }

    fn with_accept(accept: &str) -> Fixture {
        let shipped = [
            "manifest",
            "workflow",
            "scenario",
            "test-request",
            "test-report",
            "test-failure",
        ];
        let dir = Cast::new()
            .shipped_schemas(&shipped)
            .schema(
                "req",
                r#"{"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}"#,
            )
            .actor("echo", &ECHO.replace("ACCEPT", accept))
            .into_dir();
        Fixture { dir }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        common::muster_within(120, args, self.dir.path())
    }
}

fn workflow(mapping: &str, when: &str) -> String {
    format!(
        r#"name = "t"
input = "req"
start = "one"

[steps.one]
capability = "do.echo"
input = "{mapping}"
timeout = "10s"
attempts = 2
on_exhausted = "review"
next = [ {{ when = "{when}", goto = "done" }}, {{ otherwise = true, goto = "review" }} ]

[steps.review]
gate = "ship it?"
on_approve = "done"

[steps.done]
terminal = "done"
"#
    )
}

fn sum(terms: usize) -> String {
    vec!["1"; terms].join("+")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// `check` and `run` both exit 2 naming the file, the step and the field, and `run`
/// journals nothing (its journal file is never created).
fn refused_by_check_and_run(f: &Fixture, text: &str, field: &str, needle: &str) {
    f.write("wf.toml", text);
    let out = f.run(&["check", "wf.toml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "check: {err}");
    assert!(
        err.contains("wf.toml") && err.contains(field) && err.contains(needle),
        "check: {err}"
    );
    let out = f.run(&[
        "run",
        "wf.toml",
        "--input",
        r#"{"text": "hi"}"#,
        "--journal",
        "j.db",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "run: {err}");
    assert!(err.contains("wf.toml") && err.contains(field), "run: {err}");
    assert!(!f.dir.path().join("j.db").exists(), "run journaled nothing");
}

#[test]
fn a_sum_of_10001_terms_is_refused_by_check_and_run_naming_the_step_and_field() {
    let f = Fixture::new();
    let mapping = format!("{{'text': run.input.text, 'n': {}}}", sum(10_001));
    refused_by_check_and_run(&f, &workflow(&mapping, "true"), "steps.one: input", "bytes");
    // Short enough for the byte limit: refused for its operator chain.
    let mapping = format!("{{'text': run.input.text, 'n': {}}}", sum(1_000));
    refused_by_check_and_run(
        &f,
        &workflow(&mapping, "true"),
        "steps.one: input",
        "operators",
    );
    // The same in a transition.
    refused_by_check_and_run(
        &f,
        &workflow("run.input", &format!("{} == 1", sum(1_000))),
        "steps.one: next[0].when",
        "operators",
    );
}

#[test]
fn nested_parentheses_are_refused_by_check_and_run() {
    let f = Fixture::new();
    for n in [100_000, MAX_NESTING + 1] {
        let deep = format!("{}true{}", "(".repeat(n), ")".repeat(n));
        refused_by_check_and_run(
            &f,
            &workflow("run.input", &deep),
            "steps.one: next[0].when",
            "too large",
        );
    }
}

#[test]
fn resume_refuses_a_workflow_file_that_became_a_cel_bomb() {
    let f = Fixture::new();
    // A run that stops at the gate (exit 3), journaled.
    f.write("wf.toml", &workflow("run.input", "false"));
    let out = f.run(&[
        "run",
        "wf.toml",
        "--input",
        r#"{"text": "hi"}"#,
        "--journal",
        "j.db",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // The file it was started from now holds a bomb: every resume loads it again.
    let bomb = format!("{}false{}", "(".repeat(100_000), ")".repeat(100_000));
    f.write("wf.toml", &workflow("run.input", &bomb));
    for _ in 0..2 {
        let out = f.run(&["resume", "--journal", "j.db"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("wf.toml") && err.contains("steps.one"),
            "{err}"
        );
    }
}

#[test]
fn an_acceptance_rule_bomb_in_a_manifest_exits_2_naming_the_field() {
    let rule = format!("accept = \"{} == 1\"", sum(1_000));
    let f = Fixture::with_accept(&rule);
    let out = f.run(&["agents"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("echo.toml") && err.contains("/capabilities/0/accept"),
        "{err}"
    );
    // `check` loads the same cast and refuses the same way.
    f.write("wf.toml", &workflow("run.input", "true"));
    let out = f.run(&["check", "wf.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn an_acceptance_rule_bomb_in_a_scenario_exits_2_naming_the_agent() {
    let f = Fixture::new();
    let text = format!(
        r#"name = "t"
capability = "code.test"
input = {{ workspace = "/tmp/w" }}
tasks = 1
[[agents]]
name = "tester"
[[agents.capabilities]]
name = "code.test"
input = "test-request"
output = "test-report"
accept = "{}{}{}"
"#,
        "(".repeat(100),
        "true",
        ")".repeat(100)
    );
    f.write("s.toml", &text);
    let out = f.run(&["sim", "s.toml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("s.toml") && err.contains("agents[0].capabilities[0]"),
        "{err}"
    );
}

#[test]
fn a_mapping_and_a_rule_at_the_limits_run_to_completion() {
    // MAX_NESTING levels of brackets holding the rest of the operator budget, in the
    // input mapping and in the transition: `muster run` (a debug build, on the main
    // thread) compiles and evaluates them without overflowing.
    let f = Fixture::new();
    let inner = sum(MAX_DEPTH - MAX_NESTING - 1);
    let mapping = format!(
        "{{'text': run.input.text, 'n': {}{inner}{}}}",
        "[".repeat(MAX_NESTING - 1),
        "]".repeat(MAX_NESTING - 1)
    );
    let when = format!("{} > 0", sum(MAX_DEPTH));
    f.write("wf.toml", &workflow(&mapping, &when));
    let out = f.run(&["check", "wf.toml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let out = f.run(&[
        "run",
        "wf.toml",
        "--input",
        r#"{"text": "hi"}"#,
        "--journal",
        "j.db",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", stderr(&out));
}

#[test]
fn every_cel_compile_goes_through_the_bounded_condition_compile() {
    // Only muster-core's conditions.rs may hand text to the cel crate's parser.
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("crates");
    let conditions = root.join("muster-core/src/conditions.rs");
    assert!(
        conditions.is_file(),
        "{} moved: update this test",
        conditions.display()
    );
    let mut stack = vec![root.clone()];
    let mut offenders = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") || p == conditions {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for needle in ["Program::", "cel::", "Parser::new", "Env::stdlib"] {
                if text.contains(needle) {
                    offenders.push(format!("{}: {needle}", p.display()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}
