//! An error that echoes input quotes a bounded prefix of it, with its size: a 2 MiB value
//! that breaks its capability's schema, or that a CEL input mapping cannot use, gives a
//! `step_failed` record and a run report of a few hundred bytes, not 2 MiB.

use muster::journal::{Durability, Event, Journal, SqliteJournal};
use serde_json::Value;

use crate::support::common::{muster_cmd, output_within};
use crate::support::node::write_cast;

const SIZE: usize = 2 << 20;

fn workflow(name: &str, input: Option<&str>) -> String {
    let mapping = input
        .map(|m| format!("input = {m:?}\n"))
        .unwrap_or_default();
    format!(
        "name = \"{name}\"\ninput = \"obj\"\nstart = \"one\"\n\n[steps.one]\ncapability = \"strict\"\n\
         {mapping}timeout = \"10s\"\nattempts = 1\non_exhausted = \"fail\"\nnext = \"done\"\n\n\
         [steps.done]\nterminal = \"done\"\n"
    )
}

#[test]
fn a_huge_input_that_fails_is_quoted_by_a_bounded_prefix_with_its_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_cast(d, &["workflows"], 1);
    std::fs::write(
        d.join("schemas/needx.schema.json"),
        r#"{"type": "object", "required": ["x"], "properties": {"x": {"type": "integer"}}}"#,
    )
    .expect("schema");
    std::fs::write(
        d.join("actors/strict.toml"),
        "name = \"strict\"\n[[capabilities]]\nname = \"strict\"\ninput = \"needx\"\noutput = \"obj\"\n\
         [backend]\nkind = \"function\"\nname = \"echo\"\n",
    )
    .expect("manifest");
    std::fs::write(d.join("workflows/schema.toml"), workflow("schema", None)).expect("wf");
    std::fs::write(
        d.join("workflows/cel.toml"),
        workflow("cel", Some("{'x': run.input.x + 1}")),
    )
    .expect("wf");
    let big = serde_json::json!({"x": "y".repeat(SIZE)});
    std::fs::write(d.join("big.json"), big.to_string()).expect("input");
    for wf in ["schema", "cel"] {
        let journal = format!("{wf}.db");
        let mut cmd = muster_cmd(d);
        cmd.args([
            "run",
            &format!("workflows/{wf}.toml"),
            "--input",
            "@big.json",
            "--journal",
            &journal,
            "--json",
        ]);
        let out = output_within(120, cmd);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{wf}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The report quotes the value bounded.
        assert!(
            out.stdout.len() < 16 << 10,
            "{wf}: a report of {} bytes",
            out.stdout.len()
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
        assert_eq!(report["status"], "failed", "{report}");
        // The journal's step_failed record is small and says how large the value was.
        let j = SqliteJournal::open(d.join(&journal), Durability::Sync).expect("journal");
        let failed: Vec<String> = j
            .read_after(0)
            .into_iter()
            .filter_map(|r| match r.event {
                e @ Event::StepFailed { .. } => Some(serde_json::to_string(&e).expect("json")),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 1, "{wf}: {failed:?}");
        assert!(
            failed[0].len() < 4096,
            "{wf}: a record of {} bytes",
            failed[0].len()
        );
        if wf == "schema" {
            assert!(
                failed[0].contains(&format!("({} bytes)", SIZE + 2)),
                "{wf}: {}",
                failed[0]
            );
        }
    }
}
