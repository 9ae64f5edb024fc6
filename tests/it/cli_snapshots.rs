//! What a person reads in a terminal, pinned by snapshots (insta): `muster run` of the
//! shipped code-review example (each step's verdict in words, each loop back with its
//! bound, the summary table), a cast whose names are long (`muster run` and `muster
//! inspect --run latest`: columns sized to their content), and the same run through
//! `muster run --server` (the same per-step lines, read from the node).
//!
//! Ids, times and durations differ between runs and are replaced by placeholders before
//! the comparison; everything else is compared as printed. `INSTA_UPDATE=always cargo test
//! --release --test it -- cli_snapshots::` rewrites the snapshots after an intended change
//! (review them with `git diff`).

use std::path::Path;

use crate::support::cast::Cast;
use crate::support::common::muster;
use crate::support::node;

/// Placeholders for what changes between runs.
fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[id]",
        ),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[time]"),
        (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?", "[time]"),
        // Right-aligned durations: the padding goes with the number.
        (r" +\d+ ms\b", " [n] ms"),
        // A lease's span, padded to a fixed width: the padding goes with it.
        (
            r"\+\d+(\.\d+)?(ms|s|m|h)\.\.\+\d+(\.\d+)?(ms|s|m|h) +",
            "[span] ",
        ),
        // The lease table's header: the span column is as wide as its spans.
        (r"span +outcome", "span  outcome"),
        // Durations, right-aligned in their columns: the padding goes with them.
        (r" *\+?\b\d+(\.\d+)?(ms|s|m|h)\b", " [dur]"),
        (r"/tmp/[A-Za-z0-9._/-]+", "[tmp]"),
        (r"http://127\.0\.0\.1:\d+", "[node]"),
    ]
}

/// Compares `text` with the snapshot `name`, placeholders in.
fn check(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    for (pattern, with) in filters() {
        settings.add_filter(pattern, with);
    }
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(name, text));
}

/// Runs `muster ARGS` in `dir` (60 s at most); its stdout, after checking it exited
/// with `code`.
fn stdout_of(dir: &Path, args: &[&str], env: &[(&str, &str)], code: i32) -> String {
    let mut cmd = muster();
    cmd.current_dir(dir).args(args).env_remove("MUSTER_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = crate::support::common::output_within(60, cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "muster {args:?}\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_code_review_example_says_why_it_went_back_to_implement() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let text = stdout_of(root, &["run", "examples/code-review/workflow.toml"], &[], 0);
    // The verdicts and the loop lines are what this is about; checked outright too, so
    // that a snapshot accepted by mistake cannot hide them.
    assert!(
        text.contains("→ back to implement (visit 2 of 3)"),
        "{text}"
    );
    assert!(
        text.contains("→ back to implement (visit 3 of 3)"),
        "{text}"
    );
    assert!(text.contains("— failed "), "{text}");
    // Which tester instance takes which round depends on the pick's rotation and on the
    // flaky tester's crash: the snapshot keeps each step's name and verdict and the loop
    // lines, in order (the summary table's layout is pinned by the long-name snapshots).
    let story: Vec<String> = text
        .lines()
        .take_while(|l| !l.is_empty())
        .skip(1)
        .map(|l| match l.split_once(" — ") {
            Some((head, verdict)) => format!(
                "{} — {verdict}",
                head.split_whitespace().next().unwrap_or_default()
            ),
            None => l.trim().to_string(),
        })
        .collect();
    check("code_review_story", &story.join("\n"));
}

/// A cast with long names everywhere: agent types, capabilities with a `/`, a workflow
/// called `code-change-gated-and-then-some`.
fn long_cast() -> Cast {
    let agent = |name: &str, capability: &str| {
        format!(
            "name = {name:?}\n[[capabilities]]\nname = {capability:?}\ninput = \"any\"\n\
             output = \"any\"\n[backend]\nkind = \"function\"\nname = \"echo\"\n"
        )
    };
    let workflow = r#"
name = "code-change-gated-and-then-some"
input = "any"
start = "implement-the-whole-change"

[steps.implement-the-whole-change]
capability = "code-change.implement-everything"
input = "run.input"
timeout = "30s"
attempts = 2
on_exhausted = "fail"
next = "check-the-whole-change"

[steps.check-the-whole-change]
capability = "code-change.check-everything-twice"
input = "steps['implement-the-whole-change'].output"
timeout = "30s"
attempts = 2
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"
"#;
    Cast::new()
        .schema("any", r#"{"type":"object"}"#)
        .actor(
            "implementer",
            &agent(
                "implementer-of-very-long-changes",
                "code-change.implement-everything",
            ),
        )
        .actor(
            "checker",
            &agent(
                "checker-with-an-even-longer-name",
                "code-change.check-everything-twice",
            ),
        )
        .file("workflows/long.toml", workflow)
        .file(
            "input.json",
            r#"{"failed": 0, "passed": 12, "files": ["src/parser.rs", "src/lexer.rs", "README.md"]}"#,
        )
}

#[test]
fn long_names_keep_the_run_summary_and_inspect_tables_aligned() {
    let cast = long_cast();
    let d = cast.path();
    let run = stdout_of(
        d,
        &[
            "run",
            "workflows/long.toml",
            "--input",
            "@input.json",
            "--journal",
            "j.db",
        ],
        &[],
        0,
    );
    check("long_names_run", &run);
    let inspect = stdout_of(
        d,
        &["inspect", "--journal", "j.db", "--run", "latest"],
        &[],
        0,
    );
    assert!(inspect.contains("step_completed"), "{inspect}");
    check("long_names_inspect", &inspect);
    let runs = stdout_of(d, &["inspect", "--journal", "j.db"], &[], 0);
    assert!(
        runs.contains("1 run\n") && !runs.contains("1 runs"),
        "{runs}"
    );
    check("long_names_runs", &runs);
}

#[test]
fn a_run_on_a_node_prints_the_same_step_lines_as_a_local_run() {
    const TOKEN: &str = "snapshot-token-0123456789abcdef";
    let cast = long_cast();
    let d = cast.path();
    let node = node::serve(d, &[], &[("MUSTER_TOKEN", TOKEN)]);
    let text = stdout_of(
        d,
        &[
            "run",
            "workflows/long.toml",
            "--input",
            "@input.json",
            "--server",
            &node.url,
        ],
        &[("MUSTER_TOKEN", TOKEN)],
        0,
    );
    assert!(
        text.contains("implement-the-whole-change") && text.contains("— failed 0"),
        "{text}"
    );
    check("long_names_server_run", &text);
}
