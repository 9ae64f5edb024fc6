//! The supervision tree: the root supervisor and its children, wired with the narrow
//! handles each needs.
//!
//! ```text
//! root (one_for_one) ── registry          discovery        (Named: restarts keep the name)
//!                    ├─ router            routing          (Named)
//!                    ├─ agents (one_for_one) ── <agent type> (its manifest's strategy) ── <agent>#<i>
//!                    └─ owners            delegation: one owner per live task, in its shard's owner shard
//! ```
//!
//! Every handle is made before any actor runs (the named actors' mailboxes first), so each
//! child is given what it uses at construction and nothing is filled in later. The
//! supervisors, the registry and the router live on shard 0 (the runtime's thread); agent
//! instances are spread over the [`shards`](crate::shards) and each shard drives the owners
//! of the tasks submitted from it, so a task stays on one thread from submission to
//! completion where an instance of its capability lives there (a cross-thread round trip
//! costs tens of µs on the target machine).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use super::config::RuntimeConfig;
use super::extensions::Extensions;
use super::muster::Inner;
use crate::agents::group::GroupContext;
use crate::agents::host::{Delegate, DelegateError, SubTask};
use crate::agents::{AgentHost, Directory};
use crate::delegation::owners::OwnerSupervisor;
use crate::delegation::{NoOutput, Owners, Task};
use crate::discovery::{CapabilityIndex, Registry};
use crate::ids::IdGen;
use crate::journal::Recorder;
use crate::messaging::{DeadLetters, SchemaStore};
use crate::routing::{Router, RouterActor};
use crate::shards::Shards;
use crate::supervision::{
    ChildHandle, ChildSpec, Named, Restart, StopActor, Supervision, Supervisor, SupervisorHandle,
};

/// What the tree is built from.
pub(super) struct Parts {
    pub shards: Arc<Shards>,
    pub schemas: Arc<SchemaStore>,
    pub recorder: Recorder,
    pub ids: Arc<IdGen>,
    pub config: RuntimeConfig,
    pub root: Supervision,
}

/// Builds every handle, starts the root supervisor on the current arbiter (it starts its
/// children in order when it first runs) and returns the runtime's parts.
pub(super) fn start(p: Parts) -> Inner {
    let Parts {
        shards,
        schemas,
        recorder,
        ids,
        config,
        root,
    } = p;
    let index = Arc::new(CapabilityIndex::with_shards(shards.len()));
    let dead_letters = Arc::new(DeadLetters::with_capacity(config.dead_letters));
    let router = Router::new(
        schemas.clone(),
        index.clone(),
        recorder.clone(),
        ids.clone(),
        dead_letters.clone(),
    );
    let registry: Named<Registry> = Named::new();
    let router_actor: Named<RouterActor> = Named::new();
    let agents: Named<Supervisor> = Named::new();
    let owners = Arc::new(Owners::new(
        router.clone(),
        registry.clone(),
        config.grace,
        shards.clone(),
    ));
    let directory = {
        let registry = registry.clone();
        Directory::new(move |p| registry.get().do_send(p))
    };
    let group = GroupContext {
        directory,
        recorder: recorder.clone(),
        grace: config.grace,
        shards: shards.clone(),
    };
    let host = agent_host(&owners, &index, &agents);
    let (stopped, _) = watch::channel(None);
    let on_stop = stopped.clone();
    let root = Supervisor::new("root", root)
        .with_recorder(recorder.clone())
        .on_escalate(move |report| {
            let _ = on_stop.send(Some(report));
        })
        .child({
            let (registry, index, recorder) = (registry.clone(), index.clone(), recorder.clone());
            ChildSpec::new(
                "registry",
                Restart::Permanent,
                Duration::from_secs(5),
                move |link| {
                    let addr = registry.start(Registry::new(index.clone(), recorder.clone(), link));
                    Ok(Box::new(StopHandle(addr.recipient())) as Box<dyn ChildHandle>)
                },
            )
        })
        .child({
            let (named, router) = (router_actor.clone(), router.clone());
            ChildSpec::new(
                "router",
                Restart::Permanent,
                Duration::from_secs(5),
                move |link| {
                    let addr = named.start(RouterActor::new(router.clone(), link));
                    Ok(Box::new(StopHandle(addr.recipient())) as Box<dyn ChildHandle>)
                },
            )
        })
        .child({
            let (named, recorder) = (agents.clone(), recorder.clone());
            ChildSpec::new(
                "agents",
                Restart::Permanent,
                Duration::from_secs(30),
                move |link| {
                    let sup = Supervisor::new("agents", Supervision::default())
                        .with_recorder(recorder.clone())
                        .with_parent(link);
                    Ok(Box::new(SupervisorHandle(named.start(sup))) as Box<dyn ChildHandle>)
                },
            )
        })
        .child({
            let owners = owners.clone();
            ChildSpec::new(
                "owners",
                Restart::Permanent,
                Duration::from_secs(30),
                move |link| {
                    let addr = OwnerSupervisor::new(owners.clone(), link).start();
                    Ok(Box::new(StopHandle(addr.recipient())) as Box<dyn ChildHandle>)
                },
            )
        })
        .start();
    Inner {
        schemas,
        index,
        recorder,
        ids,
        dead_letters,
        router,
        owners,
        registry,
        router_actor,
        agents,
        group,
        host,
        config,
        stopped,
        root,
        arbiter: actix_rt::Arbiter::current(),
        shards,
        thread: std::thread::current().id(),
        extensions: Extensions::default(),
    }
}

/// What an agent type is lent at registration: the agents supervisor for services shared
/// by agent types (an LLM endpoint's provider), delegation of sub-tasks (an LLM agent's
/// tool calls, each a task of its own in the same run) and the declared input schemas.
fn agent_host(
    owners: &Arc<Owners>,
    index: &Arc<CapabilityIndex>,
    agents: &Named<Supervisor>,
) -> AgentHost {
    let delegate: Delegate = {
        let owners = owners.clone();
        Arc::new(move |sub: SubTask| {
            let mut task = Task::new(sub.capability, sub.input)
                .correlation(sub.correlation)
                .causation(sub.parent)
                .sender(sub.sender)
                .timeout(sub.timeout.max(Duration::from_millis(1)));
            task.effect_prefix = sub.effect_prefix.map(Arc::from);
            // Owned on the shard of the agent's thread.
            match owners.submit(task) {
                Err(e) => Box::pin(futures::future::ready(Err(DelegateError::Refused(
                    Box::new(e),
                )))),
                Ok(handle) => Box::pin(async move {
                    let outcome = handle.outcome().await;
                    match outcome.output {
                        // The agent owns what it is handed: a copy of the output the
                        // journal shares.
                        Some(v) => Ok(Arc::unwrap_or_clone(v)),
                        None => Err(DelegateError::Ended(Box::new(NoOutput(outcome)))),
                    }
                }),
            }
        })
    };
    let inputs = {
        let index = index.clone();
        Arc::new(move |capability: &str| {
            index.contract(capability).map(|c| c.input.document.clone())
        })
    };
    AgentHost::new(agents.clone(), delegate, inputs)
}

/// Stops a plain actor child (registry, router, owner supervisor) by asking it to stop.
struct StopHandle(Recipient<StopActor>);

impl ChildHandle for StopHandle {
    fn shutdown(&mut self) {
        self.0.do_send(StopActor);
    }

    fn kill(&mut self, _reason: &str) {
        self.0.do_send(StopActor);
    }
}
