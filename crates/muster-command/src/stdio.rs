//! Stdio mode: one long-lived process per agent instance, speaking JSON lines both ways.
//! This module owns that process's pipes: it writes task and cancel lines, decodes each
//! stdout line, demultiplexes the answers to the tasks in flight, and settles every pending
//! task (and tells the link, once) when the process goes away.
//!
//! Split by concern: [`wire`] is the protocol's bytes (encoding the lines muster writes,
//! splitting and decoding the lines it reads; no side effects), [`driver`] the process and
//! the tasks in flight. The tests sit apart (`stdio/tests.rs`, `stdio/fuzz.rs`).

mod driver;
pub(crate) mod wire;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

pub(super) use driver::Stdio;
