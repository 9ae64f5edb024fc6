//! The task handle: what a submitter holds of a task, its id and its outcome to come.

use tokio::sync::oneshot;
use uuid::Uuid;

use super::record::{Escalation, TaskRecord, TaskStatus};

/// A submitted task: its id and its outcome to come.
///
/// # Example
/// ```no_run
/// # async fn demo(muster: muster_core::Muster) -> Result<(), Box<dyn std::error::Error>> {
/// use muster_core::Task;
/// use serde_json::json;
///
/// let handle = muster.submit(Task::new("echo", json!({"text": "hi"}))).await?;
/// println!("submitted {}", handle.id());
/// let outcome = handle.outcome().await;
/// assert!(outcome.is_completed());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TaskHandle {
    pub(super) id: Uuid,
    pub(super) rx: oneshot::Receiver<TaskRecord>,
    pub(super) fallback: TaskRecord,
}

impl TaskHandle {
    /// The task id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Waits for the task's terminal state. If the owner itself was lost (a bug), the
    /// record says so as an escalation instead of hanging.
    pub async fn outcome(self) -> TaskRecord {
        match self.rx.await {
            Ok(o) => o,
            Err(_) => {
                let mut r = self.fallback;
                r.status = TaskStatus::Escalated;
                r.escalation = Some(Escalation {
                    to: "dead_letter".into(),
                    reason: "the task's owner was lost".into(),
                });
                r
            }
        }
    }
}
