//! Issue 27, "every bad input named at its root", through the built binary: a bad field
//! in a tagged section, a remote `$ref`, a bad `[[agents]]` value. Each exits 2 with one
//! message naming the file, the field and what is accepted.

use crate::support::common::muster;

fn dir_with(actor: &str, schema: (&str, &str)) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("actors")).unwrap();
    std::fs::create_dir_all(d.path().join("schemas")).unwrap();
    std::fs::write(
        d.path().join("schemas/any.schema.json"),
        r#"{"type":"object"}"#,
    )
    .unwrap();
    std::fs::write(d.path().join("schemas").join(schema.0), schema.1).unwrap();
    std::fs::write(d.path().join("actors/a.toml"), actor).unwrap();
    d
}

const ACTOR: &str = r#"
name = "a"
[[capabilities]]
name = "echo"
input = "any"
output = "any"
[backend]
kind = "command"
program = "cat"
"#;

fn agents(d: &tempfile::TempDir) -> (Option<i32>, String) {
    let out = muster()
        .arg("agents")
        .arg("--actors")
        .arg(d.path().join("actors"))
        .arg("--schemas")
        .arg(d.path().join("schemas"))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_backend_field_names_the_file_the_kind_what_it_accepts_and_a_guess() {
    let d = dir_with(
        &ACTOR.replace("program = \"cat\"", "programm = \"cat\""),
        ("b.schema.json", r#"{"type":"object"}"#),
    );
    let (code, err) = agents(&d);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "a.toml: /backend/programm: unknown field `programm` (for kind = \"command\"); \
             kind = \"command\" accepts: args, cwd, env, env_pass, kind, limits, mode, program; \
             did you mean `program`?"
        ),
        "{err}"
    );
    assert!(!err.contains("oneOf"), "no validator jargon: {err}");
    assert!(
        !err.contains("required property"),
        "the misspelling is the root: {err}"
    );
    // A wrong value type in the same section: the field, the type expected.
    let d = dir_with(
        &ACTOR.replace("program = \"cat\"", "program = 3"),
        ("b.schema.json", r#"{"type":"object"}"#),
    );
    let (code, err) = agents(&d);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("a.toml: /backend/program: expected a string, got 3 (for kind = \"command\")"),
        "{err}"
    );
}

#[test]
fn a_remote_schema_ref_names_the_schema_file_the_reference_and_how_to_vendor_it() {
    let d = dir_with(
        ACTOR,
        (
            "r.schema.json",
            r#"{"type":"object","properties":{"x":{"$ref":"https://example.com/x.json"}}}"#,
        ),
    );
    let (code, err) = agents(&d);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("r.schema.json: schema `r` refers to the remote URL"),
        "{err}"
    );
    assert!(err.contains("`https://example.com/x.json`"), "{err}");
    assert!(err.contains("remote references are not fetched"), "{err}");
    assert!(
        err.contains("save that schema as schemas/x.schema.json"),
        "{err}"
    );
    assert!(!err.contains("invalid schema `*`"), "{err}");
}

#[test]
fn a_wrong_agents_value_in_a_scenario_names_the_field_and_stops_there() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("s.toml");
    std::fs::write(
        &path,
        r#"
name = "bad"
capability = "code.test"
input = { workspace = "/tmp/w" }
tasks = 2
[[agents]]
name = "t"
latency = "fast"
[[agents.capabilities]]
name = "code.test"
input = "test-request"
output = "test-report"
"#,
    )
    .unwrap();
    let out = muster().arg("sim").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "s.toml: agents[0].latency: expected a table with `kind` = one of: fixed, uniform, \
             normal, lognormal, exponential; got \"fast\""
        ),
        "{err}"
    );
    assert!(!err.contains("untagged enum"), "{err}");
    assert!(
        !err.contains("no agent in [[agents]] serves"),
        "one root cause: {err}"
    );
}
