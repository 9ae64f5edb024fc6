//! The durable journal: one SQLite file in WAL mode, written by one thread in group commits.
//!
//! Owns the on-disk format (tables `events`, `runs` and `meta`) and the writer thread. It upholds
//! G5 after the process is gone (every event is a row that `muster inspect` and `sqlite3`
//! can query) and, with [`Durability::Sync`], that an acknowledged result is on disk. It
//! must not block the hot path: [`SqliteJournal::append`] assigns the sequence number and
//! queues the record in the writer's inbox, waking the writer only when it has something
//! to decide (a batch opens, someone waits for a record, the batch is full); the writer
//! takes whatever is queued and inserts it in one transaction.
//!
//! ```text
//!  actors ── append(seq = counter+1) ──► inbox ──► writer thread ── BEGIN; INSERT ×N; COMMIT
//!                                                          │
//!  wait_durable(seq) / flush() ◄── durable watermark ◄─────┘  (highest gap-free committed seq)
//! ```
//!
//! Only a waiter (`wait_durable`, `flush`, `want`) makes the writer commit before its
//! commit window ends; a read never does. With [`Durability::Relaxed`], a waiter commits
//! a short queue on its own thread when nothing else commits (no thread wake-up on its
//! path); WAL checkpoints run beside the commits, on a thread of their own, and the
//! writer thread copies the rest of the log between two commits once it reaches its
//! bound. A read of records waits for the group commit
//! that takes those appended before it; the run index answers from what is committed.
//!
//! Opening never modifies a file that is not a muster journal: the file's header and its
//! tables are checked read-only before anything is created.
//!
//! The crate is split by concern: `file` (probe, lock, create, recover: the on-disk
//! format), `migrate` (older versions, in place), `writer` (the writer thread and the durable watermark), `checkpoint` (copying the WAL into the file beside the commits), `journal` (the
//! [`SqliteJournal`] handle), `read` (reading records back), `runs` (the index of
//! workflow runs and the reads it answers), `compact` (retention and archives) and `gate` (`muster approve`'s compare-and-set
//! decision).
//!
//! The journal is indexed by run: every record's `run` column names the run (or, for a
//! task outside any run, the correlation) whose story it is part of, and the `runs` table
//! holds one row per run, written in the same transaction as its records. Ids in `events`
//! are 16-byte blobs and only `task` and `run` are indexed (format 3), so a record costs
//! the writer its row and two small index entries. A run list, a
//! run's detail and a gate decision cost the page or the run, not the history. A file of
//! an older version is migrated in place when it is opened to write.

#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod checkpoint;
mod compact;
mod file;
mod gate;
mod journal;
mod migrate;
mod read;
mod runs;
mod writer;

#[cfg(test)]
mod tests;

pub use compact::{CompactError, Compacted, Compaction, compact, read_archive};
pub use file::{FORMAT, VERSION};
pub use gate::{DecideError, decide_gate};
pub use journal::{Durability, SqliteJournal};
pub use read::read_journal;
pub use runs::{find_runs, read_records_of};
