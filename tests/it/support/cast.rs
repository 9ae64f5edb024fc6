//! A cast in a temporary directory, written the way a user lays one out: `actors/` with a
//! manifest per agent, `schemas/` with a JSON Schema per name, and any other file (an agent
//! program, a workflow) at a path of its own. Every test that runs `muster` on a cast of
//! its own builds it here, so the layout is written once.
//!
//! ```ignore
//! let cast = Cast::new()
//!     .schema("obj", OBJECT)
//!     .file("agent.py", AGENT)
//!     .actor("worker", &command_agent("worker", "work", "obj", &["agent.py"], "stdio"))
//!     .file("wf.toml", &one_step_workflow("t", "obj", "work", "10s", 1));
//! let out = muster_within(30, &["run", "wf.toml"], cast.path());
//! ```

#![allow(dead_code)]

use std::path::Path;

use tempfile::TempDir;

/// The schema every object fits (`{"type": "object"}`, draft 2020-12).
pub const OBJECT: &str =
    r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}"#;

/// A temporary directory holding a cast; removed when dropped.
pub struct Cast {
    dir: TempDir,
}

impl Cast {
    /// An empty cast: a temporary directory with `actors/` and `schemas/`.
    pub fn new() -> Cast {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for sub in ["actors", "schemas"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("a cast directory");
        }
        Cast { dir }
    }

    /// Writes `schemas/NAME.schema.json`.
    pub fn schema(self, name: &str, text: &str) -> Cast {
        self.file(&format!("schemas/{name}.schema.json"), text)
    }

    /// Copies the shipped `schemas/NAME.schema.json` of each of `names` (e.g. `manifest`,
    /// `workflow`) from the repository.
    pub fn shipped_schemas(self, names: &[&str]) -> Cast {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        for name in names {
            let file = format!("{name}.schema.json");
            std::fs::copy(
                root.join("schemas").join(&file),
                self.dir.path().join("schemas").join(&file),
            )
            .unwrap_or_else(|e| panic!("copying the shipped schema {file}: {e}"));
        }
        self
    }

    /// Writes `actors/FILE.toml`.
    pub fn actor(self, file: &str, manifest: &str) -> Cast {
        self.file(&format!("actors/{file}.toml"), manifest)
    }

    /// Writes `text` at `rel` (its directories made first).
    pub fn file(self, rel: &str, text: &str) -> Cast {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("the file's directory");
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self
    }

    /// The cast's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `rel` inside the cast, as a string (for a manifest's `args`).
    pub fn at(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    /// The directory itself, which the caller then owns.
    pub fn into_dir(self) -> TempDir {
        self.dir
    }
}

/// A command agent's manifest: agent `name` serving `capability` (input and output both
/// `schema`), running `program ARGS` in `mode` (`"stdio"` or `"oneshot"`); `extra` lines
/// go before `[[capabilities]]` (e.g. `"replicas = 2"`).
pub fn command_agent(
    name: &str,
    capability: &str,
    schema: &str,
    program: &str,
    args: &[&str],
    mode: &str,
    extra: &str,
) -> String {
    format!(
        "name = {name:?}\n{extra}\n[[capabilities]]\nname = {capability:?}\ninput = {schema:?}\n\
         output = {schema:?}\n[backend]\nkind = \"command\"\nprogram = {program:?}\nargs = {args:?}\n\
         mode = {mode:?}\n"
    )
}

/// A function agent's manifest: agent `name` running the built-in function `builtin`
/// (e.g. `"echo"`) for `capability` (input and output both `schema`); `extra` lines go
/// before `[[capabilities]]` (e.g. `"replicas = 2"`).
pub fn function_agent(
    name: &str,
    capability: &str,
    schema: &str,
    builtin: &str,
    extra: &str,
) -> String {
    format!(
        "name = {name:?}\n{extra}\n[[capabilities]]\nname = {capability:?}\ninput = {schema:?}\n\
         output = {schema:?}\n[backend]\nkind = \"function\"\nname = {builtin:?}\n"
    )
}

/// A workflow `name` of one step `one` on `capability` (run input `schema`), bounded by
/// `timeout` and `attempts`, failing the run when they are spent; it ends `done`.
pub fn one_step_workflow(
    name: &str,
    schema: &str,
    capability: &str,
    timeout: &str,
    attempts: u32,
) -> String {
    format!(
        "name = {name:?}\ninput = {schema:?}\nstart = \"one\"\n\n[steps.one]\n\
         capability = {capability:?}\ntimeout = {timeout:?}\nattempts = {attempts}\n\
         on_exhausted = \"fail\"\nnext = \"done\"\n\n[steps.done]\nterminal = \"done\"\n"
    )
}

/// The path of a program under `tests/fixtures/agents/`, as a string.
pub fn fixture_agent(file: &str) -> String {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("tests/fixtures/agents")
        .join(file)
        .display()
        .to_string()
}
