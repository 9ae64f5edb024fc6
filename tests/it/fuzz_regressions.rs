//! What the fuzz targets found (docs/fuzzing.md), one test each, named after what it
//! proves.

use std::path::Path;
use std::process::Command;

use muster::journal::sqlite::read_journal;
use muster::journal::{Durability, Event, Journal, SqliteJournal};
use muster::scenario::Scenario;
use muster::{Condition, SchemaStore};
use serde_json::json;

fn schemas() -> SchemaStore {
    let s = SchemaStore::new();
    s.load_dir(concat!(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../.."),
        "/schemas"
    ))
    .expect("the shipped schemas load");
    s
}

/// Runs `body` in a child process (this test binary, re-run on `name` alone), on a thread
/// with a 2 MiB stack (a tokio worker's, a test thread's): a stack overflow aborts the
/// process, and this way it fails the test instead of killing the whole run.
fn on_2_mib_stack_in_a_child(name: &str, body: fn()) {
    if std::env::var_os("MUSTER_REGRESSION_CHILD").is_some() {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(body)
            .expect("spawn")
            .join()
            .expect("the body passes");
        return;
    }
    // The test's full name in the one test binary: `fuzz_regressions::NAME`.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let full = format!("{module}::{name}");
    let out = Command::new(std::env::current_exe().expect("the test binary"))
        .args([&full, "--exact", "--include-ignored", "--nocapture"])
        .env("MUSTER_REGRESSION_CHILD", "1")
        .output()
        .expect("run the child");
    assert!(
        out.status.success(),
        "{name} failed in its child process ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains("overflow") || l.contains("panicked"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    // A name that matches no test would pass vacuously: the child must have run it.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{full}: the child process ran no test named so"
    );
}

/// `read_journal(path, after)` with an `after` past `i64::MAX` cast it to a negative
/// SQLite integer and returned every record (found by `journal_file_reading`).
#[test]
fn reading_a_journal_after_a_seq_past_i64_max_returns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let j = SqliteJournal::open(&path, Durability::Relaxed).unwrap();
    j.append(0, Event::Note { text: "x".into() });
    j.flush().unwrap();
    j.close().unwrap();
    drop(j);
    assert_eq!(read_journal(&path, 0).unwrap().len(), 1);
    assert_eq!(read_journal(&path, i64::MAX as u64).unwrap().len(), 0);
    assert_eq!(read_journal(&path, i64::MAX as u64 + 1).unwrap().len(), 0);
    assert_eq!(read_journal(&path, u64::MAX).unwrap().len(), 0);
}

/// The envelope schema accepted an `attempt` past `u32::MAX` and an `epoch`,
/// `created_at` or `deadline` past `u64::MAX`, which the runtime cannot decode (found by
/// `envelope_decoding`).
#[test]
fn the_envelope_schema_accepts_only_numbers_the_runtime_can_decode() {
    let store = schemas();
    let env = json!({
        "id": "0198f1c2-7d6e-7a3b-9c4d-5e6f7a8b9c0d",
        "correlation_id": "0198f1c2-7d6e-7a3b-9c4d-5e6f7a8b9c0d",
        "causation_id": null,
        "topic": "t",
        "sender": "s",
        "recipient": {"kind": "agent", "name": "a#0"},
        "schema": "p",
        "payload": {},
        "attempt": u64::from(u32::MAX),
        "epoch": u64::MAX,
        "created_at": u64::MAX,
        "deadline": u64::MAX
    });
    assert!(store.validate("envelope", &env).is_ok());
    assert!(serde_json::from_value::<muster::Envelope>(env.clone()).is_ok());
    let mut over = env.clone();
    over["attempt"] = json!(u64::from(u32::MAX) + 1);
    assert!(store.validate("envelope", &over).is_err());
    assert!(serde_json::from_value::<muster::Envelope>(over).is_err());
    for key in ["epoch", "created_at", "deadline"] {
        let mut over = env.clone();
        over[key] = json!(18_446_744_073_709_551_616.0);
        assert!(store.validate("envelope", &over).is_err(), "{key}");
        assert!(serde_json::from_value::<muster::Envelope>(over).is_err());
    }
}

/// An unknown key that is empty (`"" = 0`) in a scenario gave an error whose field is
/// empty, so the message names no field (found by `scenario_loader`: `Scenario::parse`
/// takes the field from between the backquotes of "unknown field ``").
#[test]
fn an_unknown_empty_key_in_a_scenario_names_a_field() {
    let errors = Scenario::parse("\"\" = 0\n", Path::new("s.toml"), &schemas()).unwrap_err();
    for e in &errors {
        assert!(!e.field.is_empty(), "{e:?}");
    }
}

/// A left-associative chain of 2,000 additions (`1 + 1 + ... + 1`, 8 kB) compiles, but
/// evaluating it recurses once per term (`cel::objects::Value::resolve_val`,
/// objects.rs:1156) and overflows a 2 MiB stack: the process aborts (found by
/// `cel_compile_and_evaluate`, release build). A workflow `when`/`input` or a manifest's
/// `accept` rule is such an expression.
#[test]
fn a_long_operator_chain_evaluates_without_overflowing_the_stack() {
    on_2_mib_stack_in_a_child(
        "a_long_operator_chain_evaluates_without_overflowing_the_stack",
        || {
            let src = format!("1{}", " + 1".repeat(2000));
            if let Ok(c) = Condition::compile(&src) {
                let _ = c.eval_json(&[]);
            }
        },
    );
}

/// A chain of 20,000 additions (80 kB) overflows a 2 MiB stack while compiling: the CEL
/// parser's visitor recurses once per term (`cel::parser::parser::Parser::visit_calc`,
/// parser.rs:846).
#[test]
fn a_very_long_operator_chain_compiles_without_overflowing_the_stack() {
    on_2_mib_stack_in_a_child(
        "a_very_long_operator_chain_compiles_without_overflowing_the_stack",
        || {
            let src = format!("1{}", " + 1".repeat(20_000));
            let _ = Condition::compile(&src);
        },
    );
}

/// In a debug build, 16 nested parentheses overflow a 2 MiB stack in the CEL parser
/// (antlr4rust's generated `expr`/`primary` rules); a release build takes the parser's
/// own limit (96) in its stride. `cargo test` (debug) runs on 2 MiB test threads.
#[test]
fn nested_parentheses_compile_without_overflowing_the_stack_in_debug_builds() {
    on_2_mib_stack_in_a_child(
        "nested_parentheses_compile_without_overflowing_the_stack_in_debug_builds",
        || {
            let src = format!("{}1{}", "(".repeat(16), ")".repeat(16));
            assert!(Condition::compile(&src).is_ok());
        },
    );
}

/// Found by `cluster_wire_messages`: a heartbeat whose instance is empty was read, though
/// `cluster-beat.schema.json` refuses it. Every message from a peer is now read against
/// its schema first.
#[test]
fn a_heartbeat_its_schema_refuses_is_not_read() {
    use muster::cluster::wire::{BeatMsg, decode};
    let task = "01900000-0000-7000-8000-000000000001";
    let empty = format!(r#"{{"instance":"","task_id":"{task}","epoch":2}}"#);
    let e = decode::<BeatMsg>(empty.as_bytes()).expect_err("refused");
    assert_eq!(e.schema, "cluster-beat");
    assert!(e.to_string().contains("/instance"), "{e}");
    let good = format!(r#"{{"instance":"echo#0@w1","task_id":"{task}","epoch":2}}"#);
    assert_eq!(decode::<BeatMsg>(good.as_bytes()).map(|b| b.epoch), Ok(2));
}

/// Found by `cluster_wire_messages`: an assignment whose envelope broke
/// `envelope.schema.json` (a list for `causation_id`) passed the assignment's schema; the
/// envelope is now checked against its own.
#[test]
fn an_assignment_whose_envelope_breaks_its_schema_is_refused() {
    use muster::cluster::wire::{AssignMsg, decode};
    let id = "01900000-0000-7000-8000-000000000001";
    let assign = |causation: &str| {
        format!(
            r#"{{"instance":"echo#0","timeout_ms":1000,"report_to":"r","beat_to":"b","alive_every_ms":375,"effect_to":"e",
            "envelope":{{"id":"{id}","correlation_id":"{id}","causation_id":{causation},"topic":"echo",
            "sender":"anonymous","recipient":{{"kind":"agent","name":"echo#0"}},"schema":"in",
            "payload":{{"x":1}},"attempt":1,"epoch":2,"created_at":1,"task_id":"{id}"}}}}"#
        )
    };
    let e = decode::<AssignMsg>(assign(r#"["hop"]"#).as_bytes()).expect_err("refused");
    assert!(e.to_string().contains("at /envelope"), "{e}");
    let ok = decode::<AssignMsg>(assign(&format!("\"{id}\"")).as_bytes());
    assert!(ok.is_ok(), "{ok:?}");
}

/// Found by `cluster_wire_messages`: `cluster-report.schema.json` accepted any `detail`
/// for any failure and left out `no_capable_agent`, so a report the schema allowed could
/// not be read and one the control node sends was outside it. The schema now says what
/// the control node reads.
#[test]
fn a_report_is_read_exactly_when_its_schema_accepts_it() {
    use muster::cluster::wire::{ReportMsg, decode, schemas};
    let report = |err: &str| {
        format!(
            r#"{{"task_id":"01900000-0000-7000-8000-000000000001","epoch":2,"instance":"echo#0@w1","result":{{"Err":{err}}}}}"#
        )
    };
    for (err, read) in [
        (r#"{"reason":"agent_gone","detail":{"x":1}}"#, false),
        (r#"{"reason":"agent_gone","detail":"gone"}"#, true),
        (
            r#"{"reason":"no_capable_agent","detail":"nobody left"}"#,
            true,
        ),
        (r#"{"reason":"timeout"}"#, true),
        (
            r#"{"reason":"contract_violation","detail":{"schema":"out","errors":[]}}"#,
            true,
        ),
    ] {
        let text = report(err);
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            schemas().validate("cluster-report", &v).is_ok(),
            read,
            "the schema on {err}"
        );
        assert_eq!(decode::<ReportMsg>(text.as_bytes()).is_ok(), read, "{err}");
    }
}
