//! The runtime's shards: one actix arbiter (a thread with its own event loop) per core, so
//! that a many-core machine runs a runtime on every core.
//!
//! Shard 0 is the arbiter the runtime was started on; shards 1.. are arbiters it starts.
//! Work is placed, not balanced after the fact: agent instance `i` of a type lives on
//! shard `i % n`, a task's owner lives on the shard of the thread that submitted it (a
//! thread that is no shard's gets the shards in turn), and a pick prefers an instance on
//! the owner's own shard, so a task stays on one thread from lease to result where it can.
//! One shard (the default of an embedded runtime, and what the simulator uses) is the
//! single-threaded, deterministic runtime.
//!
//! # Example
//! ```
//! # actix::System::new().block_on(async {
//! let shards = muster_core::shards::Shards::start(2).unwrap();
//! assert_eq!(shards.len(), 2);
//! assert_eq!(shards.here(), Some(0)); // this thread is shard 0
//! shards.stop();
//! # });
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::ThreadId;
use std::time::Duration;

use actix_rt::{Arbiter, ArbiterHandle};

/// How many shards a runtime told to use every core gets: the cores this process may use.
pub fn available() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The most shards a runtime runs (a bound on threads for a mistyped setting).
pub const MAX_SHARDS: usize = 256;

/// Why the shards did not start.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// Not called on an actix arbiter.
    #[error("shards start on an actix arbiter (inside `actix::System::block_on`)")]
    NoArbiter,
    /// The count is out of range.
    #[error("shards must be between 1 and {MAX_SHARDS}, got {0}")]
    Count(usize),
    /// A thread did not start.
    #[error("cannot start shard {shard}: {reason}")]
    Thread {
        /// Which shard.
        shard: usize,
        /// What the OS said.
        reason: String,
    },
}

/// The arbiters of one runtime, in shard order.
pub struct Shards {
    handles: Vec<ArbiterHandle>,
    threads: Vec<ThreadId>,
    /// The arbiters this runtime started (shards 1..), stopped by [`Shards::stop`].
    started: parking_lot::Mutex<Vec<Arbiter>>,
    /// The next shard for a submitter that is no shard's thread.
    turn: AtomicUsize,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards")
            .field("len", &self.handles.len())
            .finish()
    }
}

impl Shards {
    /// `n` shards: the current arbiter as shard 0 and `n - 1` new ones. Returns once every
    /// new shard's thread runs.
    pub fn start(n: usize) -> Result<Shards, ShardError> {
        if !(1..=MAX_SHARDS).contains(&n) {
            return Err(ShardError::Count(n));
        }
        let here = Arbiter::try_current().ok_or(ShardError::NoArbiter)?;
        let mut handles = vec![here];
        let mut threads = vec![std::thread::current().id()];
        let mut started = Vec::with_capacity(n - 1);
        for shard in 1..n {
            let fail = |reason: String| ShardError::Thread { shard, reason };
            let arbiter = Arbiter::try_new().map_err(|e| fail(e.to_string()))?;
            let (tx, rx) = std::sync::mpsc::channel();
            arbiter.spawn_fn(move || {
                let _ = tx.send(std::thread::current().id());
            });
            let id = rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|e| fail(format!("its thread did not report: {e}")))?;
            handles.push(arbiter.handle());
            threads.push(id);
            started.push(arbiter);
        }
        Ok(Shards {
            handles,
            threads,
            started: parking_lot::Mutex::new(started),
            turn: AtomicUsize::new(0),
        })
    }

    /// How many shards there are (at least one).
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: a runtime has at least one shard.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The shard whose thread this is, if any.
    pub fn here(&self) -> Option<usize> {
        if self.threads.len() == 1 {
            return (std::thread::current().id() == self.threads[0]).then_some(0);
        }
        let me = std::thread::current().id();
        self.threads.iter().position(|t| *t == me)
    }

    /// The shard a task submitted from this thread is owned on: this thread's, or for a
    /// thread that is no shard's, the shards in turn.
    pub fn for_submitter(&self) -> usize {
        match self.here() {
            Some(s) => s,
            None if self.handles.len() == 1 => 0,
            None => self.turn.fetch_add(1, Ordering::Relaxed) % self.handles.len(),
        }
    }

    /// The shard agent instance number `i` (of its type) lives on.
    pub fn for_instance(&self, i: usize) -> usize {
        i % self.handles.len()
    }

    /// The arbiter of `shard` (taken modulo the count).
    pub fn arbiter(&self, shard: usize) -> &ArbiterHandle {
        &self.handles[shard % self.handles.len()]
    }

    /// Stops the arbiters this runtime started (shard 0 is the caller's and stays).
    /// Idempotent.
    pub fn stop(&self) {
        for a in self.started.lock().drain(..) {
            a.stop();
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_placed_by_thread_and_instance_number_and_outsiders_take_turns() {
        actix::System::new().block_on(async {
            let s = Shards::start(3).expect("three shards");
            assert_eq!(s.len(), 3);
            assert_eq!(s.here(), Some(0));
            assert_eq!(s.for_submitter(), 0);
            assert_eq!(
                (0..5).map(|i| s.for_instance(i)).collect::<Vec<_>>(),
                [0, 1, 2, 0, 1]
            );
            // A thread of shard 2 submits on shard 2.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let s = std::sync::Arc::new(s);
            let s2 = s.clone();
            s.arbiter(2).spawn_fn(move || {
                let _ = tx.send((s2.here(), s2.for_submitter()));
            });
            assert_eq!(rx.await.expect("shard 2 answers"), (Some(2), 2));
            // A thread that is no shard's takes the shards in turn.
            let s3 = s.clone();
            let turns =
                std::thread::spawn(move || (0..4).map(|_| s3.for_submitter()).collect::<Vec<_>>())
                    .join()
                    .expect("thread");
            assert_eq!(turns, [0, 1, 2, 0]);
            s.stop();
        });
    }

    #[test]
    fn a_count_out_of_range_is_refused_and_shards_need_an_arbiter() {
        actix::System::new().block_on(async {
            assert!(matches!(Shards::start(0), Err(ShardError::Count(0))));
            assert!(matches!(
                Shards::start(MAX_SHARDS + 1),
                Err(ShardError::Count(_))
            ));
        });
        // A fresh thread: no arbiter (a system once run on a thread leaves its arbiter set).
        let outside = std::thread::spawn(|| matches!(Shards::start(1), Err(ShardError::NoArbiter)))
            .join()
            .expect("thread");
        assert!(outside);
    }
}
