//! `muster check`: the essay's three questions asked of a workflow and a cast before
//! anything runs. Each broken workflow yields a finding that names the step (exit 1); a
//! workflow file that cannot be read or compiled is bad input (exit 2) naming the file and
//! the step; the shipped example passes clean (exit 0).

use crate::support::cast::{Cast, function_agent};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

const BASE: &str = r#"
name = "t"
input = "req"
start = "one"

[steps.one]
capability = "do.echo"
input = "{'text': run.input.text}"
timeout = "10s"
attempts = 2
on_exhausted = "fail"
next = "two"

[steps.two]
capability = "do.echo"
input = "{'text': steps.one.output.text}"
timeout = "10s"
attempts = 2
on_exhausted = "fail"
next = [
  { when = "steps.two.output.text == 'again'", goto = "one", max_visits = 2 },
  { otherwise = true, goto = "done" },
]

[steps.done]
terminal = "done"
"#;

/// A temp dir with `actors/` (one function agent declaring `do.echo`), `schemas/` (the
/// shipped manifest and workflow schemas plus `req`) and the workflow file.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = Cast::new()
            .shipped_schemas(&["manifest", "workflow"])
            .schema(
                "req",
                r#"{"type": "object", "additionalProperties": false, "required": ["text"],
                "properties": {"text": {"type": "string"}, "note": {"type": "string"}}}"#,
            )
            .actor(
                "echo",
                &function_agent("echo", "do.echo", "req", "echo", "replicas = 2"),
            )
            .into_dir();
        Fixture { dir }
    }

    fn workflow(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("wf.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn check(&self, text: &str, json: bool) -> Output {
        let wf = self.workflow(text);
        let mut cmd = crate::support::common::muster();
        cmd.arg("check")
            .arg(&wf)
            .arg("--actors")
            .arg(self.dir.path().join("actors"))
            .arg("--schemas")
            .arg(self.dir.path().join("schemas"));
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("run muster")
    }

    /// Runs `check --json`, expects exit 1, returns the findings.
    fn findings(&self, text: &str) -> Vec<Value> {
        let out = self.check(text, true);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "expected findings; stdout: {stdout}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
        assert_eq!(doc["ok"], false);
        doc["findings"].as_array().cloned().unwrap_or_default()
    }
}

fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "fixture has {from:?}");
    BASE.replacen(from, to, 1)
}

/// Asserts one finding of `concern` at `step` whose message contains `needle`.
fn assert_finding(findings: &[Value], concern: &str, step: &str, needle: &str) {
    assert!(
        findings.iter().any(|f| f["concern"] == concern
            && f["step"] == step
            && f["message"].as_str().unwrap_or("").contains(needle)
            && f["file"].as_str().unwrap_or("").ends_with("wf.toml")),
        "no {concern} finding at `{step}` mentioning {needle:?} in {findings:#?}"
    );
}

#[test]
fn the_base_fixture_is_clean() {
    let f = Fixture::new();
    let out = f.check(BASE, true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["findings"], serde_json::json!([]));
}

#[test]
fn a_capability_no_agent_declares_is_a_discovery_finding() {
    let f = Fixture::new();
    let found = f.findings(&edit(
        "capability = \"do.echo\"\ninput = \"{'text': steps.one",
        "capability = \"do.translate\"\ninput = \"{'text': steps.one",
    ));
    assert_finding(&found, "discovery", "two", "do.translate");
}

#[test]
fn a_step_without_a_timeout_is_a_delegation_finding() {
    let f = Fixture::new();
    let found = f.findings(&edit(
        "timeout = \"10s\"\nattempts = 2\non_exhausted = \"fail\"\nnext = \"two\"",
        "attempts = 2\non_exhausted = \"fail\"\nnext = \"two\"",
    ));
    assert_finding(&found, "delegation", "one", "timeout");
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn a_back_edge_without_max_visits_is_a_delegation_finding() {
    let f = Fixture::new();
    let found = f.findings(&edit("goto = \"one\", max_visits = 2", "goto = \"one\""));
    assert_finding(&found, "delegation", "two", "max_visits");
    // A plain `next` that closes a loop has no place for a bound either.
    let found = f.findings(&edit(
        "next = [\n  { when = \"steps.two.output.text == 'again'\", goto = \"one\", max_visits = 2 },\n  { otherwise = true, goto = \"done\" },\n]",
        "next = \"one\"",
    ));
    assert_finding(&found, "delegation", "two", "nothing bounds the loop");
}

/// The base fixture with `two` going to a gate `review` (approve: `done`, reject: `one`).
fn with_review(two_next: &str) -> String {
    let wf = edit(
        "next = [\n  { when = \"steps.two.output.text == 'again'\", goto = \"one\", max_visits = 2 },\n  { otherwise = true, goto = \"done\" },\n]",
        two_next,
    );
    format!("{wf}\n[steps.review]\ngate = \"ship?\"\non_approve = \"done\"\non_reject = \"one\"\n")
}

#[test]
fn a_loop_through_a_gate_needs_a_bound_like_any_other() {
    let f = Fixture::new();
    let found = f.findings(&with_review("next = \"review\""));
    assert_finding(&found, "delegation", "review", "nothing bounds the loop");
    assert_finding(&found, "delegation", "review", "max_visits");
    // Bounded by a rule on the loop, the same workflow is clean.
    let bounded = with_review(
        "next = [\n  { when = \"true\", goto = \"review\", max_visits = 3 },\n  { otherwise = true, goto = \"done\" },\n]",
    );
    let out = f.check(&bounded, true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_workflow_that_can_only_fail_has_no_path_to_a_success_terminal() {
    let f = Fixture::new();
    // Every path ends in a `fail` terminal.
    let found = f.findings(&edit("terminal = \"done\"", "terminal = \"fail\""));
    assert_finding(
        &found,
        "delegation",
        "one",
        "no path reaches a success terminal",
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    // Every path goes through a gate back to an earlier step, or ends in `fail`.
    let wf = with_review("next = \"review\"")
        .replace("on_approve = \"done\"", "on_approve = \"one\"")
        .replace("on_reject = \"one\"", "on_reject = \"stop\"")
        .replace(
            "[steps.done]\nterminal = \"done\"",
            "[steps.stop]\nterminal = \"fail\"",
        );
    let found = f.findings(&wf);
    assert_finding(
        &found,
        "delegation",
        "one",
        "no path reaches a success terminal",
    );
    assert_finding(&found, "delegation", "review", "nothing bounds the loop");
    // As a user sees it: exit 1, the file, the step and the words.
    let out = f.check(&wf, false);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no path reaches a success terminal") && text.contains("wf.toml"),
        "{text}"
    );
}

#[test]
fn an_unreachable_step_is_a_delegation_finding() {
    let f = Fixture::new();
    let text = format!("{BASE}\n[steps.orphan]\nterminal = \"fail\"\n");
    let found = f.findings(&text);
    assert_finding(&found, "delegation", "orphan", "unreachable");
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn a_mapping_field_absent_from_the_source_schema_is_a_messaging_finding() {
    let f = Fixture::new();
    let found = f.findings(&edit("steps.one.output.text}", "steps.one.output.txet}"));
    assert_finding(&found, "messaging", "two", "steps.one.output.txet");
    // The same for the run input, and for a transition condition.
    let found = f.findings(&edit("run.input.text}", "run.input.body}"));
    assert_finding(&found, "messaging", "one", "`body`");
    let found = f.findings(&edit(
        "steps.two.output.text == 'again'",
        "steps.two.output.verdict == 'again'",
    ));
    assert_finding(&found, "messaging", "two", "next[0].when");
}

#[test]
fn a_mapping_that_misses_a_required_field_or_sets_a_forbidden_one_is_a_messaging_finding() {
    let f = Fixture::new();
    let found = f.findings(&edit(
        "{'text': steps.one.output.text}",
        "{'note': steps.one.output.text, 'extra': 1}",
    ));
    assert_finding(&found, "messaging", "two", "'text'");
    assert_finding(&found, "messaging", "two", "'extra'");
}

#[test]
fn a_condition_with_a_raw_string_is_read_past_the_string() {
    // `r'C:\'` is the string `C:\` (in a raw string a backslash escapes nothing; the TOML
    // below doubles it). A scanner that took `\'` for an escaped quote read the rest of the
    // condition as string contents and missed the misspelt field after it.
    let f = Fixture::new();
    let found = f.findings(&edit(
        "steps.two.output.text == 'again'",
        "steps.two.output.text == r'C:\\\\' || steps.two.output.verdict == 'again'",
    ));
    assert_finding(&found, "messaging", "two", "steps.two.output.verdict");
}

#[test]
fn reading_a_step_that_does_not_exist_is_a_messaging_finding() {
    let f = Fixture::new();
    let found = f.findings(&edit(
        "{'text': steps.one.output.text}",
        "{'text': steps.uno.output.text}",
    ));
    assert_finding(&found, "messaging", "two", "no step `uno`");
}

#[test]
fn a_dead_end_is_a_delegation_finding() {
    let f = Fixture::new();
    let found = f.findings(&edit(
        "on_exhausted = \"fail\"\nnext = \"two\"",
        "on_exhausted = \"fail\"",
    ));
    assert_finding(&found, "delegation", "one", "dead end");
    // A rule list with no way out when nothing holds is one too.
    let found = f.findings(&edit(
        "{ otherwise = true, goto = \"done\" }",
        "{ when = \"steps.two.output.text == 'ok'\", goto = \"done\" }",
    ));
    assert_finding(&found, "delegation", "two", "no transition applies");
}

#[test]
fn text_output_names_the_file_the_step_and_what_to_change() {
    let f = Fixture::new();
    let out = f.check(
        &edit(
            "attempts = 2\non_exhausted = \"fail\"\nnext = \"two\"",
            "on_exhausted = \"fail\"\nnext = \"two\"",
        ),
        false,
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("wf.toml: steps.one: delegation:"), "{text}");
    assert!(text.contains("add attempts = 3"), "{text}");
}

#[test]
fn the_shipped_example_passes_clean() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let out = crate::support::common::muster()
        .current_dir(root)
        .args(["check", "examples/code-review/workflow.toml", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let doc: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(doc["ok"], true);
}

/// Runs `check` on a bad file; expects exit 2 and returns stderr (text mode).
fn bad(f: &Fixture, text: &str) -> String {
    let out = f.check(text, false);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout {} stderr {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("wf.toml"), "names the file: {stderr}");
    stderr
}

#[test]
fn a_toml_syntax_error_is_bad_input() {
    let f = Fixture::new();
    let err = bad(&f, &edit("[steps.two]", "[steps.two"));
    assert!(err.contains("not valid TOML"), "{err}");
}

#[test]
fn a_goto_to_an_unknown_step_is_bad_input_naming_the_step() {
    let f = Fixture::new();
    let err = bad(&f, &edit("goto = \"done\"", "goto = \"finish\""));
    assert!(err.contains("steps.two") && err.contains("finish"), "{err}");
}

#[test]
fn a_supervision_table_is_refused_as_a_setting_that_does_nothing() {
    // Task owners are never restarted (a task is never run twice behind its owner's
    // back), so a per-workflow supervisor setting would configure nothing: the format
    // has no such field, and a file that sets it is told so instead of being ignored.
    let f = Fixture::new();
    let err = bad(
        &f,
        &edit(
            "start = \"one\"\n",
            "start = \"one\"\n[supervision]\nstrategy = \"one_for_all\"\n",
        ),
    );
    assert!(err.contains("supervision"), "{err}");
}

#[test]
fn invalid_cel_is_bad_input_naming_the_step() {
    let f = Fixture::new();
    let err = bad(
        &f,
        &edit("{'text': run.input.text}", "{'text': run.input.text"),
    );
    assert!(err.contains("steps.one"), "{err}");
}

#[test]
fn muster_run_refuses_a_workflow_with_findings() {
    let f = Fixture::new();
    let wf = f.workflow(&edit("goto = \"one\", max_visits = 2", "goto = \"one\""));
    let out = crate::support::common::muster()
        .arg("run")
        .arg(&wf)
        .args(["--input", r#"{"text": "hi"}"#, "--json"])
        .arg("--actors")
        .arg(f.dir.path().join("actors"))
        .arg("--schemas")
        .arg(f.dir.path().join("schemas"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let doc: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(doc["ok"], false);
    assert_finding(
        doc["findings"].as_array().unwrap(),
        "delegation",
        "two",
        "max_visits",
    );
    // The clean one runs to completion with the function agents.
    let wf = f.workflow(BASE);
    let out = crate::support::common::muster()
        .arg("run")
        .arg(&wf)
        .args(["--input", r#"{"text": "hi"}"#, "--json"])
        .arg("--actors")
        .arg(f.dir.path().join("actors"))
        .arg("--schemas")
        .arg(f.dir.path().join("schemas"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let doc: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(doc["status"], "completed");
}

const PARALLEL: &str = r#"
name = "t"
input = "req"
start = "both"

[steps.both]
parallel = ["left", "right"]
next = "done"

[steps.left]
capability = "do.echo"
timeout = "10s"
attempts = 2
on_exhausted = "fail"
scope = { write = ["src/user_service/**", "concept:UserService"], read = ["spec/**"] }

[steps.right]
capability = "do.echo"
timeout = "10s"
attempts = 2
on_exhausted = "fail"
scope = { write = ["src/*/service.py"], read = ["spec/**"] }

[steps.done]
terminal = "done"
"#;

#[test]
fn parallel_branches_whose_write_scopes_overlap_are_a_scope_finding() {
    let f = Fixture::new();
    let found = f.findings(PARALLEL);
    assert_finding(&found, "scope", "both", "`left` and `right`");
    assert_finding(&found, "scope", "both", "src/user_service/service.py");
    assert_finding(&found, "scope", "both", "serialise them");
    assert_eq!(found.len(), 1, "{found:#?}");
    // Disjoint scopes are clean; so is a branch that accepts waiting.
    for fixed in [
        PARALLEL.replace("src/*/service.py", "src/billing/**"),
        PARALLEL.replace(
            "scope = { write = [\"src/*/service.py\"]",
            "on_conflict = \"wait\"\nscope = { write = [\"src/*/service.py\"]",
        ),
    ] {
        let out = f.check(&fixed, true);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Two readers of the same files share.
    let readers = PARALLEL
        .replace(
            "write = [\"src/user_service/**\", \"concept:UserService\"], ",
            "",
        )
        .replace("write = [\"src/*/service.py\"], ", "");
    assert_eq!(f.check(&readers, true).status.code(), Some(0));
}

#[test]
fn a_concurrent_workflow_whose_step_writes_a_fixed_scope_is_a_scope_finding() {
    let f = Fixture::new();
    let text = BASE
        .replace("start = \"one\"", "start = \"one\"\nconcurrent = true")
        .replacen(
            "next = \"two\"",
            "next = \"two\"\nscope = { write = [\"out/report.md\"] }",
            1,
        );
    let found = f.findings(&text);
    assert_finding(&found, "scope", "one", "concurrent = true");
    assert_finding(&found, "scope", "one", "out/report.md");
    // Rendered from the input, the scope is not compared statically.
    let mapped = BASE
        .replace("start = \"one\"", "start = \"one\"\nconcurrent = true")
        .replacen(
            "next = \"two\"",
            "next = \"two\"\nscope = \"{'write': ['out/' + input.text + '.md']}\"",
            1,
        );
    assert_eq!(f.check(&mapped, true).status.code(), Some(0));
}
