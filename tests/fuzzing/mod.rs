//! The fuzz targets, shared by the bolero tests (`tests/fuzz_*.rs`, a short run inside
//! `cargo test`) and the libFuzzer targets of `fuzz/` (`cargo fuzz run -s none`, long
//! campaigns). Each target is a function of raw bytes that must not panic, hang or abort,
//! and checks an invariant of what it decoded; docs/fuzzing.md says how to run them.

#![allow(dead_code)]

pub mod arb;
pub mod cel;
pub mod envelope;
pub mod http;
pub mod journal;
pub mod llm;
pub mod loaders;
pub mod wire;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use muster::SchemaStore;

/// The repository root (the `fuzz/` crate's parent when built from there).
pub fn repo() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        // Built from `fuzz/` (one level down) or `crates/muster-cli` (two levels down).
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        dir.ancestors()
            .find(|d| d.join("schemas").is_dir())
            .map(Path::to_path_buf)
            .unwrap_or(dir)
    })
}

/// The shipped schemas, loaded once.
pub fn schemas() -> &'static Arc<SchemaStore> {
    static STORE: OnceLock<Arc<SchemaStore>> = OnceLock::new();
    STORE.get_or_init(|| {
        let s = SchemaStore::new();
        s.load_dir(repo().join("schemas"))
            .expect("the shipped schemas load");
        Arc::new(s)
    })
}

/// The schemas' property names and enum values (the loaders' vocabulary).
pub fn words() -> &'static [String] {
    static WORDS: OnceLock<Vec<String>> = OnceLock::new();
    WORDS.get_or_init(|| arb::schema_words(&repo().join("schemas")))
}

/// The text of the shipped files matching `dir/*.ext`, sorted by name.
pub fn seeds(dirs: &[&str], ext: &str) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(repo().join(d)) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == ext)
                    && let Ok(t) = std::fs::read_to_string(&p)
                {
                    out.push((p, t));
                }
            }
        }
    }
    out.sort();
    out
}

/// How long one input may run before the watchdog calls it a hang (and aborts the test,
/// printing the input). Not a timing assertion: every target takes micro- to milliseconds
/// per input; this only turns a hang into a failure instead of a stuck test.
/// `MUSTER_FUZZ_HANG_SECS` overrides it.
fn hang_limit() -> Duration {
    let secs = std::env::var("MUSTER_FUZZ_HANG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// The input being run, and since when.
type Current = Arc<Mutex<Option<(Instant, Vec<u8>)>>>;

/// One bolero run of a target: counts its inputs, reports them when done, and watches
/// each input for a hang.
pub struct Run {
    name: &'static str,
    start: Instant,
    count: AtomicU64,
    current: Current,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Run {
    /// Starts counting (and the watchdog) for the target called `name`.
    pub fn new(name: &'static str) -> Self {
        let current: Current = Arc::default();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, d) = (current.clone(), done.clone());
        let limit = hang_limit();
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let hung = match c.lock() {
                    Ok(g) => g
                        .as_ref()
                        .filter(|(t, _)| t.elapsed() > limit)
                        .map(|(_, input)| input.clone()),
                    Err(_) => None,
                };
                if let Some(input) = hung {
                    eprintln!(
                        "fuzz target {name}: one input ran over {limit:?} (a hang); input ({} bytes): {:?}",
                        input.len(),
                        String::from_utf8_lossy(&input)
                    );
                    eprintln!("input bytes: {input:?}");
                    std::process::abort();
                }
            }
        });
        Run {
            name,
            start: Instant::now(),
            count: AtomicU64::new(0),
            current,
            done,
        }
    }

    /// Runs `target` on one input.
    pub fn one(&self, data: &[u8], target: fn(&[u8])) {
        if let Ok(mut g) = self.current.lock() {
            *g = Some((Instant::now(), data.to_vec()));
        }
        target(data);
        if let Ok(mut g) = self.current.lock() {
            *g = None;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        let n = self.count.load(Ordering::Relaxed);
        let secs = self.start.elapsed().as_secs_f64();
        eprintln!(
            "fuzz target {}: {n} inputs in {secs:.1} s ({:.0}/s)",
            self.name,
            n as f64 / secs.max(1e-9)
        );
    }
}
