//! The cast: agent types declared in files (`actors/*.toml`), loaded into [`muster_core::AgentDef`]s.
//!
//! Owns manifest parsing and checking. A manifest is checked against
//! `schemas/manifest.schema.json` (when the schema store has it), then deserialized with the
//! `config` crate so environment variables can override any field:
//! `MUSTER_<AGENT>__<FIELD>` (agent name upper-cased, `-` as `_`; nested fields joined with
//! `__`), e.g. `MUSTER_TESTER__REPLICAS=3` or `MUSTER_TESTER__BACKEND__PROGRAM=python3.12`.
//! A variable of that shape whose agent the cast lacks is reported by
//! [`unknown_overrides`] (with the closest agent name) instead of silently ignored.
//! Every manifest is loaded and checked before any agent is registered, so one bad file
//! leaves nothing half-registered. An override must have its field's type, and counts are
//! bounded ([`MAX_REPLICAS`], [`MAX_CONCURRENCY`], [`MAX_MAILBOX`], [`MAX_CAST_INSTANCES`]).
//! It does not start anything: the runtime does.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod a2a;
pub mod builtins;
pub mod manifest;
mod mcp;

pub use manifest::{
    BackendError, BackendSpec, CastError, MAX_CAST_INSTANCES, MAX_CONCURRENCY, MAX_MAILBOX,
    MAX_REPLICAS, Manifest, ManifestError, SimBackend, UnknownOverride, load_cast,
    unknown_overrides,
};
