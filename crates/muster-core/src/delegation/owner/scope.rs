//! The task's write scope: taken from the scope table before the first lease, freed at the
//! task's end (two tasks never write the same thing at once).

use tokio::sync::oneshot;

use super::super::protocol::{AcquireScope, ReleaseScope, Wake, Woken};
use super::super::task::OnConflict;
use super::phase::Phase;
use super::{Cx, TaskOwner};

impl TaskOwner {
    /// Takes the task's scope, if it declares one, then leases. A task without a scope
    /// goes straight to its lease (no round trip to the scope table).
    pub(super) fn acquire_then_lease(&mut self, cx: &mut Cx) {
        let Some(scope) = self.task.scope.clone().filter(|s| !s.is_empty()) else {
            self.try_lease(cx);
            return;
        };
        self.scope_asked = true;
        self.enter(Phase::AwaitingScope, cx.timers);
        let (tx, rx) = oneshot::channel();
        self.owners.scope_table().do_send(AcquireScope {
            task: self.record.id,
            scope,
            fail: self.task.on_conflict == OnConflict::Fail,
            granted: tx,
        });
        let deadline = self.deadline;
        let (shard, task) = (cx.woken.clone(), self.record.id);
        actix::spawn(async move {
            let answer = match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(refused))) => Err(refused.to_string()),
                Ok(Err(_)) => Err("the scope table stopped".into()),
                Err(_) => Err("its scope stayed held by another task until the deadline".into()),
            };
            shard.do_send(Woken {
                task,
                wake: Wake::Scope(answer),
            });
        });
    }

    pub(super) fn release_scope(&mut self) {
        if std::mem::take(&mut self.scope_asked) {
            if let Some(t) = self.owners.scopes.get() {
                t.do_send(ReleaseScope {
                    task: self.record.id,
                });
            }
        }
    }
}
