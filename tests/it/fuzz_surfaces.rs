//! Fuzz targets for the surfaces a node exposes to other programs: the HTTP API (any
//! method, path, query, token, `Last-Event-ID` and body, through the node's router), the
//! token file, and the cluster's NATS wire messages. Run by bolero: a short random run in
//! `cargo test`, longer with `BOLERO_RANDOM_ITERATIONS` (docs/fuzzing.md). The targets are
//! in `tests/fuzzing/http.rs` and `tests/fuzzing/wire.rs`, shared with `fuzz/`.

use crate::fuzzing;

use fuzzing::{Run, http, wire};

#[test]
fn http_api_requests() {
    let run = Run::new("http_api_requests");
    bolero::check!().for_each(|data: &[u8]| run.one(data, http::request));
    for line in http::tally_lines() {
        eprintln!("http_api_requests: {line}");
    }
}

#[test]
fn token_file_reading() {
    let run = Run::new("token_file_reading");
    bolero::check!().for_each(|data: &[u8]| run.one(data, http::token_file));
}

#[test]
fn cluster_wire_messages() {
    let run = Run::new("cluster_wire_messages");
    bolero::check!().for_each(|data: &[u8]| run.one(data, wire::messages));
}
