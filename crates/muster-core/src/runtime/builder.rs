//! The builder: what a runtime starts with (schemas, agents, journal, seed, settings).

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::oneshot;

use super::config::{RuntimeConfig, StartError};
use super::muster::Muster;
use super::tree;
use crate::agents::AgentDef;
use crate::clock::Clock;
use crate::ids::IdGen;
use crate::journal::{Journal, MemoryJournal, Recorder};
use crate::messaging::SchemaStore;
use crate::supervision::Supervision;

/// Builds a runtime.
///
/// # Example
/// ```no_run
/// # #[actix::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let muster = muster_core::Muster::builder().schemas_dir("schemas").start().await?;
/// # let _ = muster; Ok(()) }
/// ```
#[derive(Default)]
pub struct MusterBuilder {
    schemas_dir: Option<PathBuf>,
    schemas: Vec<(String, Value)>,
    agents: Vec<AgentDef>,
    supervision: Option<Supervision>,
    journal: Option<Arc<dyn Journal>>,
    seed: Option<u64>,
    config: RuntimeConfig,
}

impl std::fmt::Debug for MusterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let agents: Vec<&str> = self.agents.iter().map(|a| &*a.name).collect();
        f.debug_struct("MusterBuilder")
            .field("schemas_dir", &self.schemas_dir)
            .field("schemas", &self.schemas.len())
            .field("agents", &agents)
            .field("supervision", &self.supervision)
            .field("journal", &self.journal.is_some())
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl MusterBuilder {
    /// Loads every `*.schema.json` from this directory.
    pub fn schemas_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.schemas_dir = Some(dir.into());
        self
    }

    /// Adds one schema by name.
    pub fn schema(mut self, name: &str, doc: Value) -> Self {
        self.schemas.push((name.into(), doc));
        self
    }

    /// Registers an agent type at start.
    pub fn agent(mut self, def: AgentDef) -> Self {
        self.agents.push(def);
        self
    }

    /// The root supervisor's settings.
    pub fn supervision(mut self, s: Supervision) -> Self {
        self.supervision = Some(s);
        self
    }

    /// Where events go (default: in memory).
    pub fn journal(mut self, j: Arc<dyn Journal>) -> Self {
        self.journal = Some(j);
        self
    }

    /// Deterministic ids and a fixed clock origin (simulations, tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Runtime settings.
    pub fn config(mut self, c: RuntimeConfig) -> Self {
        self.config = c;
        self
    }

    /// How many shards (threads) the runtime runs on; see [`RuntimeConfig::shards`].
    ///
    /// # Example
    /// ```no_run
    /// # #[actix::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let m = muster_core::Muster::builder().shards(muster_core::shards::available()).start().await?;
    /// assert_eq!(m.shards(), muster_core::shards::available());
    /// # Ok(()) }
    /// ```
    pub fn shards(mut self, n: usize) -> Self {
        self.config.shards = n;
        self
    }

    /// Starts the runtime. Inside an actix system (`#[actix::main]`, `#[actix_rt::test]`)
    /// it runs on the current arbiter; elsewhere (`#[tokio::main]`) on a thread of its own.
    pub async fn start(self) -> Result<Muster, StartError> {
        if actix_rt::Arbiter::try_current().is_some() {
            return self.start_here().await;
        }
        let (tx, rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("muster-runtime".into())
            // As much stack as a CLI's main thread: CEL evaluation recurses up to the
            // depth `conditions` allows, which a debug build needs room for.
            .stack_size(8 << 20)
            .spawn(move || {
                let sys = actix::System::new();
                sys.block_on(async move {
                    match self.start_here().await {
                        Ok(m) => {
                            let mut stopped = m.inner.stopped.subscribe();
                            let _ = tx.send(Ok(m));
                            while stopped.borrow_and_update().is_none() {
                                if stopped.changed().await.is_err() {
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| StartError::Stopped(format!("cannot start the runtime thread: {e}")))?;
        drop(thread);
        rx.await
            .map_err(|_| StartError::Stopped("the runtime thread died at start".into()))?
    }

    async fn start_here(self) -> Result<Muster, StartError> {
        let schemas = Arc::new(SchemaStore::new());
        if let Some(dir) = &self.schemas_dir {
            schemas.load_dir(dir)?;
        }
        for (name, doc) in self.schemas {
            schemas.add(&name, doc)?;
        }
        let journal = self
            .journal
            .unwrap_or_else(|| Arc::new(MemoryJournal::default()));
        let clock = match self.seed {
            Some(_) => Clock::fixed(1_767_225_600_000), // 2026-01-01T00:00:00Z
            None => Clock::system(),
        };
        let ids = Arc::new(match self.seed {
            Some(s) => IdGen::seeded(s),
            None => IdGen::Random,
        });
        let shards = Arc::new(crate::shards::Shards::start(self.config.shards)?);
        let parts = tree::Parts {
            shards,
            schemas,
            recorder: Recorder::new(journal, clock),
            ids,
            config: self.config,
            root: self.supervision.unwrap_or_default(),
        };
        let muster = Muster {
            inner: Arc::new(tree::start(parts)),
        };
        for def in self.agents {
            muster.register(def).await?;
        }
        Ok(muster)
    }
}

impl Muster {
    /// A builder.
    pub fn builder() -> MusterBuilder {
        MusterBuilder::default()
    }
}
