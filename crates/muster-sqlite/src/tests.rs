//! The crate's own tests, for what only its private SQL shows: which index each hot
//! statement reads through, and what opening a file to write does to its schema. The
//! behaviours a user sees are proven by the system tests (`tests/it/journal_*.rs`).

mod commits;
mod query_plans;
mod schema;
