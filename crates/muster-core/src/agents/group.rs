//! An agent type's group: the supervisor of its instances, started as one child of the
//! runtime's `agents` supervisor. An agent type past its restart intensity drops out
//! (the group is `temporary`) rather than being restarted whole, and the registry is told
//! so ([`Presence::Gone`]): owners waiting for its capabilities stop waiting.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::agent::AgentFactory;
use super::def::AgentDef;
use super::instance::{AgentInstance, InstanceConfig, TypeConfig};
use super::presence::{Directory, Presence};
use super::protocol::{Kill, Shutdown};
use crate::journal::Recorder;
use crate::shards::Shards;
use crate::supervision::{
    ChildHandle, ChildLink, ChildSpec, Restart, Supervisor, SupervisorHandle,
};

/// What every instance of every agent type is started with.
#[derive(Debug, Clone)]
pub struct GroupContext {
    /// Where instances report their presence (the registry).
    pub directory: Directory,
    /// Journals the group supervisor's restarts and escalations.
    pub recorder: Recorder,
    /// How long past its deadline an attempt may run on before it is aborted.
    pub grace: Duration,
    /// Where instances run: instance `i` of a type on shard `i % n`.
    pub shards: Arc<Shards>,
}

/// The child spec of agent type `def`'s supervisor, whose children are its instances
/// (`name#0`, `name#1`, ...), each made afresh by the type's factory at every (re)start.
pub fn spec(def: AgentDef, cx: GroupContext) -> ChildSpec {
    let group_id: Arc<str> = Arc::from(def.name.as_str());
    ChildSpec::new(
        group_id.clone(),
        Restart::Temporary,
        def.supervision.shutdown + Duration::from_secs(1),
        move |link: ChildLink| {
            let gone = {
                let (directory, agent_type) = (cx.directory.clone(), group_id.clone());
                move |reason: String| directory.tell(Presence::Gone { agent_type, reason })
            };
            let mut sup = Supervisor::new(group_id.clone(), def.supervision.clone())
                .with_recorder(cx.recorder.clone())
                .with_parent(link)
                .on_escalate(gone);
            let ty = Arc::new(TypeConfig {
                agent_type: group_id.clone(),
                capabilities: def
                    .capabilities
                    .iter()
                    .map(|c| Arc::from(c.name.as_str()))
                    .collect(),
                workspaces: def
                    .capabilities
                    .iter()
                    .filter_map(|c| Some((Arc::from(c.name.as_str()), c.workspace.clone()?)))
                    .collect(),
                concurrency: def.concurrency.max(1),
                mailbox: def.mailbox,
                grace: cx.grace,
                liveness: def.liveness,
                layer: def.layer.clone(),
            });
            let launch = Arc::new(Launch {
                ty,
                factory: def.factory.clone(),
                directory: cx.directory.clone(),
                shards: cx.shards.clone(),
            });
            let ids = def.instance_ids();
            sup.reserve_children(ids.len());
            for (i, id) in ids.into_iter().enumerate() {
                let id: Arc<str> = Arc::from(id.as_str());
                let shard = cx.shards.for_instance(i);
                let launch = launch.clone();
                sup = sup.child(ChildSpec::new(
                    id.clone(),
                    def.restart,
                    def.supervision.shutdown,
                    move |link: ChildLink| Ok(launch.start(&id, shard, link)),
                ));
            }
            let addr = sup.start();
            Ok(Box::new(SupervisorHandle(addr)) as Box<dyn ChildHandle>)
        },
    )
}

/// What every instance of one agent type is launched with, shared by all of them (one
/// allocation per type, not per instance: a type may have a million replicas).
struct Launch {
    ty: Arc<TypeConfig>,
    factory: Arc<dyn AgentFactory>,
    directory: Directory,
    shards: Arc<Shards>,
}

impl Launch {
    /// Starts generation `link.generation()` of instance `id` on `shard`, its agent made
    /// afresh by the type's factory (on the shard's own thread: an agent need not be
    /// `Send`).
    fn start(&self, id: &Arc<str>, shard: usize, link: ChildLink) -> Box<dyn ChildHandle> {
        let generation = link.generation();
        let cfg = InstanceConfig {
            id: id.clone(),
            generation,
            shard,
            of: self.ty.clone(),
        };
        let addr = if shard == 0 {
            let agent = self.factory.create(id);
            AgentInstance::launch(cfg, agent, self.directory.clone(), link)
        } else {
            AgentInstance::launch_in(
                self.shards.arbiter(shard),
                cfg,
                self.factory.clone(),
                self.directory.clone(),
                link,
            )
        };
        Box::new(InstanceChild {
            addr,
            id: id.clone(),
            generation,
            directory: self.directory.clone(),
        })
    }
}

/// What the group supervisor holds of one running instance.
struct InstanceChild {
    addr: Addr<AgentInstance>,
    id: Arc<str>,
    generation: u64,
    directory: Directory,
}

impl ChildHandle for InstanceChild {
    fn shutdown(&mut self) {
        self.addr.do_send(Shutdown);
    }

    fn kill(&mut self, reason: &str) {
        self.addr.do_send(Kill(reason.into()));
    }

    fn removed(&mut self, reason: &str) {
        self.directory.tell(Presence::Down {
            id: self.id.clone(),
            generation: self.generation,
            reason: format!("not restarted after exit ({reason})"),
        });
    }
}
