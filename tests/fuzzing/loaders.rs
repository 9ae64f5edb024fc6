//! The file loaders: agent manifests (`muster agents`), workflows (`muster check`,
//! `muster run`) and scenarios (`muster sim`), from TOML text. Half the inputs are a
//! shipped file mutated line by line (so most get past the TOML parser and reach the
//! checks), the rest raw text.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use muster::CapabilitySpec;
use muster::cast::{Manifest, load_cast};
use muster::scenario::{Scenario, Target};
use muster::workflow::{Workflow, check};

use super::arb::{Bytes, mutate_toml};
use super::{repo, schemas, seeds, words};

/// The document under test: raw bytes (lossy UTF-8) or a mutated seed.
fn document(b: &mut Bytes, seeds: &[(PathBuf, String)]) -> String {
    if seeds.is_empty() || b.u8() < 64 {
        return String::from_utf8_lossy(b.rest()).into_owned();
    }
    let (_, seed) = &seeds[b.below(seeds.len())];
    mutate_toml(seed, b, words())
}

fn manifest_seeds() -> &'static [(PathBuf, String)] {
    static SEEDS: OnceLock<Vec<(PathBuf, String)>> = OnceLock::new();
    SEEDS.get_or_init(|| seeds(&["actors", "examples/scenarios/sim-actors"], "toml"))
}

thread_local! {
    /// A scratch folder per thread: `Manifest::load` reads a file.
    static SCRATCH: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

/// Environment overrides (`MUSTER_<NAME>__<FIELD>`), as `muster agents` reads them.
fn env_overrides(b: &mut Bytes) -> config::Map<String, String> {
    const KEYS: &[&str] = &[
        "MUSTER_TESTER__REPLICAS",
        "MUSTER_TESTER__CONCURRENCY",
        "MUSTER_TESTER__LIVENESS",
        "MUSTER_TESTER__BACKEND__KIND",
        "MUSTER_TESTER__BACKEND__PROGRAM",
        "MUSTER_TESTER__SUPERVISION__INTENSITY",
        "MUSTER_TESTER__CAPABILITIES",
        "MUSTER_REVIEWER__MAILBOX",
        "MUSTER_REVIEWER__RESTART",
        "MUSTER_IMPLEMENTER__BACKEND__MODE",
        "MUSTER_FLAKY_TESTER__REPLICAS",
        "MUSTER_TESTER__NAME",
        "MUSTER_TESTER__",
        "MUSTER_TESTER____X",
    ];
    const VALUES: &[&str] = &[
        "0",
        "1",
        "-1",
        "2",
        "true",
        "x",
        "",
        "30s",
        "oneshot",
        "sim",
        "function",
        "[]",
        "18446744073709551616",
        "1.5",
        "nan",
    ];
    let mut env = config::Map::new();
    if b.u8() < 224 {
        return env;
    }
    for _ in 0..=b.below(2) {
        env.insert(b.pick(KEYS).to_string(), b.pick(VALUES).to_string());
    }
    env
}

/// A manifest, through `Manifest::load` (the path `muster agents` takes), then `to_def`.
/// Invariants: every error names the file and a field (a `/` pointer) and says something;
/// a manifest that loads has at least one replica, one slot and one capability, and turns
/// into an agent definition.
pub fn manifest(data: &[u8]) {
    let mut b = Bytes::new(data);
    let text = document(&mut b, manifest_seeds());
    let env = env_overrides(&mut b);
    let path = SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let dir = s.get_or_insert_with(|| tempfile::tempdir().expect("a scratch folder"));
        dir.path().join("agent.toml")
    });
    std::fs::write(&path, text.as_bytes()).expect("write the manifest");
    match Manifest::load(&path, schemas(), Some(env)) {
        Ok(m) => {
            assert!(m.replicas >= 1 && m.concurrency >= 1, "{m:?}");
            assert!(!m.capabilities.is_empty(), "{m:?}");
            if let Err(e) = m.to_def(schemas()) {
                panic!("a manifest that loads must make an agent definition: {e}\n{text}");
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "an error without a problem\n{text}");
            for e in &errors {
                assert_eq!(e.file, path, "{e}");
                assert!(
                    e.field.starts_with('/'),
                    "field {:?} of {e}\n{text}",
                    e.field
                );
                assert!(!e.message.trim().is_empty(), "{e:?}\n{text}");
                assert!(e.to_string().contains(&path.display().to_string()));
            }
        }
    }
}

fn workflow_seeds() -> &'static [(PathBuf, String)] {
    static SEEDS: OnceLock<Vec<(PathBuf, String)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut s = seeds(&["examples/code-review"], "toml");
        s.push((
            PathBuf::from("inline"),
            "name = \"w\"\nstart = \"a\"\n[steps.a]\ncapability = \"code.test\"\ninput = \"run.input\"\ntimeout = \"5s\"\nattempts = 2\non_exhausted = \"g\"\nnext = [{ when = \"output.total > 0\", goto = \"done\" }, { otherwise = true, goto = \"a\", max_visits = 2 }]\n[steps.g]\ngate = \"ok?\"\non_approve = \"done\"\non_reject = \"failed\"\n[steps.p]\nparallel = [\"a\"]\noptional = [\"a\"]\nnext = \"done\"\n[steps.done]\nterminal = \"done\"\n[steps.failed]\nterminal = \"fail\"\n".into(),
        ));
        s
    })
}

/// The capabilities of the shipped cast (what `muster check` checks a workflow against).
fn cast() -> &'static [CapabilitySpec] {
    static CAST: OnceLock<Vec<CapabilitySpec>> = OnceLock::new();
    CAST.get_or_init(|| {
        load_cast(&repo().join("actors"), schemas())
            .expect("the shipped cast loads")
            .into_iter()
            .flat_map(|(_, m)| m.capabilities)
            .collect()
    })
}

/// A workflow, through `Workflow::parse` then `muster check`'s analysis. Invariants: every
/// error names the file and where; a workflow that parses starts at one of its steps, and
/// every step it can go to is one of its steps; the check's findings name the workflow.
pub fn workflow(data: &[u8]) {
    let mut b = Bytes::new(data);
    let text = document(&mut b, workflow_seeds());
    let path = Path::new("fuzz/workflow.toml");
    match Workflow::parse(&text, path, schemas()) {
        Ok(wf) => {
            assert!(wf.steps.contains_key(&wf.start), "{text}");
            for (name, step) in &wf.steps {
                for t in step.targets() {
                    assert!(wf.steps.contains_key(t), "{name} -> {t}\n{text}");
                }
            }
            for f in check(&wf, cast(), schemas()) {
                let _ = f.to_string();
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "an error without a problem\n{text}");
            for e in &errors {
                assert_eq!(e.file, path, "{e}");
                assert!(!e.at.is_empty(), "{e:?}\n{text}");
                assert!(!e.message.trim().is_empty(), "{e:?}\n{text}");
            }
        }
    }
}

fn scenario_seeds() -> &'static [(PathBuf, String)] {
    static SEEDS: OnceLock<Vec<(PathBuf, String)>> = OnceLock::new();
    SEEDS.get_or_init(|| seeds(&["examples/scenarios"], "toml"))
}

/// A scenario, through `Scenario::parse` (as if it were in `examples/scenarios/`, so its
/// relative paths reach the shipped workflow). Invariants: every error names a file and a
/// field; a scenario that parses has at least one task or run, one attempt and one agent,
/// its bare capability is served by its cast, and its faults are in time order.
pub fn scenario(data: &[u8]) {
    let mut b = Bytes::new(data);
    let text = document(&mut b, scenario_seeds());
    let path = repo().join("examples/scenarios/fuzz.toml");
    match Scenario::parse(&text, &path, schemas()) {
        Ok(s) => {
            assert!(s.count >= 1 && s.attempts >= 1, "{text}");
            assert!(!s.agents.is_empty(), "{text}");
            assert!(!s.timeout.is_zero() && !s.horizon.is_zero(), "{text}");
            assert!(
                s.faults.windows(2).all(|w| w[0].at() <= w[1].at()),
                "{text}"
            );
            if let Target::Capability { name, .. } = &s.target {
                assert!(
                    s.agents
                        .iter()
                        .any(|a| a.capabilities.iter().any(|c| &c.name == name)),
                    "{text}"
                );
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "an error without a problem\n{text}");
            for e in &errors {
                assert!(!e.field.is_empty(), "{e:?}\n{text}");
                assert!(!e.message.trim().is_empty(), "{e:?}\n{text}");
                assert!(!e.file.as_os_str().is_empty(), "{e:?}");
            }
        }
    }
}
