//! Telemetry: Prometheus metrics and OpenTelemetry traces of a runtime, as a library.
//!
//! Owns the translation of the journal's records (and of the gauges the [`Muster`] handle
//! reads without a round trip) into metrics ([`Metrics`], rendered as Prometheus text for
//! a `/metrics` endpoint) and spans ([`Traces`], exported over OTLP when the OpenTelemetry
//! environment asks for it), and the [`Follower`] that reads a journal in bounded batches
//! and feeds both. Being driven by the journal (G5), it leaves the runtime's hot path
//! untouched, and a runtime that resumed a journal tells the same story as
//! `muster inspect`. It must not act on what it observes, nor write to the journal; every
//! label set, map and attribute it keeps is bounded.
//!
//! ```text
//!  journal ── read_batch(after, n) ──► Follower ──► Metrics.observe ──► render(&Muster) ─► GET /metrics
//!                                          └──────► Traces.observe ──► span processor ─► OTLP/HTTP
//! ```
//!
//! # Example
//! ```
//! # actix::System::new().block_on(async {
//! use std::sync::Arc;
//! use muster_telemetry::{Follower, Metrics, Traces, DEFAULT_EVERY};
//!
//! let muster = muster_core::Muster::builder().start().await.unwrap();
//! let metrics = Arc::new(Metrics::default());
//! let mut follower = Follower::new(muster.journal()).metrics(metrics.clone());
//! if let Some(traces) = Traces::from_env().unwrap() {
//!     follower = follower.traces(traces); // OTEL_EXPORTER_OTLP_ENDPOINT is set
//! }
//! let following = follower.spawn(DEFAULT_EVERY);
//! // ... serve `metrics.render(&muster)` with `Metrics::CONTENT_TYPE` at GET /metrics ...
//! following.stop().await.unwrap();
//! # muster.shutdown().await;
//! # });
//! ```
//!
//! [`Muster`]: muster_core::runtime::Muster
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod bounded;
pub mod follow;
pub mod history;
pub mod metrics;
pub mod traces;

pub use bounded::{LabelCap, OTHER};
pub use follow::{DEFAULT_BATCH, DEFAULT_EVERY, Follower, Following, MAX_BATCH};
pub use history::{History, HistoryDoc};
pub use metrics::{AdmissionKind, LEASE_SECONDS_BOUNDS, Metrics, MetricsConfig};
pub use traces::{DEFAULT_OPEN_SPANS, Traces};

/// Why telemetry could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An OpenTelemetry environment variable has a value this build cannot honour.
    #[error("{var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with its value.
        message: String,
    },
    /// The span exporter failed to flush or shut down.
    #[error("exporting traces: {0}")]
    Export(String),
    /// The following task failed (panicked or was cancelled).
    #[error("following the journal: {0}")]
    Follow(String),
}
