//! The checkpointer: a thread with a connection of its own that copies the WAL into the
//! database file each time the log has grown by a bound, beside the commits, so that no
//! commit pays for the copy. SQLite would otherwise run the same (passive) checkpoint
//! inside the commit that crossed the bound, on whichever thread made it, holding up the
//! records in it and everyone waiting for them.
//!
//! It must not write records: it only checkpoints. A passive checkpoint copies what no
//! reader still needs and never blocks the writer. It cannot catch up with commits made
//! while it copies, so the log would not start over by it alone: the writer thread copies
//! the small rest between two commits once the log reaches its bound (`writer.rs`).

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;

/// What the checkpointer is asked to do.
#[derive(Debug, Default)]
struct Asked {
    /// The log has grown by the bound since the last checkpoint began.
    checkpoint: bool,
    /// The journal is closing.
    stop: bool,
    /// Checkpoints run so far.
    done: u64,
}

/// The handle of the checkpointer thread: ask it to checkpoint, or to stop.
#[derive(Debug, Default)]
pub(crate) struct Checkpointer {
    asked: Mutex<Asked>,
    wake: Condvar,
}

impl Checkpointer {
    /// Asks for a checkpoint (nothing more when one is asked for already).
    pub(crate) fn ask(&self) {
        let mut a = self.asked.lock();
        if !a.checkpoint {
            a.checkpoint = true;
            drop(a);
            self.wake.notify_one();
        }
    }

    /// Asks the thread to stop (after the checkpoint it is running, if any).
    pub(crate) fn stop(&self) {
        self.asked.lock().stop = true;
        self.wake.notify_one();
    }

    /// Checkpoints run so far.
    #[cfg(test)]
    pub(crate) fn done(&self) -> u64 {
        self.asked.lock().done
    }
}

/// Opens a connection to `path` that waits up to `busy_wait` for another connection's
/// lock, and starts the checkpointer on it.
pub(crate) fn start(
    path: &Path,
    busy_wait: Duration,
) -> std::io::Result<(Arc<Checkpointer>, JoinHandle<()>)> {
    let conn = Connection::open(path).map_err(std::io::Error::other)?;
    conn.busy_timeout(busy_wait)
        .map_err(std::io::Error::other)?;
    let checkpointer = Arc::new(Checkpointer::default());
    let handle = checkpointer.clone();
    let thread = std::thread::Builder::new()
        .name("muster-checkpoint".into())
        .spawn(move || run(&conn, &handle))?;
    Ok((checkpointer, thread))
}

fn run(conn: &Connection, c: &Checkpointer) {
    loop {
        let mut a = c.asked.lock();
        while !a.checkpoint && !a.stop {
            c.wake.wait(&mut a);
        }
        if a.stop {
            return;
        }
        a.checkpoint = false;
        drop(a);
        // Passive: copies what it can without waiting for readers or the writer.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "journal checkpoint failed; the next one retries");
        }
        c.asked.lock().done += 1;
    }
}
