//! An agent type's group: the supervisor of its instances, started as one child of the
//! runtime's `agents` supervisor. An agent type past its restart intensity drops out
//! (the group is `temporary`) rather than being restarted whole, and the registry is told
//! so ([`Presence::Gone`]): owners waiting for its capabilities stop waiting.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::def::AgentDef;
use super::instance::{AgentInstance, InstanceConfig};
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
            let caps: Vec<Arc<str>> = def
                .capabilities
                .iter()
                .map(|c| Arc::from(c.name.as_str()))
                .collect();
            let workspaces: Arc<Vec<(Arc<str>, String)>> = Arc::new(
                def.capabilities
                    .iter()
                    .filter_map(|c| Some((Arc::from(c.name.as_str()), c.workspace.clone()?)))
                    .collect(),
            );
            for (i, id) in def.instance_ids().into_iter().enumerate() {
                let id: Arc<str> = Arc::from(id.as_str());
                let shard = cx.shards.for_instance(i);
                let cfg = InstanceConfig {
                    id: id.clone(),
                    agent_type: group_id.clone(),
                    generation: 0,
                    capabilities: caps.clone(),
                    workspaces: workspaces.clone(),
                    concurrency: def.concurrency.max(1),
                    mailbox: def.mailbox,
                    grace: cx.grace,
                    liveness: def.liveness,
                    layer: def.layer.clone(),
                    shard,
                };
                let factory = def.factory.clone();
                let directory = cx.directory.clone();
                let shards = cx.shards.clone();
                sup = sup.child(ChildSpec::new(
                    id.clone(),
                    def.restart,
                    def.supervision.shutdown,
                    move |link: ChildLink| {
                        let mut cfg = cfg.clone();
                        cfg.generation = link.generation();
                        let generation = cfg.generation;
                        let addr = if shard == 0 {
                            let agent = factory.create(&id);
                            AgentInstance::launch(cfg, agent, directory.clone(), link)
                        } else {
                            // Made on its shard's thread: an agent need not be `Send`.
                            AgentInstance::launch_in(
                                shards.arbiter(shard),
                                cfg,
                                factory.clone(),
                                directory.clone(),
                                link,
                            )
                        };
                        Ok(Box::new(InstanceChild {
                            addr,
                            id: id.clone(),
                            generation,
                            directory: directory.clone(),
                        }) as Box<dyn ChildHandle>)
                    },
                ));
            }
            let addr = sup.start();
            Ok(Box::new(SupervisorHandle(addr)) as Box<dyn ChildHandle>)
        },
    )
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
