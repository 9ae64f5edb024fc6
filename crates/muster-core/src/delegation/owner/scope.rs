//! The task's write scope: taken from the scope table before the first lease, freed at the
//! task's end (two tasks never write the same thing at once).

use super::super::protocol::ReleaseScope;
use super::super::task::OnConflict;
use super::phase::Phase;
use super::{Cx, TaskOwner};

impl TaskOwner {
    /// Takes the task's scope, if it declares one, then leases. A task without a scope
    /// goes straight to its lease (no round trip to the scope table).
    pub(super) fn acquire_then_lease(&mut self, cx: &mut dyn Cx) {
        let Some(scope) = self.task.scope.clone().filter(|s| !s.is_empty()) else {
            self.try_lease(cx);
            return;
        };
        self.scope_asked = true;
        self.enter(Phase::AwaitingScope, cx);
        let fail = self.task.on_conflict == OnConflict::Fail;
        cx.ask_scope(self.record.id, scope, fail, self.deadline);
    }

    pub(super) fn release_scope(&mut self) {
        if std::mem::take(&mut self.scope_asked)
            && let Some(t) = self.owners.scopes.get()
        {
            t.do_send(ReleaseScope {
                task: self.record.id,
            });
        }
    }
}
