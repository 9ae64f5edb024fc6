//! Helpers shared by the system tests: a paused-clock actix system and bounded waits
//! (`common`), a cast in a temporary directory (`cast`), a `muster serve` node and its HTTP client (`node`), a nats-server and worker
//! processes (`cluster`), and an OTLP collector (`telemetry`).

pub mod cast;
pub mod cluster;
pub mod common;
pub mod node;
pub mod telemetry;
